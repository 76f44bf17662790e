"""The built-in jobs: drift check, performance check, retrain, lake maintenance, compaction.

Each calls ``core`` flows only (``core.flows.monitor``, ``Lake.maintain``), imported when the
job runs, so the catalog loads before (and without) the monitoring flows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from core.config import Settings
from core.ids import utcnow
from core.jobruns.catalog import jobs_config, jsonable
from core.jobruns.records import history
from core.lake import Lake

__all__ = ["compact_hot", "drift_check", "maintain_lake", "pending_alerts", "performance_check", "retrain", "rollout"]


def _champions(lake: Lake) -> list[str]:
    from core.registry import list_models

    models = list_models(lake=lake)
    return sorted(models.filter(pl.col("champion").is_not_null())["model"].to_list())


def drift_check(*, lake: Lake, settings: Settings, trigger: str = "manual", **args: Any) -> dict[str, Any]:
    """Check drift of every model with a champion (``args``: window_rows, window_hours)."""
    from core.flows.monitor import check_drift_and_alert

    # the flows read the [compute] engine from the job's settings, passed to each of them
    return {"models": {m: jsonable(check_drift_and_alert(m, lake=lake, settings=settings, **args)) for m in _champions(lake)}}


def performance_check(*, lake: Lake, settings: Settings, trigger: str = "manual", **args: Any) -> dict[str, Any]:
    """Check the performance of every model with a champion (``args``: window_hours)."""
    from core.flows.monitor import check_performance_and_alert

    return {"models": {m: jsonable(check_performance_and_alert(m, lake=lake, settings=settings, **args)) for m in _champions(lake)}}


def pending_alerts(job: str = "retrain", *, lake: Lake, settings: Settings) -> pl.DataFrame:
    """Return the open drift/performance alerts (one per model, newest) that ``job`` should answer.

    An open alert is due when its episode opened after the last start of ``job`` (a new alert),
    or when ``job`` last started more than ``[jobs] alert_recheck_s`` ago (the alert is still
    open: ``retrain_if_needed`` may have been waiting for labels). Kinds are the alert kinds
    containing one of ``[jobs] alert_kinds``.
    """
    due = _alerted(lake, settings)
    last = history(job, lake=lake, limit=1)
    last_start = last["started_at"][0] if last.height else None
    if last_start is not None and utcnow() - last_start < timedelta(seconds=float(jobs_config(settings)["alert_recheck_s"])):
        due = due.filter(pl.col("opened_at") > last_start)
    return due


def _alerted(lake: Lake, settings: Settings) -> pl.DataFrame:
    """The newest open alert per model whose kind contains one of ``[jobs] alert_kinds``."""
    from core.monitoring import alerts

    kinds = list(jobs_config(settings)["alert_kinds"])
    open_ = alerts(status="open", lake=lake)
    if not kinds or open_.height == 0:
        return open_.head(0)
    kind_ok = pl.any_horizontal(*[pl.col("kind").str.contains(k, literal=True) for k in kinds])
    return (
        open_.filter(kind_ok & pl.col("model").is_not_null())
        .sort("opened_at", descending=True)
        .unique("model", keep="first", maintain_order=True)
    )


def retrain(*, lake: Lake, settings: Settings, trigger: str, **args: Any) -> dict[str, Any]:
    """Retrain: on an alert, each alerted model if ``retrain_if_needed`` agrees; else every champion."""
    from core.flows.monitor import retrain as retrain_flow
    from core.flows.monitor import retrain_if_needed

    out: dict[str, Any] = {}
    # the retrain trains on the [compute] engine of the job's settings (passed to the flows)
    if trigger == "alert":
        for model in _alerted(lake, settings)["model"].to_list():
            outcome = retrain_if_needed(model, lake=lake, settings=settings)
            out[model] = jsonable(outcome) if outcome is not None else {"retrained": False, "why": "not needed yet"}
    else:
        for model in _champions(lake):
            out[model] = jsonable(retrain_flow(model, reason=f"{trigger} retrain", lake=lake, settings=settings, **args))
    return {"models": out}


def rollout(*, lake: Lake, settings: Settings, trigger: str = "manual", **args: Any) -> dict[str, Any]:
    """The live gate of every model with a staged challenger (``core.flows.rollout.check_rollout``)."""
    from core.flows.rollout import check_rollout
    from core.registry import list_models, state

    out: dict[str, Any] = {}
    for model in list_models(lake=lake)["model"].to_list():
        if state(model, lake=lake).stage is None:
            continue
        outcome = check_rollout(model, lake=lake, settings=settings, **args)
        out[model] = outcome.to_dict() if outcome is not None else None
    return {"models": out}


def maintain_lake(*, lake: Lake, retention_hours: int = 168) -> dict[str, Any]:
    """Maintain every table, keeping the dataset versions registered models were trained on.

    Returns:
        Outputs: tables maintained, files before/after, files vacuumed, versions kept.
    """
    used = lake.read_or_empty("model_versions", columns=["dataset_name", "dataset_version"]).drop_nulls().unique()
    keep: dict[str, list[int]] = {}
    for r in used.iter_rows(named=True):
        keep.setdefault(f"data/{r['dataset_name']}", []).append(int(r["dataset_version"]))
    reports = lake.maintain(retention_hours=retention_hours, keep_versions=keep)
    return {
        "tables": len(reports),
        "files_before": sum(r.files_before for r in reports),
        "files_after": sum(r.files_after for r in reports),
        "vacuumed": sum(r.vacuumed for r in reports),
        "kept_versions": {k: sorted(v) for k, v in keep.items()},
    }


def compact_hot(*, lake: Lake, min_small_files: int = 50) -> dict[str, Any]:
    """Compact every table holding at least ``min_small_files`` small files (no vacuum).

    Tables written in many small commits (prediction logs, job and tracking records) slow down
    every read and append long before the nightly maintenance; compaction without vacuum is
    safe while writers append, so it runs often.

    Returns:
        Outputs: tables checked, and per compacted table the files removed and added.
    """
    tables = lake.tables()
    done: dict[str, dict[str, Any]] = {}
    for name in tables:
        metrics = lake.compact(name, min_small_files=min_small_files)
        if metrics:
            done[name] = {"files_removed": metrics.get("numFilesRemoved"), "files_added": metrics.get("numFilesAdded")}
    return {"tables_checked": len(tables), "compacted": done}
