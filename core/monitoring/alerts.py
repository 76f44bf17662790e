"""Alerts: ``alerts`` rows de-duplicated by fingerprint while a condition persists, resolved rows, webhook POSTs.

People handle alerts too: ``acknowledge_alert`` (status ``acknowledged``: someone owns it; the
episode stays open, so the checks neither re-open it nor forget to resolve it, but the retrain
job no longer answers it) and ``close_alert`` (status ``resolved`` by a person; if the condition
persists, the next check opens a new episode). Both need a reason and record who, when and why
in the row's evidence under ``handled``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from core.config import Settings
from core.errors import LakeopsError, NotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake
from core.monitoring.checks import json_default
from core.monitoring.config import monitor_config

__all__ = [
    "HANDLED_KEY",
    "Alert",
    "acknowledge_alert",
    "alert_history",
    "alerts",
    "close_alert",
    "find_alert",
    "raise_alert",
    "resolve_alert",
    "supersede_alerts",
]

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


def alert_history(model: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """Every ``alerts`` row (of one model or all), oldest first."""
    frame = lake.read_or_empty("alerts")
    if model is not None:
        frame = frame.filter(pl.col("model") == model)
    return frame.sort("at")


def alerts(model: str | None = None, *, status: str | None = "open", lake: Lake) -> pl.DataFrame:
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
    """The latest row of a fingerprint (``status``, ``model_version``), or {} when there is none.

    An ``acknowledged`` episode is still open for the checks (status ``open`` here).
    """
    frame = lake.read_or_empty("alerts").filter(pl.col("fingerprint") == fingerprint)
    if frame.height == 0:
        return {}
    row = frame.sort("at").row(-1, named=True)
    status = "open" if row["status"] == "acknowledged" else row["status"]
    return {"status": status, "model_version": row.get("model_version")}


def _write_alert(lake: Lake, alert: Alert, settings: Settings) -> None:
    lake.append("alerts", [{
        "alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity, "model": alert.model,
        "message": alert.message, "payload_json": json.dumps(alert.evidence, default=json_default),
        "fingerprint": alert.fingerprint, "status": alert.status, "at": alert.at, "model_version": alert.model_version,
    }], metadata={"model": alert.model or "", "alert": alert.fingerprint, "status": alert.status},
        merge_schema=True)  # older alerts tables gain model_version
    cfg = monitor_config(alert.model or "_", settings)  # no model: [alerts] with the defaults of the rest
    if cfg.webhook_url:
        _post(cfg.webhook_url, alert, cfg.webhook_timeout_s)


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
    fingerprint: str | None = None, lake: Lake, settings: Settings,
    model_version: int | None = None,
) -> Alert | None:
    """Open an alert unless the same condition (fingerprint) is already open; return the new row or None.

    An open alert raised for another model version (an earlier champion) is resolved as
    superseded first, and a new episode opens for ``model_version``.
    """
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


def supersede_alerts(model: str, version: int, *, reason: str, lake: Lake,
                     settings: Settings) -> list[Alert]:
    """Resolve the open alerts of ``model`` raised for a version other than ``version`` (the new champion).

    Called when the champion changes: conditions found on the old champion say nothing about the
    new one, whose checks start afresh. Alerts without a version (an earlier release) are
    resolved too, except those not about a model version at all (``prediction_log``).

    Returns:
        The ``resolved`` rows written.
    """
    out = []
    open_ = alerts(model, status=None, lake=lake).filter(pl.col("status").is_in(["open", "acknowledged"]))
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
    fingerprint: str | None = None, lake: Lake, settings: Settings,
) -> Alert | None:
    """Write a ``resolved`` row when the condition's alert is open; return it, or None if nothing was open."""
    fp = fingerprint or f"{kind}:{model}"
    if _current(fp, lake) != "open":
        return None
    alert = Alert(new_id(), kind, "info", model, message, dict(evidence or {}), fp, "resolved", utcnow(),
                  _latest(fp, lake).get("model_version"))
    _write_alert(lake, alert, settings)
    return alert


HANDLED_KEY = "handled"
"""Key of the evidence entry a person's acknowledge/resolve writes: ``{action, actor, reason, at}``."""


def find_alert(alert: str, *, lake: Lake) -> dict[str, Any]:
    """Return the current (latest) row of an alert named by its fingerprint or any of its row ids.

    Raises:
        NotFoundError: no alert row has that id or fingerprint.
    """
    rows = alert_history(lake=lake)
    hit = rows.filter((pl.col("alert_id") == alert) | (pl.col("fingerprint") == alert))
    if hit.height == 0:
        raise NotFoundError(f"no alert with id or fingerprint {alert!r}; see 'lakeops alerts list --all'")
    fp = hit["fingerprint"][0]
    return rows.filter(pl.col("fingerprint") == fp).row(-1, named=True)


def _handle(alert: str, action: str, status: str, reason: str | None, actor: str | None,
            lake: Lake, settings: Settings) -> Alert:
    why = (reason or "").strip()
    if not why:
        raise LakeopsError(f"{action} of alert {alert!r} needs a reason (it goes into the alert's record)")
    row = find_alert(alert, lake=lake)
    if row["status"] not in ("open", "acknowledged"):
        raise LakeopsError(f"alert {row['fingerprint']!r} is {row['status']} since {row['at']:%Y-%m-%d %H:%M:%S} UTC; nothing to {action}")
    if status == row["status"]:
        raise LakeopsError(f"alert {row['fingerprint']!r} is already {status}")
    who = actor or settings.actor
    now = utcnow()
    evidence = json.loads(row["payload_json"] or "{}")
    evidence[HANDLED_KEY] = {"action": action, "actor": who, "reason": why, "at": now.isoformat()}
    message = row["message"] if status == "acknowledged" else f"resolved by {who}: {why} (was: {row['message']})"
    handled = Alert(new_id(), row["kind"], row["severity"], row["model"], message[:2000], evidence,
                    row["fingerprint"], status, now, row.get("model_version"))
    _write_alert(lake, handled, settings)
    return handled


def acknowledge_alert(
    alert: str, *, reason: str, actor: str | None = None, lake: Lake, settings: Settings,
) -> Alert:
    """Mark an open alert as taken by a person (status ``acknowledged``), recording who and why.

    The episode stays open for the checks (no new alert while the condition holds; it is
    resolved when it clears), but the retrain job no longer answers it.

    Args:
        alert: the alert's fingerprint (``drift:churn``) or the id of any of its rows.
        reason: why (required).
        actor: who (default: the settings' actor).
        lake: the lake.
        settings: settings (actor, webhook).

    Raises:
        NotFoundError: no such alert.
        LakeopsError: no reason, or the alert is not open.
    """
    return _handle(alert, "acknowledge", "acknowledged", reason, actor, lake, settings)


def close_alert(
    alert: str, *, reason: str, actor: str | None = None, lake: Lake, settings: Settings,
) -> Alert:
    """Resolve an open or acknowledged alert by hand, recording who and why.

    If the condition still holds, the next check opens a new episode (a new alert).

    Raises:
        NotFoundError: no such alert.
        LakeopsError: no reason, or the alert is already resolved.
    """
    return _handle(alert, "resolve", "resolved", reason, actor, lake, settings)
