"""Performance estimated before labels arrive (CBPE, ``core.drift.cbpe``), stored beside the realised performance.

``estimate_performance`` takes the champion's latest window (the drift window), maps its scores
through the calibration fitted on the champion's holdout (``core.monitoring.references``), and
estimates ROC AUC, accuracy, precision, recall and F1 with a ± 3 sampling-error band. Whatever
labels have already arrived for that window give the realised values beside the estimates. One
``performance_estimates`` row per metric is written per check, in one commit. The policy metric's
estimated drop against its gate-time value (the same baseline as the realised check) past
``estimate_tolerance`` (default: ``tolerance``) makes the report ``degraded``.

``estimated_performance_over_time`` computes the same per time bucket of the log, with the realised
value, label coverage and band, for the Monitoring page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from core import drift
from core.config import Settings
from core.ids import new_id, utcnow
from core.lake import Lake
from core.monitoring.checks import _span, _table, log_scan, window
from core.monitoring.config import champion, monitor_config
from core.monitoring.performance import _baseline, labelled_window
from core.monitoring.references import reference

__all__ = ["EstimateReport", "estimate_performance", "estimated_performance_over_time"]


@dataclass(frozen=True)
class EstimateReport:
    """One estimation: per-metric estimates with bands, realised values where labels exist, the verdict.

    ``status``: ``ok``, ``insufficient_data`` (fewer than ``min_rows`` predictions) or
    ``unsupported`` (not a binary classifier). ``degraded`` compares the policy metric's estimate
    with its baseline; None when there is no verdict. ``alert`` is filled by the flow.
    """

    report_id: str
    model: str
    model_version: int
    status: str
    window_rows: int
    window_start: datetime | None
    window_end: datetime | None
    estimates: dict[str, drift.Estimate]
    realised: dict[str, float]
    labelled: int
    metric: str
    baseline: float | None
    baseline_source: str
    tolerance: float
    degraded: bool | None
    calibrated: bool
    alert: str | None = None

    @property
    def estimate(self) -> drift.Estimate | None:
        """The policy metric's estimate."""
        return self.estimates.get(self.metric)


def estimate_performance(
    model: str, *, window_rows: int | None = None, window_hours: float | None = None, lake: Lake,
    settings: Settings, now: datetime | None = None, actor: str | None = None,
) -> EstimateReport:
    """Estimate the champion's performance on its latest window from its scores; write ``performance_estimates``.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
    """
    from core.gating import default_metric
    from core.training import compute_metrics
    cfg = monitor_config(model, settings)
    if window_rows is None and window_hours is None:
        window_rows, window_hours = cfg.window_rows, cfg.window_hours
    mv = champion(model, lake=lake)
    task = mv.signature.get("task", "binary")
    metric = cfg.metric or default_metric(task)
    tolerance = cfg.estimate_tolerance if cfg.estimate_tolerance is not None else cfg.tolerance
    rep_id = new_id()
    frame = window(model, rows=window_rows, hours=window_hours, version=mv.version, now=now, lake=lake)
    start, end = _span(frame["at"]) if frame.height else (None, None)  # an empty window may have no columns
    baseline, source = _baseline(model, mv, metric, lake)

    def empty(status: str) -> EstimateReport:
        return EstimateReport(rep_id, model, mv.version, status, frame.height, start, end, {}, {}, 0, metric,
                              baseline, source, tolerance, None, False)

    if task != "binary":
        return empty("unsupported")
    if frame.height < cfg.min_rows:
        return empty("insufficient_data")
    ref = reference(model, version=mv.version, lake=lake, settings=settings)
    if ref.calibration is None:
        return empty("unsupported")
    estimates = drift.estimate_performance(frame["score"].to_numpy(), ref.calibration)
    labelled = _labels_for(frame, model, lake)
    realised: dict[str, float] = {}
    if labelled.height and labelled["truth"].n_unique() > 1:
        m = compute_metrics("binary", labelled["truth"].to_numpy(), labelled["score"].to_numpy(),
                            float(mv.signature.get("threshold", 0.5)))
        realised = {k: m[k] for k in estimates}
    est = estimates.get(metric)
    degraded = None
    if est is not None and baseline is not None and not math.isnan(est.value):
        degraded = bool(baseline - est.value > tolerance)
    at = now or utcnow()
    rows = [{
        "report_id": rep_id, "model": model, "model_version": mv.version, "window_start": start, "window_end": end,
        "window_rows": frame.height, "metric": name, "estimate": e.value, "sampling_error": e.sampling_error,
        "lower": e.lower, "upper": e.upper, "realised": realised.get(name), "labelled": labelled.height,
        "baseline": baseline if name == metric else None, "calibrated": ref.calibration.applied, "at": at,
    } for name, e in estimates.items()]
    lake.append("performance_estimates", rows, metadata={"actor": actor or settings.actor, "model": model,
                                                          "report_id": rep_id})
    return EstimateReport(rep_id, model, mv.version, "ok", frame.height, start, end, estimates, realised,
                          labelled.height, metric, baseline, source, tolerance, degraded, ref.calibration.applied)


