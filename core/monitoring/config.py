"""Monitoring settings of a model (``[models.<name>.monitoring]``, drift policy, ``[alerts]``) and its champion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self, TypeVar

from core import drift
from core.config import Settings
from core.errors import ConfigError, ModelVersionNotFoundError
from core.lake import Lake
from core.sections import parse_section, section_keys

__all__ = ["MonitorConfig", "champion", "monitor_config"]

C = TypeVar("C", bound="MonitorConfig")


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

    @classmethod
    def from_sections(cls, monitoring: Mapping[str, Any], *, drift: Sequence[Mapping[str, Any]] = (),
                      alerts: Mapping[str, Any] | None = None, where: str = "[monitoring]") -> Self:
        """Build the settings from a ``[models.<m>.monitoring]`` section, the drift sections (later
        wins) and ``[alerts]``; a key a section lacks keeps the field default of ``cls``.

        Raises:
            ConfigError: an unknown key or a bad value, named.
        """
        return _config_from(cls, monitoring, drift, alerts or {}, where)


_REFERENCE_ALIASES = {"all": "training"}  # "all" was the name of the training distribution before it was the default
_NOT_MONITORING = ("policy", "webhook_url", "webhook_timeout_s")  # from [drift] and [alerts], not this section
_ALERT_KEYS = {"webhook_url": "webhook_url", "timeout_s": "webhook_timeout_s"}  # [alerts] key -> field


def _monitoring_values(mon: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The section's keys as ``MonitorConfig`` fields (only those it has)."""
    known = section_keys(MonitorConfig) - set(_NOT_MONITORING)
    bad = sorted(set(mon) - known)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    values = dict(mon)
    if values.get("window_hours") and "window_rows" not in values:
        values["window_rows"] = None  # hours alone: the window is the last N hours, however many rows
    if "window_hours" in values and not values["window_hours"]:
        values["window_hours"] = None
    if isinstance(values.get("reference"), str):
        values["reference"] = _REFERENCE_ALIASES.get(values["reference"], values["reference"])
    return values


def _config_from(cls: type[C], mon: Mapping[str, Any], drift_sections: Sequence[Mapping[str, Any]],
                 alerts: Mapping[str, Any], where: str) -> C:
    values = _monitoring_values(mon, where)
    values |= {field: alerts[key] for key, field in _ALERT_KEYS.items() if key in alerts}
    if "webhook_url" in values and not values["webhook_url"]:
        values["webhook_url"] = None
    names = {field: f"[alerts] {key}" for key, field in _ALERT_KEYS.items()}
    cfg = parse_section(cls, values, where=where, names=names)
    cfg = replace(cfg, policy=drift.DriftPolicy.from_config(*drift_sections))
    if cfg.reference not in ("holdout", "training"):
        raise ConfigError(f"{where} reference must be 'training' (or 'all') or 'holdout', got {cfg.reference!r}")
    if cfg.reference_rows < 1000:
        raise ConfigError(f"{where} reference_rows must be >= 1000, got {cfg.reference_rows}")
    if cfg.min_rows < 1 or cfg.min_labels < 1 or cfg.tolerance < 0:
        raise ConfigError(f"{where}: min_rows and min_labels must be >= 1 and tolerance >= 0")
    return cfg


def monitor_config(model: str, settings: Settings) -> MonitorConfig:
    """Read ``[models.<model>.monitoring]``, ``[drift]``, ``[models.<model>.drift]`` and ``[alerts]``.

    Raises:
        ConfigError: an unknown key or a bad value, named.
    """
    return MonitorConfig.from_sections(
        settings.section(f"models.{model}.monitoring"),
        drift=(settings.section("drift"), settings.section(f"models.{model}.drift")),
        alerts=settings.section("alerts"),
        where=f"[models.{model}.monitoring]",
    )


def champion(model: str, *, lake: Lake) -> Any:
    """Return the champion's ``core.registry.ModelVersion``.

    Raises:
        ModelNotFoundError: unknown model.
        ModelVersionNotFoundError: the model has no champion yet.
    """
    from core import registry
    registry.versions(model, lake=lake)  # unknown model -> ModelNotFoundError
    version = registry.champion_version(model, lake)
    if version is None:
        raise ModelVersionNotFoundError(
            f"model {model!r} has no champion, so there is nothing to monitor; promote a version first "
            f"('lakeops models promote {model} VERSION --reason ...')"
        )
    return registry.get_version(model, version, lake=lake)


