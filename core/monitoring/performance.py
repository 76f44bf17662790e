"""Performance with delayed labels: feedback joined to the champion's predictions, metrics vs the gate-time value."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from core.config import Settings
from core.lake import Lake, resolve
from core.monitoring.checks import _table, log_scan, window
from core.monitoring.config import champion, monitor_config

__all__ = ["PerformanceReport", "check_performance", "labelled_window", "performance_over_time"]


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


def labelled_window(model: str, *, hours: float | None = None, version: int | None = None,
                    now: datetime | None = None, lake: Lake | None = None) -> tuple[pl.DataFrame, int]:
    """Predictions in the window joined to their latest feedback label; returns (labelled rows, all rows)."""
    lake = resolve(lake)
    preds = window(model, hours=hours, version=version, now=now, lake=lake)
    if preds.height == 0:
        return preds, 0
    fb = lake.read_or_empty("feedback", columns=["prediction_id", "model", "label", "at"])
    fb = (fb.filter(pl.col("model").is_null() | (pl.col("model") == model)).sort("at")
          .unique("prediction_id", keep="last").select("prediction_id", pl.col("label").alias("truth"), pl.col("at").alias("labelled_at")))
    return preds.join(fb, on="prediction_id", how="inner"), preds.height


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


def check_performance(
    model: str, *, window_hours: float | None = None, lake: Lake | None = None,
    settings: Settings | None = None, now: datetime | None = None,
) -> PerformanceReport:
    """Compute the champion's metrics on its labelled predictions and compare with the gate-time metric.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
    """
    from core.gating import default_metric, higher_is_better
    from core.training import compute_metrics

    lake = resolve(lake)
    cfg = monitor_config(model, settings)
    mv = champion(model, lake=lake)
    task = mv.signature.get("task", "binary")
    metric = cfg.metric or default_metric(task)
    hours = window_hours if window_hours is not None else cfg.performance_window_hours
    joined, total = labelled_window(model, hours=hours, version=mv.version, now=now, lake=lake)
    baseline, source = _baseline(model, mv, metric, lake)
    n = joined.height
    coverage = n / total if total else 0.0
    start = joined["at"].min() if n else None
    end = joined["at"].max() if n else None
    if n < cfg.min_labels:
        return PerformanceReport(model, mv.version, "insufficient_labels", start, end, total, n, coverage, {},
                                 metric, None, baseline, source, cfg.tolerance, None)
    metrics = compute_metrics(task, joined["truth"].to_numpy(), joined["score"].to_numpy(),
                              float(mv.signature.get("threshold", 0.5)))
    value = metrics.get(metric)
    degraded = None
    if value is not None and baseline is not None and np.isfinite(value):
        drop = (baseline - value) if higher_is_better(metric) else (value - baseline)
        degraded = bool(drop > cfg.tolerance)
    return PerformanceReport(model, mv.version, "ok", start, end, total, n, coverage, metrics, metric,
                             value, baseline, source, cfg.tolerance, degraded)


def performance_over_time(model: str, *, every: str = "1h", lake: Lake | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """Per time bucket: predictions, labelled, coverage and the training metrics of the labelled rows."""
    from core.training import compute_metrics

    lake = resolve(lake)
    schema = {"bucket": pl.Datetime("us", "UTC"), "model_version": pl.Int64, "predictions": pl.Int64,
              "labelled": pl.Int64, "coverage": pl.Float64, "metric": pl.String, "value": pl.Float64}
    if not lake.exists(_table(model)):
        return pl.DataFrame(schema=schema)
    from core import registry

    sig = registry.get_version(model, registry.resolve_version(model, alias="champion", lake=lake), lake=lake).signature
    preds = log_scan(model, lake).select("prediction_id", "at", "model_version", "score").collect()
    fb = lake.read_or_empty("feedback", columns=["prediction_id", "label", "at"]).sort("at").unique("prediction_id", keep="last")
    frame = preds.join(fb.select("prediction_id", pl.col("label").alias("truth")), on="prediction_id", how="left")
    frame = frame.with_columns(pl.col("at").dt.truncate(every).alias("bucket"))
    rows = []
    for (bucket, version), part in frame.group_by(["bucket", "model_version"], maintain_order=True):
        lab = part.filter(pl.col("truth").is_not_null())
        base = {"bucket": bucket, "model_version": version, "predictions": part.height, "labelled": lab.height,
                "coverage": lab.height / part.height}
        if lab.height and lab["truth"].n_unique() > 1:
            metrics = compute_metrics(sig.get("task", "binary"), lab["truth"].to_numpy(), lab["score"].to_numpy(),
                                      float(sig.get("threshold", 0.5)))
            rows += [{**base, "metric": k, "value": v} for k, v in metrics.items()]
        else:
            rows.append({**base, "metric": None, "value": None})
    return pl.DataFrame(rows, schema=schema).sort("bucket") if rows else pl.DataFrame(schema=schema)


