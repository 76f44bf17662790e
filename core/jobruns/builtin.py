"""The built-in jobs: drift check, performance check, retrain, lake maintenance.

Each calls ``core`` flows only (``core.flows.monitor``, ``Lake.maintain``), imported when the
job runs, so the catalog loads before (and without) the monitoring flows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

import core.lake
from core.config import Settings
from core.ids import utcnow
from core.jobruns.catalog import jobs_config, jsonable
from core.jobruns.records import history
from core.lake import Lake

__all__ = ["drift_check", "maintain_lake", "pending_alerts", "performance_check", "retrain"]


def _champions(lake: Lake) -> list[str]:
    from core.registry import list_models

    models = list_models(lake=lake)
    return sorted(models.filter(pl.col("champion").is_not_null())["model"].to_list())


def drift_check(*, lake: Lake, settings: Settings, **args: Any) -> dict[str, Any]:
    from core.flows.monitor import check_drift

    return {"models": {m: jsonable(check_drift(m, lake=lake, settings=settings, **args)) for m in _champions(lake)}}


def performance_check(*, lake: Lake, settings: Settings, **args: Any) -> dict[str, Any]:
    from core.flows.monitor import check_performance

    return {"models": {m: jsonable(check_performance(m, lake=lake, settings=settings, **args)) for m in _champions(lake)}}


def pending_alerts(job: str = "retrain", *, lake: Lake | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """Return the newest open drift/performance alert per model not yet answered by ``job``.

    An alert is pending when it is newer than the start of the last execution of ``job`` (or,
    before any, than a day ago) and its kind contains one of ``[jobs] alert_kinds``.
    """
    lake = core.lake.resolve(lake)
    kinds = list(jobs_config(settings)["alert_kinds"])
    last = history(job, lake=lake, limit=1)
    since = last["started_at"][0] if last.height and last["started_at"][0] else utcnow() - timedelta(days=1)
    alerts = lake.read_or_empty("alerts")
    kind_ok = pl.any_horizontal(*[pl.col("kind").str.contains(k, literal=True) for k in kinds]) if kinds else pl.lit(False)
    return (
        alerts.filter(kind_ok & (pl.col("at") > since) & pl.col("model").is_not_null()
                      & ~pl.col("status").fill_null("open").is_in(["resolved", "closed"]))
        .sort("at")
        .group_by("model", maintain_order=True)
        .last()
    )


def retrain(*, lake: Lake, settings: Settings, trigger: str, **args: Any) -> dict[str, Any]:
    from core.flows.monitor import retrain as retrain_flow

    if trigger == "alert":
        todo = {r["model"]: f"alert {r['kind']} {r['alert_id']}: {r['message'] or ''}"[:300]
                for r in pending_alerts("retrain", lake=lake, settings=settings).iter_rows(named=True)}
    else:
        todo = {m: f"{trigger} retrain" for m in _champions(lake)}
    return {"models": {m: jsonable(retrain_flow(m, reason=why, lake=lake, settings=settings, **args)) for m, why in todo.items()}}


def maintain_lake(*, lake: Lake | None = None, retention_hours: int = 168) -> dict[str, Any]:
    """Maintain every table, keeping the dataset versions registered models were trained on.

    Returns:
        Outputs: tables maintained, files before/after, files vacuumed, versions kept.
    """
    lake = core.lake.resolve(lake)
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
