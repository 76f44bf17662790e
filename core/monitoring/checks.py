"""Prediction windows, drift checks written to ``drift_reports``, and the views the Monitoring page draws."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from core import drift
from core.catalog import FEATURES_COLUMN, PASSTHROUGH_COLUMN
from core.config import Settings, load_settings
from core.errors import ConfigError
from core.ids import new_id, utcnow
from core.lake import Lake, resolve
from core.monitoring.config import champion, monitor_config
from core.monitoring.references import SCORE_ROW, ModelReference, reference

__all__ = [
    "DATASET_ROW", "DriftReport", "check_drift", "drift_history", "feature_distribution", "features_of",
    "json_default", "log_scan", "passthrough_of", "score_over_time", "window",
]

DATASET_ROW = "__dataset__"


def _table(model: str) -> str:
    return f"predictions/{model}"


_LEGACY_OWN = ("prediction_id", "at", "day", "model_version", "score", "label", "latency_ms")


def _normalised(scan: pl.LazyFrame) -> pl.LazyFrame:
    """A prediction log in the current layout: a table of an earlier release (features as
    top-level columns, ``label`` for the predicted class) gets its features wrapped in the
    ``features`` struct and ``label`` renamed ``predicted_label``."""
    names = scan.collect_schema().names()
    if FEATURES_COLUMN in names:
        return scan
    feats = [c for c in names if c not in _LEGACY_OWN]
    out = scan.rename({"label": "predicted_label"}) if "label" in names else scan
    if feats:
        return out.with_columns(pl.struct(feats).alias(FEATURES_COLUMN)).drop(feats)
    return out.with_columns(pl.lit(None, dtype=pl.Struct([])).alias(FEATURES_COLUMN))


def features_of(frame: pl.DataFrame) -> pl.DataFrame:
    """The feature values of a prediction-log frame (``window``) as one column per feature."""
    if frame.height == 0 and FEATURES_COLUMN not in frame.columns:
        return pl.DataFrame()
    return frame.select(pl.col(FEATURES_COLUMN)).unnest(FEATURES_COLUMN)


def passthrough_of(frame: pl.DataFrame) -> pl.DataFrame:
    """The pass-through fields of a prediction-log frame as one column each (none: no columns)."""
    if PASSTHROUGH_COLUMN not in frame.columns:
        return pl.DataFrame()
    return frame.select(pl.col(PASSTHROUGH_COLUMN)).unnest(PASSTHROUGH_COLUMN)


def log_scan(model: str, lake: Lake) -> pl.LazyFrame:
    """The prediction log of ``model`` as a lazy frame in the current layout (see ``window``)."""
    return _normalised(lake.scan(_table(model)))


def window(
    model: str,
    *,
    rows: int | None = None,
    hours: float | None = None,
    version: int | None = None,
    now: datetime | None = None,
    lake: Lake | None = None,
) -> pl.DataFrame:
    """The latest predictions of ``model``: the last ``rows`` rows and/or the last ``hours`` hours.

    ``version`` keeps only rows answered by that model version. Returns an empty frame when the
    model has no prediction log yet. The frame has the log's layout: ``prediction_id, at, day,
    model_version, score, predicted_label, latency_ms``, the ``features`` struct and, when
    the model declares them, the ``passthrough`` struct; ``features_of(frame)`` gives the
    features as columns (a feature may be named like one of the log's own columns).
    """
    lake = resolve(lake)
    if not lake.exists(_table(model)):
        return pl.DataFrame()
    scan = log_scan(model, lake)
    if version is not None:
        scan = scan.filter(pl.col("model_version") == version)
    if hours is not None:
        since = (now or utcnow()) - timedelta(hours=hours)
        scan = scan.filter((pl.col("day") >= since.date()) & (pl.col("at") >= since))
    if now is not None:
        scan = scan.filter(pl.col("at") <= now)
    if rows is not None:
        scan = scan.sort("at", descending=True).head(rows)
    return scan.sort("at").collect()


@dataclass(frozen=True)
class DriftReport:
    """One drift check: the window, per-feature verdicts, score drift and the dataset verdict.

    ``status`` is ``ok``, or ``insufficient_data`` when the window had fewer than ``min_rows``
    rows (then nothing is written and ``drifted`` is None). ``alert`` is filled by the flow.
    """

    report_id: str
    model: str
    model_version: int
    status: str
    window_rows: int
    window_start: datetime | None
    window_end: datetime | None
    reference_dataset: str
    reference_version: int
    result: drift.DatasetDrift | None
    score: drift.FeatureDrift | None
    drifted: bool | None
    alert: str | None = None

    @property
    def drifted_features(self) -> list[str]:
        """Names of drifted features (not counting the score)."""
        return self.result.drifted_features if self.result else []

    def to_frame(self) -> pl.DataFrame:
        """One row per feature plus the score row."""
        if self.result is None:
            return drift.DatasetDrift([], 0.0, 0.0, False).to_frame()
        extra = [self.score] if self.score else []
        return drift.DatasetDrift([*self.result.features, *extra], 0.0, 0.0, False).to_frame()


def _row(rep_id: str, model: str, version: int, win: tuple[Any, Any, int], ref: ModelReference, f: drift.FeatureDrift, at: datetime) -> dict[str, Any]:
    return {
        "report_id": rep_id, "model": model, "model_version": version, "window_start": win[0],
        "window_end": win[1], "window_rows": win[2], "feature": f.feature, "kind": f.kind, "test": f.test,
        "statistic": f.statistic, "p_value": f.p_value, "threshold": f.threshold, "drifted": f.drifted,
        "reference_dataset": ref.dataset, "reference_version": ref.dataset_version,
        "stats_json": json.dumps({**f.stats, "n_ref": f.n_ref, "n_cur": f.n_cur}, default=json_default), "at": at,
    }


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def check_drift(
    model: str,
    *,
    window_rows: int | None = None,
    window_hours: float | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
    actor: str | None = None,
) -> DriftReport:
    """Compare the champion's latest prediction window with its stored reference; write ``drift_reports``.

    Args:
        model: model name.
        window_rows: last N predictions (default from config: 5000).
        window_hours: last N hours (combined with ``window_rows`` when both are given).
        lake: the lake.
        settings: settings with the model's monitoring and drift sections.
        now: the clock (tests).
        actor: recorded in the commit metadata.

    Returns:
        The report (written as one commit unless the window is too small).

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
    """
    lake = resolve(lake)
    settings = settings or load_settings()
    cfg = monitor_config(model, settings)
    if window_rows is None and window_hours is None:
        window_rows, window_hours = cfg.window_rows, cfg.window_hours
    mv = champion(model, lake=lake)
    ref = reference(model, version=mv.version, lake=lake, settings=settings)
    frame = window(model, rows=window_rows, hours=window_hours, version=mv.version, now=now, lake=lake)
    rep_id = new_id()
    if frame.height < cfg.min_rows:
        return DriftReport(rep_id, model, mv.version, "insufficient_data", frame.height, None, None,
                           ref.dataset, ref.dataset_version, None, None, None)
    result = drift.compare(ref.features, features_of(frame), cfg.policy)
    score = drift.check_column(SCORE_ROW, ref.score, frame["score"], cfg.policy)
    score = replace(score, kind="score")
    win = (frame["at"].min(), frame["at"].max(), frame.height)
    at = now or utcnow()
    rows = [_row(rep_id, model, mv.version, win, ref, f, at) for f in [*result.features, score]]
    # The model's own output moving is the most direct sign it meets a different world, so by
    # default score drift alone also counts (``alert_on_score_drift``), besides the feature share.
    drifted = result.drifted or (cfg.alert_on_score_drift and score.drifted)
    verdict = drift.FeatureDrift(DATASET_ROW, "dataset", "share", result.share, None, result.share_threshold,
                                 drifted, ref.rows, frame.height,
                                 {"drifted_features": result.drifted_features, "score_drifted": score.drifted})
    rows.append(_row(rep_id, model, mv.version, win, ref, verdict, at))
    lake.append("drift_reports", rows, metadata={"actor": actor or settings.actor, "model": model, "report_id": rep_id})
    return DriftReport(rep_id, model, mv.version, "ok", frame.height, win[0], win[1], ref.dataset,
                       ref.dataset_version, result, score, drifted)


def drift_history(model: str | None = None, *, last: int = 20, lake: Lake | None = None) -> pl.DataFrame:
    """``drift_reports`` rows of the last ``last`` checks (of one model or all), oldest first."""
    lake = resolve(lake)
    frame = lake.read_or_empty("drift_reports")
    if model is not None:
        frame = frame.filter(pl.col("model") == model)
    ids = frame.group_by("report_id").agg(pl.col("at").max()).sort("at").tail(last)["report_id"]
    return frame.filter(pl.col("report_id").is_in(ids.implode())).sort(["at", "feature"])


def feature_distribution(
    model: str, feature: str, *, window_rows: int | None = None, bins: int = 30,
    lake: Lake | None = None, settings: Settings | None = None,
) -> pl.DataFrame:
    """Reference vs current distribution of one feature (or ``score``) as shares per bin/level.

    Returns columns ``source`` (reference/current), ``bin`` (level, or the bin's lower edge as
    text), ``lower``, ``upper`` (numeric bins) and ``share``.
    """
    lake = resolve(lake)
    cfg = monitor_config(model, settings)
    ref = reference(model, lake=lake, settings=settings)
    refd = ref.score if feature == SCORE_ROW else ref.features.get(feature)
    if refd is None:
        raise ConfigError(f"model {model!r} has no feature {feature!r}; features: {', '.join(ref.features)}")
    frame = window(model, rows=window_rows or cfg.window_rows, hours=cfg.window_hours, version=ref.model_version, lake=lake)
    if not frame.height:
        cur = pl.Series(feature, [], dtype=pl.Float64)
    elif feature == SCORE_ROW:
        cur = frame["score"]
    else:
        cur = features_of(frame)[feature]
    if isinstance(refd, drift.CategoricalReference):
        vc = cur.cast(pl.String).drop_nulls().value_counts(name="n")
        cur_counts = dict(zip(vc[vc.columns[0]].to_list(), vc["n"].to_list(), strict=True)) if vc.height else {}
        levels = list(refd.levels) + sorted(set(cur_counts) - set(refd.levels))
        ref_counts = dict(zip(refd.levels, refd.counts.tolist(), strict=True))
        rows = []
        for source, counts in (("reference", ref_counts), ("current", cur_counts)):
            total = max(sum(counts.values()), 1)
            rows += [{"source": source, "bin": lv, "lower": None, "upper": None, "share": counts.get(lv, 0) / total} for lv in levels]
        return pl.DataFrame(rows, schema={"source": pl.String, "bin": pl.String, "lower": pl.Float64, "upper": pl.Float64, "share": pl.Float64})
    ref_vals = refd.values
    cur_vals = drift.sorted_finite(cur)
    both = np.concatenate((ref_vals[[0, -1]], cur_vals[[0, -1]] if cur_vals.size else []))
    lo, hi = float(both.min()), float(both.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    rows = []
    for source, vals in (("reference", ref_vals), ("current", cur_vals)):
        counts = np.diff(np.searchsorted(vals, edges, side="left"))
        counts[-1] += int(np.count_nonzero(vals == edges[-1]))
        total = max(vals.size, 1)
        rows += [{"source": source, "bin": f"{edges[i]:.4g}", "lower": float(edges[i]), "upper": float(edges[i + 1]),
                  "share": float(counts[i]) / total} for i in range(bins)]
    return pl.DataFrame(rows, schema={"source": pl.String, "bin": pl.String, "lower": pl.Float64, "upper": pl.Float64, "share": pl.Float64})


def score_over_time(model: str, *, every: str = "1h", lake: Lake | None = None) -> pl.DataFrame:
    """Score distribution per time bucket: ``bucket, model_version, n, mean, p10, p25, p50, p75, p90``."""
    lake = resolve(lake)
    if not lake.exists(_table(model)):
        return pl.DataFrame()
    s = pl.col("score")
    return (
        log_scan(model, lake)
        .group_by(pl.col("at").dt.truncate(every).alias("bucket"), "model_version")
        .agg(pl.len().alias("n"), s.mean().alias("mean"), *[s.quantile(q / 100).alias(f"p{q}") for q in (10, 25, 50, 75, 90)])
        .sort("bucket")
        .collect()
    )


