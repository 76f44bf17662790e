"""Monitoring settings of a model (``[models.<name>.monitoring]``, drift policy, ``[alerts]``) and its champion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import drift
from core.config import Settings, load_settings
from core.errors import ConfigError, ModelVersionNotFoundError
from core.lake import Lake, resolve

__all__ = ["MonitorConfig", "champion", "monitor_config"]


@dataclass(frozen=True)
class MonitorConfig:
    """A model's monitoring settings (see the module docstring for the TOML keys)."""

    window_rows: int | None = 5000
    window_hours: float | None = None
    min_rows: int = 200
    reference: str = "training"
    reference_rows: int = 1_000_000
    metric: str | None = None
    tolerance: float = 0.05
    min_labels: int = 200
    performance_window_hours: float = 168.0
    alert_on_score_drift: bool = True
    alert_on_multivariate_drift: bool = True
    estimate_tolerance: float | None = None
    policy: drift.DriftPolicy = field(default_factory=drift.DriftPolicy)
    webhook_url: str | None = None
    webhook_timeout_s: float = 5.0


_REFERENCE_ALIASES = {"all": "training"}  # "all" was the name of the training distribution before it was the default

_MON_KEYS = {
    "window_rows", "window_hours", "min_rows", "reference", "metric", "tolerance", "min_labels",
    "performance_window_hours", "alert_on_score_drift", "alert_on_multivariate_drift", "reference_rows",
    "estimate_tolerance",
}


def monitor_config(model: str, settings: Settings | None = None) -> MonitorConfig:
    """Read ``[models.<model>.monitoring]``, ``[drift]``, ``[models.<model>.drift]`` and ``[alerts]``.

    Raises:
        ConfigError: an unknown key or a bad value, named.
    """
    settings = settings or load_settings()
    where = f"[models.{model}.monitoring]"
    mon = settings.section(f"models.{model}.monitoring")
    bad = set(mon) - _MON_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}; known: {', '.join(sorted(_MON_KEYS))}")
    alerts_sec = settings.section("alerts")
    try:
        cfg = MonitorConfig(
            window_rows=None if mon.get("window_hours") and "window_rows" not in mon else int(mon.get("window_rows", 5000)),
            window_hours=float(mon["window_hours"]) if mon.get("window_hours") else None,
            min_rows=int(mon.get("min_rows", 200)),
            reference=_REFERENCE_ALIASES.get(str(mon.get("reference", "training")), str(mon.get("reference", "training"))),
            reference_rows=int(mon.get("reference_rows", 1_000_000)),
            metric=mon.get("metric"),
            tolerance=float(mon.get("tolerance", 0.05)),
            min_labels=int(mon.get("min_labels", 200)),
            performance_window_hours=float(mon.get("performance_window_hours", 168.0)),
            alert_on_score_drift=bool(mon.get("alert_on_score_drift", True)),
            alert_on_multivariate_drift=bool(mon.get("alert_on_multivariate_drift", True)),
            estimate_tolerance=float(mon["estimate_tolerance"]) if mon.get("estimate_tolerance") is not None else None,
            policy=drift.DriftPolicy.from_config(settings.section("drift"), settings.section(f"models.{model}.drift")),
            webhook_url=alerts_sec.get("webhook_url") or None,
            webhook_timeout_s=float(alerts_sec.get("timeout_s", 5.0)),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: invalid value ({exc})") from None
    if cfg.reference not in ("holdout", "training"):
        raise ConfigError(f"{where} reference must be 'training' (or 'all') or 'holdout', got {cfg.reference!r}")
    if cfg.reference_rows < 1000:
        raise ConfigError(f"{where} reference_rows must be >= 1000, got {cfg.reference_rows}")
    if cfg.min_rows < 1 or cfg.min_labels < 1 or cfg.tolerance < 0:
        raise ConfigError(f"{where}: min_rows and min_labels must be >= 1 and tolerance >= 0")
    return cfg


def champion(model: str, *, lake: Lake | None = None) -> Any:
    """Return the champion's ``core.registry.ModelVersion``.

    Raises:
        ModelNotFoundError: unknown model.
        ModelVersionNotFoundError: the model has no champion yet.
    """
    from core import registry

    lake = resolve(lake)
    registry.versions(model, lake=lake)  # unknown model -> ModelNotFoundError
    version = registry.champion_version(model, lake)
    if version is None:
        raise ModelVersionNotFoundError(
            f"model {model!r} has no champion, so there is nothing to monitor; promote a version first "
            f"('lakeops models promote {model} VERSION --reason ...')"
        )
    return registry.get_version(model, version, lake=lake)


