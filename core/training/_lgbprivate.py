"""Every use of LightGBM's private Python API (``lightgbm.basic`` internals), fenced in one module."""

from __future__ import annotations

from lightgbm.basic import _ConfigAliases

__all__ = ["param_aliases"]


def param_aliases() -> dict[str, str]:
    """Map every LightGBM parameter name and alias to its canonical name."""
    out: dict[str, str] = {}
    for canonical, names in _ConfigAliases._get_all_param_aliases().items():
        for n in [canonical, *names]:
            out.setdefault(n, canonical)
    return out
