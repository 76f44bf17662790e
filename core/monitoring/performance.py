"""Performance with delayed labels: feedback joined to the champion's predictions, metrics vs the gate-time value."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from core.config import Settings
from core.lake import Lake
from core.monitoring.checks import _span, _table, event_time, log_scan, window
from core.monitoring.config import champion, monitor_config

__all__ = [
    "PerformanceReport", "measure_performance", "ground_truth", "labelled_window", "orphan_labels", "performance_over_time",
]


_TRUTH_SCHEMA = {"prediction_id": pl.String(), "truth": pl.Float64(), "labelled_at": pl.Datetime("us", "UTC")}


def ground_truth(model: str, *, lake: Lake) -> pl.DataFrame:
    """The latest ground-truth label of each labelled prediction of ``model``.

    Labels sent by prediction id join by it; labels sent by the model's feedback key (an entity
    id among its pass-through fields) apply to the newest prediction of that key made at or
    before the label arrived (an as-of join on the log). When a prediction got several labels
    the latest wins (all stay in ``feedback``). Labels that match no prediction are left out
    here (see ``orphan_labels``).

    Returns:
        ``prediction_id, truth, labelled_at``, one row per labelled prediction.
    """
    fb = lake.read_or_empty("feedback")
    if fb.height == 0:
        return pl.DataFrame(schema=_TRUTH_SCHEMA)
    fb = fb.filter(pl.col("model").is_null() | (pl.col("model") == model))
    by_id = fb.filter(pl.col("prediction_id") != "").select(
        "prediction_id", pl.col("label").alias("truth"), pl.col("at").alias("labelled_at")
    )
    parts = [by_id]
    if "key" in fb.columns and lake.exists(_table(model)):
        by_key = fb.filter((pl.col("prediction_id") == "") & pl.col("key").is_not_null() & pl.col("key_value").is_not_null())
        for key in by_key["key"].unique().to_list():
            labels = by_key.filter(pl.col("key") == key).sort("at")
            scan = log_scan(model, lake)
            if "passthrough" not in scan.collect_schema().names():
                continue
            fields = scan.collect_schema()["passthrough"]
            if not isinstance(fields, pl.Struct) or key not in [f.name for f in fields.fields]:
                continue
            log = (scan.select("prediction_id", pl.col("at").alias("served_at"),
                               pl.col("passthrough").struct.field(key).cast(pl.String).alias("key_value"))
                   .filter(pl.col("key_value").is_in(labels["key_value"].unique().implode()))
                   .sort("served_at").collect())
            hit = labels.join_asof(log, left_on="at", right_on="served_at", by="key_value", strategy="backward",
                                   check_sortedness=False)  # both sorted by time above
            parts.append(hit.filter(pl.col("prediction_id_right").is_not_null()).select(
                pl.col("prediction_id_right").alias("prediction_id"), pl.col("label").alias("truth"),
                pl.col("at").alias("labelled_at"),
            ))
    if lake.exists(_table(model)):  # an id the log does not know is an orphan, not ground truth
        known = log_scan(model, lake).select("prediction_id").collect()
        parts[0] = by_id.join(known, on="prediction_id", how="semi")
    else:
        parts[0] = by_id.clear()
    return (pl.concat(parts, how="vertical_relaxed").sort("labelled_at")
            .unique("prediction_id", keep="last", maintain_order=True))


def orphan_labels(model: str, *, lake: Lake) -> int:
    """How many labels sent by prediction id name a prediction the log does not (yet) hold."""
    fb = lake.read_or_empty("feedback")
    if fb.height == 0:
        return 0
    ids = fb.filter((pl.col("model").is_null() | (pl.col("model") == model)) & (pl.col("prediction_id") != ""))
    if not lake.exists(_table(model)):
        return ids.height
    known = log_scan(model, lake).select("prediction_id").collect()
    return ids.join(known, on="prediction_id", how="anti").height


@dataclass(frozen=True)
class PerformanceReport:
    """Metrics of the champion's labelled predictions in a window versus its gate-time metric."""

    model: str
    model_version: int
    status: str  # ok | insufficient_labels
    window_start: datetime | None
    window_end: datetime | None
    predictions: int
    labelled: int
    coverage: float
    metrics: dict[str, float]
    metric: str
    value: float | None
    baseline: float | None
    baseline_source: str
    tolerance: float
    degraded: bool | None
    alert: str | None = None
    estimate: Any = None  # the CBPE EstimateReport of the latest window, set by core.flows.monitor


