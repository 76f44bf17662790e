"""Alerts: ``alerts`` rows de-duplicated by fingerprint while a condition persists, resolved rows, webhook POSTs."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from core.config import Settings, load_settings
from core.ids import new_id, utcnow
from core.lake import Lake, resolve
from core.monitoring.checks import json_default
from core.monitoring.config import monitor_config

__all__ = ["Alert", "alert_history", "alerts", "raise_alert", "resolve_alert", "supersede_alerts"]

_log = logging.getLogger("lakeops.monitoring")


@dataclass(frozen=True)
class Alert:
    """One ``alerts`` row."""

    alert_id: str
    kind: str
    severity: str
    model: str | None
    message: str
    evidence: dict[str, Any]
    fingerprint: str
    status: str
    at: datetime
    model_version: int | None = None


def alert_history(model: str | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """Every ``alerts`` row (of one model or all), oldest first."""
    lake = resolve(lake)
    frame = lake.read_or_empty("alerts")
    if model is not None:
        frame = frame.filter(pl.col("model") == model)
    return frame.sort("at")


def alerts(model: str | None = None, *, status: str | None = "open", lake: Lake | None = None) -> pl.DataFrame:
    """Current state per fingerprint (its latest row), filtered by ``status`` (None: all), newest first.

    The ``opened_at`` column is when the current episode began.
    """
    frame = alert_history(model, lake=lake)
    latest = frame.group_by("fingerprint").agg(pl.all().sort_by("at").last())
    if status is not None:
        latest = latest.filter(pl.col("status") == status)
    if "model_version" not in latest.columns:  # a table of an earlier release
        latest = latest.with_columns(pl.lit(None, dtype=pl.Int64).alias("model_version"))
    return latest.rename({"at": "opened_at"}).sort("opened_at", descending=True).select(
        "alert_id", "kind", "severity", "model", "model_version", "message", "payload_json", "fingerprint", "status",
        "opened_at",
    )


def _current(fingerprint: str, lake: Lake) -> str | None:
    return _latest(fingerprint, lake).get("status")


def _latest(fingerprint: str, lake: Lake) -> dict[str, Any]:
    """The latest row of a fingerprint (``status``, ``model_version``), or {} when there is none."""
    frame = lake.read_or_empty("alerts").filter(pl.col("fingerprint") == fingerprint)
    if frame.height == 0:
        return {}
    row = frame.sort("at").row(-1, named=True)
    return {"status": row["status"], "model_version": row.get("model_version")}


def _write_alert(lake: Lake, alert: Alert, settings: Settings | None) -> None:
    lake.append("alerts", [{
        "alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity, "model": alert.model,
        "message": alert.message, "payload_json": json.dumps(alert.evidence, default=json_default),
        "fingerprint": alert.fingerprint, "status": alert.status, "at": alert.at, "model_version": alert.model_version,
    }], metadata={"model": alert.model or "", "alert": alert.fingerprint, "status": alert.status},
        merge_schema=True)  # older alerts tables gain model_version
    cfg = monitor_config(alert.model or "_", settings) if alert.model else None
    url = cfg.webhook_url if cfg else (settings or load_settings()).section("alerts").get("webhook_url")
    if url:
        _post(url, alert, cfg.webhook_timeout_s if cfg else 5.0)


def _post(url: str, alert: Alert, timeout: float) -> bool:
    """POST the alert as JSON; a failing webhook is logged, never raised (the row is the record)."""
    import httpx

    body = {"alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity, "model": alert.model,
            "model_version": alert.model_version,
            "message": alert.message, "evidence": alert.evidence, "fingerprint": alert.fingerprint,
            "status": alert.status, "at": alert.at.isoformat()}
    try:
        resp = httpx.post(url, content=json.dumps(body, default=json_default), headers={"content-type": "application/json"}, timeout=timeout)
        resp.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        _log.warning("alert webhook %s failed: %s", url, exc)
        return False


def raise_alert(
    kind: str, model: str | None, *, message: str, evidence: Mapping[str, Any], severity: str = "warning",
    fingerprint: str | None = None, lake: Lake | None = None, settings: Settings | None = None,
    model_version: int | None = None,
) -> Alert | None:
    """Open an alert unless the same condition (fingerprint) is already open; return the new row or None.

    An open alert raised for another model version (an earlier champion) is resolved as
    superseded first, and a new episode opens for ``model_version``.
    """
    lake = resolve(lake)
    fp = fingerprint or f"{kind}:{model}"
    current = _latest(fp, lake)
    if current.get("status") == "open":
        old = current.get("model_version")
        if model_version is None or old is None or int(old) == int(model_version):
            return None
        _write_alert(lake, Alert(new_id(), kind, "info", model, f"superseded: model {model!r} v{model_version} is the "
                                 f"champion now (this alert was raised for v{old})", {"superseded_by": model_version},
                                 fp, "resolved", utcnow(), int(old)), settings)
    alert = Alert(new_id(), kind, severity, model, message, dict(evidence), fp, "open", utcnow(), model_version)
    _write_alert(lake, alert, settings)
    return alert


def supersede_alerts(model: str, version: int, *, reason: str, lake: Lake | None = None,
                     settings: Settings | None = None) -> list[Alert]:
    """Resolve the open alerts of ``model`` raised for a version other than ``version`` (the new champion).

    Called when the champion changes: conditions found on the old champion say nothing about the
    new one, whose checks start afresh. Alerts without a version (an earlier release) are
    resolved too, except those not about a model version at all (``prediction_log``).

    Returns:
        The ``resolved`` rows written.
    """
    lake = resolve(lake)
    out = []
    open_ = alerts(model, status="open", lake=lake)
    for row in open_.iter_rows(named=True):
        if row["kind"] == "prediction_log" or row["model_version"] == version:
            continue
        was = f"v{row['model_version']}" if row["model_version"] is not None else "an earlier champion"
        alert = Alert(new_id(), row["kind"], "info", model, f"superseded by v{version}: {reason} (raised for {was})",
                      {"superseded_by": version, "reason": reason}, row["fingerprint"], "resolved", utcnow(),
                      row["model_version"])
        _write_alert(lake, alert, settings)
        out.append(alert)
    return out


def resolve_alert(
    kind: str, model: str | None, *, message: str, evidence: Mapping[str, Any] | None = None,
    fingerprint: str | None = None, lake: Lake | None = None, settings: Settings | None = None,
) -> Alert | None:
    """Write a ``resolved`` row when the condition's alert is open; return it, or None if nothing was open."""
    lake = resolve(lake)
    fp = fingerprint or f"{kind}:{model}"
    if _current(fp, lake) != "open":
        return None
    alert = Alert(new_id(), kind, "info", model, message, dict(evidence or {}), fp, "resolved", utcnow(),
                  _latest(fp, lake).get("model_version"))
    _write_alert(lake, alert, settings)
    return alert