def _labels_for(frame: pl.DataFrame, model: str, lake: Lake) -> pl.DataFrame:
    """The window's predictions that already have a feedback label (latest label per prediction)."""
    fb = lake.read_or_empty("feedback", columns=["prediction_id", "model", "label", "at"])
    if fb.height == 0:
        return pl.DataFrame(schema={"score": pl.Float64, "truth": pl.Float64})
    fb = (fb.filter(pl.col("model").is_null() | (pl.col("model") == model)).sort("at")
          .unique("prediction_id", keep="last").select("prediction_id", pl.col("label").alias("truth")))
    return frame.select("prediction_id", "score").join(fb, on="prediction_id", how="inner")


def estimated_performance_over_time(
    model: str, *, every: str = "1h", metric: str | None = None, lake: Lake,
    settings: Settings,
) -> pl.DataFrame:
    """Estimated vs realised performance of the champion's predictions per time bucket.

    Columns: bucket, model_version, predictions, labelled, coverage, metric, estimate, lower,
    upper, sampling_error, realised (None until labels arrive). Empty for a model that is not a
    binary classifier or has no prediction log.
    """
    from core.gating import default_metric
    from core.training import compute_metrics

    schema = {"bucket": pl.Datetime("us", "UTC"), "model_version": pl.Int64(), "predictions": pl.Int64(),
              "labelled": pl.Int64(), "coverage": pl.Float64(), "metric": pl.String(), "estimate": pl.Float64(),
              "lower": pl.Float64(), "upper": pl.Float64(), "sampling_error": pl.Float64(), "realised": pl.Float64()}
    if not lake.exists(_table(model)):
        return pl.DataFrame(schema=schema)
    mv = champion(model, lake=lake)
    if mv.signature.get("task", "binary") != "binary":
        return pl.DataFrame(schema=schema)
    cfg = monitor_config(model, settings)
    metric = metric or cfg.metric or default_metric("binary")
    ref = reference(model, version=mv.version, lake=lake, settings=settings)
    if ref.calibration is None:
        return pl.DataFrame(schema=schema)
    joined, _ = labelled_window(model, version=mv.version, lake=lake)
    preds = log_scan(model, lake).filter(pl.col("model_version") == mv.version).select(
        "prediction_id", "at", "score").collect()
    frame = preds.join(joined.select("prediction_id", "truth"), on="prediction_id", how="left").with_columns(
        pl.col("at").dt.truncate(every).alias("bucket"))
    threshold = float(mv.signature.get("threshold", 0.5))
    rows: list[dict[str, Any]] = []
    for (bucket,), part in frame.group_by(["bucket"], maintain_order=True):
        est = drift.estimate_performance(part["score"].to_numpy(), ref.calibration, metrics=[metric])[metric]
        lab = part.filter(pl.col("truth").is_not_null())
        real = None
        if lab.height and lab["truth"].n_unique() > 1:
            real = compute_metrics("binary", lab["truth"].to_numpy(), lab["score"].to_numpy(), threshold).get(metric)
        rows.append({"bucket": bucket, "model_version": mv.version, "predictions": part.height, "labelled": lab.height,
                     "coverage": lab.height / part.height, "metric": metric, "estimate": est.value, "lower": est.lower,
                     "upper": est.upper, "sampling_error": est.sampling_error, "realised": real})
    return pl.DataFrame(rows, schema=schema).sort("bucket") if rows else pl.DataFrame(schema=schema)