def labelled_window(model: str, *, hours: float | None = None, version: int | None = None,
                    now: datetime | None = None, lake: Lake) -> tuple[pl.DataFrame, int]:
    """Predictions in the window joined to their latest feedback label; returns (labelled rows, all rows)."""
    preds = window(model, hours=hours, version=version, now=now, lake=lake)
    if preds.height == 0:
        return preds, 0
    return preds.join(ground_truth(model, lake=lake), on="prediction_id", how="inner"), preds.height


def _baseline(model: str, mv: Any, metric: str, lake: Lake) -> tuple[float | None, str]:
    from core import registry

    ev = registry.events(model, lake=lake).filter((pl.col("action") == "gate") & (pl.col("version") == mv.version))
    if ev.height:
        report = json.loads(ev.sort("at")["report_json"][-1] or "{}")
        value = (report.get("metrics") or {}).get(metric)
        if value is not None:
            return float(value), "gate"
    value = (mv.metrics or {}).get(metric)
    return (float(value), "registration") if value is not None else (None, "none")


def measure_performance(
    model: str, *, window_hours: float | None = None, lake: Lake,
    settings: Settings, now: datetime | None = None,
) -> PerformanceReport:
    """Compute the champion's metrics on its labelled predictions and compare with the gate-time metric.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
    """
    from core.gating import default_metric, higher_is_better
    from core.training import compute_metrics
    cfg = monitor_config(model, settings)
    mv = champion(model, lake=lake)
    task = mv.signature.task
    metric = cfg.metric or default_metric(task)
    hours = window_hours if window_hours is not None else cfg.performance_window_hours
    joined, total = labelled_window(model, hours=hours, version=mv.version, now=now, lake=lake)
    baseline, source = _baseline(model, mv, metric, lake)
    n = joined.height
    coverage = n / total if total else 0.0
    start, end = _span(joined["at"]) if n else (None, None)  # an empty window may have no columns
    if n < cfg.min_labels:
        return PerformanceReport(model, mv.version, "insufficient_labels", start, end, total, n, coverage, {},
                                 metric, None, baseline, source, cfg.tolerance, None)
    metrics = compute_metrics(task, joined["truth"].to_numpy(), joined["score"].to_numpy(),
                              mv.signature.threshold)
    value = metrics.get(metric)
    degraded = None
    if value is not None and baseline is not None and np.isfinite(value):
        drop = (baseline - value) if higher_is_better(metric) else (value - baseline)
        degraded = bool(drop > cfg.tolerance)
    return PerformanceReport(model, mv.version, "ok", start, end, total, n, coverage, metrics, metric,
                             value, baseline, source, cfg.tolerance, degraded)


def performance_over_time(model: str, *, every: str = "1h", lake: Lake, settings: Settings) -> pl.DataFrame:
    """Per time bucket: predictions, labelled, coverage and the training metrics of the labelled rows.

    Buckets are of the event time when requests send it (``core.monitoring.checks.event_time``).
    """
    from core.training import compute_metrics

    schema = {"bucket": pl.Datetime("us", "UTC"), "model_version": pl.Int64(), "predictions": pl.Int64(),
              "labelled": pl.Int64(), "coverage": pl.Float64(), "metric": pl.String(), "value": pl.Float64()}
    if not lake.exists(_table(model)):
        return pl.DataFrame(schema=schema)
    from core import registry

    sig = registry.get_version(model, registry.resolve_version(model, alias="champion", lake=lake), lake=lake).signature
    scan = log_scan(model, lake)
    preds = scan.select("prediction_id", event_time(model, scan, lake).alias("at"), "model_version", "score").collect()
    truth = ground_truth(model, lake=lake).select("prediction_id", "truth")
    frame = preds.join(truth, on="prediction_id", how="left")
    frame = frame.with_columns(pl.col("at").dt.truncate(every).alias("bucket"))
    rows = []
    for (bucket, version), part in frame.group_by(["bucket", "model_version"], maintain_order=True):
        lab = part.filter(pl.col("truth").is_not_null())
        base = {"bucket": bucket, "model_version": version, "predictions": part.height, "labelled": lab.height,
                "coverage": lab.height / part.height}
        if lab.height and lab["truth"].n_unique() > 1:
            metrics = compute_metrics(sig.task, lab["truth"].to_numpy(), lab["score"].to_numpy(),
                                      sig.threshold)
            rows += [{**base, "metric": k, "value": v} for k, v in metrics.items()]
        else:
            rows.append({**base, "metric": None, "value": None})
    return pl.DataFrame(rows, schema=schema).sort("bucket") if rows else pl.DataFrame(schema=schema)


