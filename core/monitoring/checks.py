"""Prediction windows, drift checks written to ``drift_reports``, and the views the Monitoring page draws.

Every read of a feature value from a window goes through ``window_features``: the one place that
knows where the prediction log keeps them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from core import drift
from core.catalog import FEATURES_COLUMN, PASSTHROUGH_COLUMN, prediction_table
from core.compute import compute_config
from core.config import Settings
from core.errors import ConfigError
from core.ids import new_id, utcnow
from core.lake import Lake
from core.monitoring.config import champion, monitor_config
from core.monitoring.references import SCORE_ROW, ModelReference, reference

__all__ = [
    "DATASET_ROW", "MULTIVARIATE_ROW", "DriftReport", "attribution_of", "measure_drift", "drift_history",
    "feature_distribution", "feature_status", "features_of", "json_default", "log_scan", "multivariate_over_time",
    "passthrough_of", "score_over_time", "window", "window_features",
]

DATASET_ROW = "__dataset__"
MULTIVARIATE_ROW = "__multivariate__"


def _table(model: str) -> str:
    return prediction_table(model)


_LEGACY_OWN = ("prediction_id", "at", "day", "model_version", "score", "label", "latency_ms")


def _normalised(scan: pl.LazyFrame) -> pl.LazyFrame:
    """A prediction log in the current layout: a table of an earlier release (features as
    top-level columns, ``label`` for the predicted class) gets its features wrapped in the
    ``features`` struct and ``label`` renamed ``predicted_label``."""
    names = scan.collect_schema().names()
    if "role" not in names:  # tables written before staged rollouts: every row answered as champion
        scan = scan.with_columns(pl.lit("champion").alias("role"))
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


def log_scan(model: str, lake: Lake, *, shadow: bool = False) -> pl.LazyFrame:
    """The prediction log of ``model`` as a lazy frame in the current layout (see ``window``).

    Rows a shadow challenger scored (role ``shadow``: never an answer, and sharing their
    prediction ids with the champion's rows) are left out unless ``shadow``.
    """
    scan = _normalised(lake.scan(_table(model)))
    return scan if shadow else scan.filter(pl.col("role").is_null() | (pl.col("role") != "shadow"))


def window(
    model: str,
    *,
    rows: int | None = None,
    hours: float | None = None,
    version: int | None = None,
    now: datetime | None = None,
    lake: Lake,
) -> pl.DataFrame:
    """The latest predictions of ``model``: the last ``rows`` rows and/or the last ``hours`` hours.

    ``version`` keeps only rows answered by that model version. Returns an empty frame when the
    model has no prediction log yet. The frame has the log's layout: ``prediction_id, at, day,
    model_version, score, predicted_label, latency_ms``, the ``features`` struct and, when
    the model declares them, the ``passthrough`` struct; ``features_of(frame)`` gives the
    features as columns (a feature may be named like one of the log's own columns).
    """
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


def _span(at: pl.Series) -> tuple[datetime | None, datetime | None]:
    """The first and last time of a datetime column (None for a column of nulls)."""
    first, last = at.min(), at.max()
    return (first if isinstance(first, datetime) else None, last if isinstance(last, datetime) else None)


def window_features(frame: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """The feature values of a window as a frame with one column per feature (``names`` order).

    The one place the drift checks read feature values through (the log keeps them in its
    ``features`` struct, see ``features_of``); a feature the log lacks is left out, and the
    drift check reports it as ``no_data``.
    """
    feats = features_of(frame)
    return feats.select([n for n in names if n in feats.columns])


@dataclass(frozen=True)
class DriftReport:
    """One drift check: the window, per-feature verdicts, score drift, multivariate drift, attribution, verdict.

    ``status`` is ``ok``, or ``insufficient_data`` when the window had fewer than ``min_rows``
    rows (then only the ``__dataset__`` row is written, status ``insufficient``, and ``drifted``
    is None). ``dataset_status`` is the per-feature verdict's status (``ok``, ``drift``,
    ``no_data``). ``drifted`` is None when nothing could be compared. ``alert`` is filled by the flow.
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
    multivariate: drift.FeatureDrift | None = None
    attribution: drift.Attribution | None = None
    dataset_status: str | None = None
    quality_alert: str | None = None

    @property
    def drifted_features(self) -> list[str]:
        """Names of drifted features that count in the verdict (not counting the score)."""
        return self.result.drifted_features if self.result else []

    def to_frame(self) -> pl.DataFrame:
        """One row per feature plus the score and multivariate rows."""
        if self.result is None:
            return drift.DatasetDrift([], math.nan, 0.0, None).to_frame()
        extra = [f for f in (self.score, self.multivariate) if f is not None]
        return drift.DatasetDrift([*self.result.features, *extra], 0.0, 0.0, None).to_frame()


def _row(rep_id: str, model: str, version: int, win: tuple[Any, Any, int], ref: ModelReference, f: drift.FeatureDrift, at: datetime) -> dict[str, Any]:
    extra = {"n_ref": f.n_ref, "n_cur": f.n_cur, "status": f.status, "role": f.role, "reasons": list(f.reasons)}
    if f.quality is not None:
        extra["quality"] = f.quality
    return {
        "report_id": rep_id, "model": model, "model_version": version, "window_start": win[0],
        "window_end": win[1], "window_rows": win[2], "feature": f.feature, "kind": f.kind, "test": f.test,
        "statistic": f.statistic, "p_value": f.p_value, "threshold": f.threshold, "drifted": f.drifted,
        "reference_dataset": ref.dataset, "reference_version": ref.dataset_version,
        "stats_json": json.dumps(_strict({**f.stats, **extra}), default=json_default, allow_nan=False), "at": at,
    }


def _strict(value: Any) -> Any:
    """NaN and ±inf as null, so ``stats_json`` is strict JSON (polars' and DuckDB's JSON readers refuse NaN)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays; anything else as its text."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def measure_drift(
    model: str,
    *,
    window_rows: int | None = None,
    window_hours: float | None = None,
    lake: Lake,
    settings: Settings,
    now: datetime | None = None,
    actor: str | None = None,
    engine: str | None = None,
) -> DriftReport:
    """Measure drift: compare the champion's latest prediction window with its stored reference; write ``drift_reports``.

    It opens no alert: ``core.flows.monitor.check_drift_and_alert`` calls it and opens or resolves them.

    Args:
        model: model name.
        window_rows: last N predictions (default from config: 5000).
        window_hours: last N hours (combined with ``window_rows`` when both are given).
        lake: the lake.
        settings: settings with the model's monitoring and drift sections.
        now: the clock (tests).
        actor: recorded in the commit metadata.
        engine: ``local`` or ``dask`` (default: ``[compute] engine``); on ``dask`` the window is
            summarised on the cluster (``core.compute.drift``) and ``stats_json`` of the
            ``__dataset__`` row says so.

    Returns:
        The report (written as one commit unless the window is too small).

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
    """
    cfg = monitor_config(model, settings)
    policy = cfg.policy
    if window_rows is None and window_hours is None:
        window_rows, window_hours = cfg.window_rows, cfg.window_hours
    mv = champion(model, lake=lake)
    ref = reference(model, version=mv.version, lake=lake, settings=settings, engine=engine)
    ccfg = compute_config(settings, engine=engine)
    engine_stats: dict[str, Any] = {}
    if ccfg.engine == "dask":
        cluster = _cluster_window(model, mv.version, ref, cfg, ccfg, lake, window_rows, window_hours, now)
        height, win = cluster.rows, (cluster.start, cluster.end, cluster.rows)
        engine_stats = {"engine": "dask", "partitions": cluster.partitions, "exact": cluster.exact}
    else:
        frame = window(model, rows=window_rows, hours=window_hours, version=mv.version, now=now, lake=lake)
        height = frame.height
        win = (frame["at"].min() if frame.height else None, frame["at"].max() if frame.height else None, frame.height)
    rep_id = new_id()
    at = now or utcnow()
    meta = {"actor": actor or settings.actor, "model": model, "report_id": rep_id}
    if height < cfg.min_rows:
        # recorded, so a window that stopped filling is visible, never a silent gap
        note = drift.FeatureDrift(DATASET_ROW, "dataset", "share", math.nan, None, policy.share, None, ref.rows,
                                  height, {"min_rows": cfg.min_rows, **engine_stats}, "insufficient", "feature",
                                  (f"only {height} predictions in the window (min_rows {cfg.min_rows}): no verdict",))
        lake.append("drift_reports", [_row(rep_id, model, mv.version, win, ref, note, at)], metadata=meta)
        return DriftReport(rep_id, model, mv.version, "insufficient_data", height, win[0], win[1],
                           ref.dataset, ref.dataset_version, None, None, None, dataset_status="insufficient")
    if ccfg.engine == "dask":
        assert cluster.result is not None and cluster.score is not None
        feats, result, score = cluster.sample, cluster.result, replace(cluster.score, kind="score")
    else:
        feats = window_features(frame, list(ref.kinds))
        result = drift.compare(ref.features, feats, policy)
        score = replace(drift.check_column(SCORE_ROW, ref.score, frame["score"], policy), kind="score")
    attribution = _attribution(model, mv.version, ref, feats, policy.attribution_sample, lake)
    if attribution is not None:
        score = replace(score, stats={**score.stats, "attribution": attribution.as_dict()})
    multi = _multivariate(ref, feats, policy, current_rows=height) if policy.multivariate else None
    rows = [_row(rep_id, model, mv.version, win, ref, f, at) for f in [*result.features, score]]
    if multi is not None:
        rows.append(_row(rep_id, model, mv.version, win, ref, multi, at))
    # The model's own output moving is the most direct sign it meets a different world, so by
    # default score drift alone also counts (``alert_on_score_drift``), as does a domain
    # classifier that tells the window from the reference (``alert_on_multivariate_drift``).
    votes = [result.drifted, score.drifted if cfg.alert_on_score_drift else None,
             multi.drifted if multi is not None and cfg.alert_on_multivariate_drift else None]
    drifted = True if any(v is True for v in votes) else (None if result.drifted is None else False)
    status = "drift" if drifted else result.status
    verdict = drift.FeatureDrift(
        DATASET_ROW, "dataset", "share", result.share, None, result.share_threshold, drifted, ref.rows, height,
        {"drifted_features": result.drifted_features, "score_drifted": score.drifted,
         "multivariate_drifted": None if multi is None else multi.drifted,
         "no_data_features": result.no_data_features, "expected_drift": result.expected_drift,
         "quality_flagged": [f.feature for f in result.quality_flagged], "reference_mode": ref.mode, **engine_stats},
        status,
    )
    rows.append(_row(rep_id, model, mv.version, win, ref, verdict, at))
    lake.append("drift_reports", rows, metadata=meta)
    return DriftReport(rep_id, model, mv.version, "ok", height, win[0], win[1], ref.dataset,
                       ref.dataset_version, result, score, drifted, multivariate=multi, attribution=attribution,
                       dataset_status=status)


def _cluster_window(model: str, version: int, ref: ModelReference, cfg: Any, ccfg: Any, lake: Lake,
                    window_rows: int | None, window_hours: float | None, now: datetime | None) -> Any:
    """The window's verdicts computed on the Dask cluster (``core.compute.drift``)."""
    from core.compute import session
    from core.compute.drift import check_window

    since = (now or utcnow()) - timedelta(hours=window_hours) if window_hours is not None else None
    sample_rows = ref.sample.height if ref.sample is not None else 0
    with session(ccfg) as client:
        return check_window(
            client, ccfg, model=model, model_version=version, features=ref.features, score=ref.score,
            policy=cfg.policy, lake=lake, window_rows=window_rows, since=since, now=now, min_rows=cfg.min_rows,
            sample=cfg.policy.multivariate_sample, reference_sample_rows=sample_rows,
        )


def _multivariate(ref: ModelReference, feats: pl.DataFrame, policy: drift.DriftPolicy,
                  current_rows: int | None = None) -> drift.FeatureDrift | None:
    """The domain-classifier check over the counted features both sides have (expected drift left out)."""
    from core.training import domain_classifier

    names = [c for c in ref.kinds if c in feats.columns and ref.sample is not None and c in ref.sample.columns
             and policy.role_of(c) != "expected_drift"]
    if not names or ref.sample is None:
        return None
    categorical = [c for c in names if ref.kinds[c] == "categorical"]
    res = domain_classifier(ref.sample, feats, features=names, categorical=categorical,
                            sample=policy.multivariate_sample, current_rows=current_rows)
    drifted, effective, se0 = drift.multivariate_verdict(res.auc, res.n_ref, res.n_cur, policy.multivariate_threshold)
    status = "drift" if drifted else ("ok" if drifted is False else "insufficient")
    top = [{"feature": n, "importance": v} for n, v in res.importance[:10]]
    reasons = (f"domain classifier AUC {res.auc:.3f} >= {effective:.3f}; separated most by "
               + ", ".join(n for n, _ in res.importance[:3]),) if drifted else ()
    return drift.FeatureDrift(
        MULTIVARIATE_ROW, "multivariate", "domain_classifier", res.auc, None, effective, drifted, res.n_ref,
        res.n_cur, {"auc": res.auc, "fold_aucs": res.fold_aucs, "folds": res.folds, "se0": se0,
                    "policy_threshold": policy.multivariate_threshold, "importance": top, "features": names},
        status, "feature", reasons,
    )


def _attribution(model: str, version: int, ref: ModelReference, feats: pl.DataFrame, rows: int,
                 lake: Lake) -> drift.Attribution | None:
    """Split the window's mean raw-score shift against the holdout into per-feature contribution shifts."""
    from core import registry

    if rows <= 0 or ref.contrib_mean is None or feats.height == 0 or set(ref.kinds) - set(feats.columns):
        return None
    loaded = registry.load(model, version=version, alias=None, lake=lake)
    part = feats if feats.height <= rows else feats.sample(rows, seed=0)
    return drift.attribute(loaded.model.feature_names, ref.contrib_mean, loaded.model.contributions(part),
                           n_ref=ref.contrib_rows)


def drift_history(model: str | None = None, *, last: int = 20, lake: Lake) -> pl.DataFrame:
    """``drift_reports`` rows of the last ``last`` checks (of one model or all), oldest first.

    Adds ``status`` (``ok``, ``drift``, ``no_data``, ``insufficient``) from each row's stats;
    rows written before statuses existed get ``drift``/``ok`` from ``drifted``.
    """
    frame = lake.read_or_empty("drift_reports")
    if model is not None:
        frame = frame.filter(pl.col("model") == model)
    if frame.height == 0:
        return frame.with_columns(pl.lit(None, dtype=pl.String).alias("status"))
    ids = frame.group_by("report_id").agg(pl.col("at").max()).sort("at").tail(last)["report_id"]
    frame = frame.filter(pl.col("report_id").is_in(ids.implode())).sort(["at", "feature"])
    legacy = pl.when(pl.col("drifted")).then(pl.lit("drift")).when(pl.col("drifted").not_()).then(pl.lit("ok"))
    return frame.with_columns(pl.col("stats_json").str.json_path_match("$.status").fill_null(legacy).alias("status"))


def _latest_report(model: str, report_id: str | None, lake: Lake) -> pl.DataFrame:
    frame = drift_history(model, last=10_000 if report_id else 1, lake=lake)
    if report_id is not None:
        frame = frame.filter(pl.col("report_id") == report_id)
    return frame


def feature_status(model: str, *, report_id: str | None = None, lake: Lake) -> pl.DataFrame:
    """Per-feature status and data-quality shares of one check (the latest by default).

    Columns: feature, kind, role, status, test, statistic, threshold, drifted, n_cur, null_share,
    ref_null_share, nonfinite_share, out_of_range_share, new_level_share, reasons.
    """
    frame = _latest_report(model, report_id, lake).filter(~pl.col("feature").is_in([DATASET_ROW, MULTIVARIATE_ROW]))
    rows = []
    for r in frame.iter_rows(named=True):
        st = json.loads(r["stats_json"] or "{}")
        q = st.get("quality") or {}
        rows.append({
            "feature": r["feature"], "kind": r["kind"], "role": st.get("role", "feature"), "status": r["status"],
            "test": r["test"], "statistic": r["statistic"], "threshold": r["threshold"], "drifted": r["drifted"],
            "n_cur": st.get("n_cur"), "null_share": q.get("null_share"), "ref_null_share": q.get("ref_null_share"),
            "nonfinite_share": q.get("nonfinite_share"), "out_of_range_share": q.get("out_of_range_share"),
            "new_level_share": q.get("new_level_share"), "reasons": "; ".join(st.get("reasons") or []),
        })
    schema = {"feature": pl.String, "kind": pl.String, "role": pl.String, "status": pl.String, "test": pl.String,
              "statistic": pl.Float64, "threshold": pl.Float64, "drifted": pl.Boolean, "n_cur": pl.Int64,
              "null_share": pl.Float64, "ref_null_share": pl.Float64, "nonfinite_share": pl.Float64,
              "out_of_range_share": pl.Float64, "new_level_share": pl.Float64, "reasons": pl.String}
    return pl.DataFrame(rows, schema=schema)


def multivariate_over_time(model: str, *, last: int = 50, lake: Lake) -> pl.DataFrame:
    """The domain classifier's AUC per check: at, window_end, auc, threshold, drifted, top (separating features)."""
    frame = drift_history(model, last=last, lake=lake).filter(pl.col("feature") == MULTIVARIATE_ROW)
    top = [", ".join(t["feature"] for t in (json.loads(s or "{}").get("importance") or [])[:3])
           for s in frame["stats_json"].to_list()]
    return frame.select("report_id", "at", "window_end", "window_rows", pl.col("statistic").alias("auc"),
                        "threshold", "drifted").with_columns(pl.Series("top", top, dtype=pl.String))


def attribution_of(model: str, *, report_id: str | None = None, lake: Lake) -> pl.DataFrame:
    """The score-shift attribution of one check (the latest by default), largest shift first.

    Columns: report_id, at, feature, shift (raw-score units; the shifts add up to score_shift),
    share (of the score shift; adds up to 1), reference_mean, current_mean, score_shift.
    """
    frame = _latest_report(model, report_id, lake).filter(pl.col("feature") == SCORE_ROW)
    schema = {"report_id": pl.String(), "at": pl.Datetime("us", "UTC"), "feature": pl.String(), "shift": pl.Float64(),
              "share": pl.Float64(), "reference_mean": pl.Float64(), "current_mean": pl.Float64(), "score_shift": pl.Float64()}
    rows = []
    for r in frame.iter_rows(named=True):
        att = json.loads(r["stats_json"] or "{}").get("attribution")
        if att:
            rows += [{"report_id": r["report_id"], "at": r["at"], "feature": f["feature"], "shift": f["shift"],
                      "share": f["share"], "reference_mean": f["reference_mean"], "current_mean": f["current_mean"],
                      "score_shift": att["score_shift"]} for f in att["features"]]
    return pl.DataFrame(rows, schema=schema)


def feature_distribution(
    model: str, feature: str, *, window_rows: int | None = None, bins: int = 30,
    lake: Lake, settings: Settings,
) -> pl.DataFrame:
    """Reference vs current distribution of one feature (or ``score``) as shares per bin/level.

    Returns columns ``source`` (reference/current), ``bin`` (level, or the bin's lower edge as
    text), ``lower``, ``upper`` (numeric bins) and ``share``.
    """
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
        feats = window_features(frame, [feature])
        cur = feats[feature] if feats.width else pl.Series(feature, [], dtype=pl.Float64)
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
        hist = np.diff(np.searchsorted(vals, edges, side="left"))
        hist[-1] += int(np.count_nonzero(vals == edges[-1]))
        total = max(vals.size, 1)
        rows += [{"source": source, "bin": f"{edges[i]:.4g}", "lower": float(edges[i]), "upper": float(edges[i + 1]),
                  "share": float(hist[i]) / total} for i in range(bins)]
    return pl.DataFrame(rows, schema={"source": pl.String, "bin": pl.String, "lower": pl.Float64, "upper": pl.Float64, "share": pl.Float64})


def event_time(model: str, scan: pl.LazyFrame, lake: Lake) -> pl.Expr:
    """The time a logged prediction is about: its event-time pass-through field when the champion
    declares one and the request sent it, else the serving time ``at``.

    Charts over time use it, so traffic replayed or simulated faster than real time (``lakeops
    simulate`` sends the simulated event time) lands in the buckets of its own period.
    """
    from core import registry

    version = registry.champion_version(model, lake)
    if version is None or PASSTHROUGH_COLUMN not in scan.collect_schema().names():
        return pl.col("at")
    sig = registry.get_version(model, version, lake=lake).signature
    names = [p.name for p in sig.passthrough if p.role == "event_time" and p.type == "datetime"]
    dtype = scan.collect_schema()[PASSTHROUGH_COLUMN]
    fields = [f.name for f in dtype.fields] if isinstance(dtype, pl.Struct) else []
    if not names or names[0] not in fields:
        return pl.col("at")
    return pl.coalesce(pl.col(PASSTHROUGH_COLUMN).struct.field(names[0]), pl.col("at"))


def score_over_time(model: str, *, every: str = "1h", lake: Lake) -> pl.DataFrame:
    """Score distribution per time bucket: ``bucket, model_version, n, mean, p10, p25, p50, p75, p90``.

    The bucket is of the event time when the model declares an event-time pass-through field and
    requests send it (``event_time``), else of the serving time.
    """
    if not lake.exists(_table(model)):
        return pl.DataFrame()
    s = pl.col("score")
    scan = log_scan(model, lake)
    return (
        scan
        .group_by(event_time(model, scan, lake).dt.truncate(every).alias("bucket"), "model_version")
        .agg(pl.len().alias("n"), s.mean().alias("mean"), *[s.quantile(q / 100).alias(f"p{q}") for q in (10, 25, 50, 75, 90)])
        .sort("bucket")
        .collect()
    )


