"""lakeops: the MLOps platform on a Delta lake (datasets, runs, registry, serving, monitoring).

Every ``core`` function takes the ``Lake`` it works on (and the ``Settings`` it reads config from)
as parameters; none reads the environment or ``lakeops.toml`` itself. The edges resolve them once:
the CLI (``--lake``/``--config``), the scheduler (``jobs/``), the UI (``pages/_common.py``), the
serving factory (``core.serving.app.create_app``), and for notebooks and scripts ``connect``::

    import core
    from core import datasets

    lake, settings = core.connect()                       # LAKEOPS_* and lakeops.toml
    frame = datasets.load("churn", lake=lake)
    datasets.ingest("churn", frame.head(10), lake=lake, settings=settings)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Settings
    from core.lake import Lake

__all__ = ["__version__", "connect"]

__version__ = "0.1.0"

_lakes: dict[tuple[str, tuple[tuple[str, str], ...]], Lake] = {}
_lakes_lock = threading.Lock()


def connect(
    lake_uri: str | None = None, *, config: str | Path | None = None, **overrides: Any
) -> tuple[Lake, Settings]:
    """Resolve the settings (environment + ``lakeops.toml``) and open their lake: the notebook's edge.

    Args:
        lake_uri: a lake other than the configured one (like ``--lake``).
        config: a TOML file other than ``$LAKEOPS_CONFIG`` / ``./lakeops.toml`` (like ``--config``).
        **overrides: other ``Settings`` fields (``actor="ana"``).

    Returns:
        ``(lake, settings)``; the lake handle is opened once per process per lake (an ``s3://``
        root's write probe is not repeated).

    Raises:
        ConfigError: a bad setting (named).
    """
    from core.config import load_settings
    from core.lake import Lake
    from core.lake._common import _uri_key

    if lake_uri is not None:
        overrides["lake_uri"] = lake_uri
    settings = load_settings(config_path=config, **overrides)
    key = (_uri_key(settings.lake_uri), tuple(sorted(settings.storage_options.items())))
    with _lakes_lock:
        lake = _lakes.get(key)
        if lake is None:
            lake = _lakes[key] = Lake.from_settings(settings)
    return lake, settings
