"""Monitoring: windows over prediction logs, stored drift references, drift reports, performance with delayed labels, alerts.

A drift check compares a window of ``predictions/<model>`` (the last N rows or hours answered by
the champion) with the champion's reference: its training dataset version (by default the
holdout part, i.e. the most recent rows when the split is by time, which is what the gate
measured; ``reference = "all"`` takes every row) plus the champion's scores on that holdout.
The reference distributions are computed once per champion version and stored in the lake
(``artifacts/drift/<model>/v<version>/reference.npz``, listed in ``drift_references``), so a
check only reads the window and the stored arrays. Each check writes one ``drift_reports`` row
per feature, one for ``score`` and one ``__dataset__`` verdict, in one commit.

Performance joins ``feedback`` labels to the champion's predictions (only labelled rows count;
their number and share are reported), computes ``core.training.compute_metrics`` and compares
the policy metric with its gate-time value (the champion's latest gate report, else its
registered validation metrics).

Alerts are ``alerts`` rows keyed by a fingerprint (``drift:<model>``, ``performance:<model>``):
a condition opens one alert, repeats while it persists write nothing, and its clearing writes a
``resolved`` row. Opening and resolving POST the row as JSON to ``[alerts] webhook_url`` if set.

Configuration (all optional)::

    [models.churn.monitoring]
    window_rows = 5000        # default drift window (or window_hours = 24)
    min_rows = 200            # fewer rows in a window: no verdict
    reference = "holdout"     # or "all"
    metric = "auc"            # performance metric (default: the task's gate metric)
    tolerance = 0.05          # alert when the metric is worse than at the gate by more than this
    min_labels = 200          # fewer labelled predictions: no performance verdict
    performance_window_hours = 168
    [models.churn.drift]      # drift tests and thresholds, see core.drift.DriftPolicy
    [alerts]
    webhook_url = "http://127.0.0.1:9000/hook"
    timeout_s = 5
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from core import drift
from core.config import Settings, load_settings
from core.errors import ConfigError, ModelVersionNotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake, resolve

__all__ = [
    "DATASET_ROW",
    "SCORE_ROW",
    "Alert",
    "DriftReport",
    "ModelReference",
    "MonitorConfig",
    "PerformanceReport",
    "alert_history",
    "alerts",
    "champion",
    "check_drift",
    "check_performance",
    "drift_history",
    "feature_distribution",
    "labelled_window",
    "monitor_config",
    "performance_over_time",
    "raise_alert",
    "reference",
    "resolve_alert",
    "score_over_time",
    "window",
]

_log = logging.getLogger("lakeops.monitoring")
SCORE_ROW = "score"
DATASET_ROW = "__dataset__"
_CACHE: dict[tuple[str, str], drift.Reference | dict[str, Any]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 8


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class MonitorConfig:
    """A model's monitoring settings (see the module docstring for the TOML keys)."""

    window_rows: int | None = 5000
    window_hours: float | None = None
    min_rows: int = 200
    reference: str = "holdout"
    metric: str | None = None
    tolerance: float = 0.05
    min_labels: int = 200
    performance_window_hours: float = 168.0
    policy: drift.DriftPolicy = field(default_factory=drift.DriftPolicy)
    webhook_url: str | None = None
    webhook_timeout_s: float = 5.0


_MON_KEYS = {
    "window_rows", "window_hours", "min_rows", "reference", "metric", "tolerance", "min_labels",
    "performance_window_hours",
}


def monitor_config(model: str, settings: Settings | None = None) -> MonitorConfig:
    """Read ``[models.<model>.monitoring]``, ``[drift]``, ``[models.<model>.drift]`` and ``[alerts]``.

    Raises:
        ConfigError: an unknown key or a bad value, named.
    """
    settings = settings or load_settings()
    where = f"[models.{model}.monitoring]"
    mon = settings.section(f"models.{model}.monitoring")
    bad = set(mon) - _MON_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}; known: {', '.join(sorted(_MON_KEYS))}")
    alerts_sec = settings.section("alerts")
    try:
        cfg = MonitorConfig(
            window_rows=None if mon.get("window_hours") and "window_rows" not in mon else int(mon.get("window_rows", 5000)),
            window_hours=float(mon["window_hours"]) if mon.get("window_hours") else None,
            min_rows=int(mon.get("min_rows", 200)),
            reference=str(mon.get("reference", "holdout")),
            metric=mon.get("metric"),
            tolerance=float(mon.get("tolerance", 0.05)),
            min_labels=int(mon.get("min_labels", 200)),
            performance_window_hours=float(mon.get("performance_window_hours", 168.0)),
            policy=drift.DriftPolicy.from_config(settings.section("drift"), settings.section(f"models.{model}.drift")),
            webhook_url=alerts_sec.get("webhook_url") or None,
            webhook_timeout_s=float(alerts_sec.get("timeout_s", 5.0)),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: invalid value ({exc})") from None
    if cfg.reference not in ("holdout", "all"):
        raise ConfigError(f"{where} reference must be 'holdout' or 'all', got {cfg.reference!r}")
    if cfg.min_rows < 1 or cfg.min_labels < 1 or cfg.tolerance < 0:
        raise ConfigError(f"{where}: min_rows and min_labels must be >= 1 and tolerance >= 0")
    return cfg


def champion(model: str, *, lake: Lake | None = None) -> Any:
    """Return the champion's ``core.registry.ModelVersion``.

    Raises:
        ModelNotFoundError: unknown model.
        ModelVersionNotFoundError: the model has no champion yet.
    """
    from core import registry

    lake = resolve(lake)
    registry.versions(model, lake=lake)  # unknown model -> ModelNotFoundError
    version = registry.champion_version(model, lake)
    if version is None:
        raise ModelVersionNotFoundError(
            f"model {model!r} has no champion, so there is nothing to monitor; promote a version first "
            f"('lakeops models promote {model} VERSION --reason ...')"
        )
    return registry.get_version(model, version, lake=lake)


# ---------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ModelReference:
    """The stored reference of one champion version: feature distributions and its holdout scores."""

    model: str
    model_version: int
    dataset: str
    dataset_version: int
    rows: int
    kinds: dict[str, str]
    features: dict[str, drift.Reference]
    score: drift.NumericReference
    path: str


def _reference_frame(mv: Any, mode: str, lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(feature reference rows, holdout rows) of a model version's training dataset version."""
    from core import datasets, tracking, training

    if not mv.dataset_name or mv.dataset_version is None:
        raise ModelVersionNotFoundError(
            f"model {mv.model!r} v{mv.version} has no dataset lineage; register a model trained from a dataset"
        )
    frame = datasets.load(mv.dataset_name, mv.dataset_version, lake=lake)
    target = mv.signature.get("target")
    params: dict[str, str] = {}
    seed = 0
    if mv.run_id:
        run = tracking.get_run(mv.run_id, lake=lake)
        params, seed = run.params, int(run.seed or 0)
    if target in frame.columns:
        frame = frame.filter(pl.col(target).is_not_null())
    time_column = params.get("time_column", mv.signature.get("time_column")) or None
    fraction = float(params.get("valid_fraction", 0.2))
    _, holdout = training.split(frame, target, time_column=time_column, seed=seed, valid_fraction=fraction)
    return (holdout if mode == "holdout" else frame), holdout


def reference(model: str, *, version: int | None = None, lake: Lake | None = None, settings: Settings | None = None) -> ModelReference:
    """Return the stored reference of ``model`` (the champion by default), building it once.

    The first call for a version reads its training dataset version, scores the holdout with
    the model, builds the sorted values / quantile edges / category counts and stores them;
    later calls (any process) read the stored arrays, checked by sha256, cached in memory.
    """
    from core import registry

    lake = resolve(lake)
    mv = registry.get_version(model, version, lake=lake) if version is not None else champion(model, lake=lake)
    path = f"artifacts/drift/{model}/v{mv.version}/reference.npz"
    known = lake.read_or_empty("drift_references").filter(
        (pl.col("model") == model) & (pl.col("model_version") == mv.version)
    )
    if known.height:
        row = known.sort("at").row(-1, named=True)
        key = (lake.uri, row["path"])
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is None:
            data = lake.get_bytes(row["path"])
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                _log.warning("drift reference %s does not match its sha256; rebuilding it", row["path"])
            else:
                cached = {"row": row, "refs": drift.reference_from_bytes(data)}
                _remember(key, cached)
        if cached is not None:
            return _model_reference(model, mv, cached["row"], cached["refs"])  # type: ignore[index]
    cfg = monitor_config(model, settings)
    ref_frame, holdout = _reference_frame(mv, cfg.reference, lake)
    feats = mv.signature.get("features", [])
    numeric = [f["name"] for f in feats if f["kind"] == "numeric" and f["name"] in ref_frame.columns]
    categorical = [f["name"] for f in feats if f["kind"] == "categorical" and f["name"] in ref_frame.columns]
    refs = drift.build_reference(ref_frame, numeric=numeric, categorical=categorical, bins=cfg.policy.bins)
    loaded = registry.load(model, version=mv.version, alias=None, lake=lake)
    refs[SCORE_ROW] = drift.NumericReference.from_values(loaded.model.predict(holdout), bins=cfg.policy.bins)
    data = drift.reference_to_bytes(refs)
    lake.put_bytes(path, data)
    kinds = {**{c: "numeric" for c in numeric}, **{c: "categorical" for c in categorical}}
    row = {
        "reference_id": new_id(), "kind": cfg.reference, "dataset": mv.dataset_name,
        "dataset_version": mv.dataset_version, "model": model, "model_version": mv.version,
        "rows": ref_frame.height, "columns_json": json.dumps(kinds), "path": path,
        "sha256": hashlib.sha256(data).hexdigest(), "at": utcnow(),
    }
    lake.append("drift_references", [row], metadata={"model": model, "model_version": mv.version})
    _remember((lake.uri, path), {"row": row, "refs": refs})
    return _model_reference(model, mv, row, refs)


def _remember(key: tuple[str, str], value: dict[str, Any]) -> None:
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = value


def _model_reference(model: str, mv: Any, row: Mapping[str, Any], refs: Mapping[str, drift.Reference]) -> ModelReference:
    kinds = json.loads(row["columns_json"])
    score = refs[SCORE_ROW]
    assert isinstance(score, drift.NumericReference)
    return ModelReference(
        model, int(mv.version), str(row["dataset"]), int(row["dataset_version"]), int(row["rows"]), kinds,
        {k: refs[k] for k in kinds}, score, str(row["path"]),
    )


# ---------------------------------------------------------------------------- windows
def _table(model: str) -> str:
    return f"predictions/{model}"


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
    model has no prediction log yet.
    """
    lake = resolve(lake)
    if not lake.exists(_table(model)):
        return pl.DataFrame()
    scan = lake.scan(_table(model))
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


# ---------------------------------------------------------------------------- drift check
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
        "stats_json": json.dumps({**f.stats, "n_ref": f.n_ref, "n_cur": f.n_cur}, default=_json_num), "at": at,
    }


def _json_num(value: Any) -> Any:
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
    result = drift.compare(ref.features, frame, cfg.policy)
    score = drift.check_column(SCORE_ROW, ref.score, frame["score"], cfg.policy)
    score = replace(score, kind="score")
    win = (frame["at"].min(), frame["at"].max(), frame.height)
    at = now or utcnow()
    rows = [_row(rep_id, model, mv.version, win, ref, f, at) for f in [*result.features, score]]
    verdict = drift.FeatureDrift(DATASET_ROW, "dataset", "share", result.share, None, result.share_threshold,
                                 result.drifted, ref.rows, frame.height,
                                 {"drifted_features": result.drifted_features, "score_drifted": score.drifted})
    rows.append(_row(rep_id, model, mv.version, win, ref, verdict, at))
    lake.append("drift_reports", rows, metadata={"actor": actor or settings.actor, "model": model, "report_id": rep_id})
    return DriftReport(rep_id, model, mv.version, "ok", frame.height, win[0], win[1], ref.dataset,
                       ref.dataset_version, result, score, result.drifted)


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
    cur = frame[feature] if frame.height else pl.Series(feature, [], dtype=pl.Float64)
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
        lake.scan(_table(model))
        .group_by(pl.col("at").dt.truncate(every).alias("bucket"), "model_version")
        .agg(pl.len().alias("n"), s.mean().alias("mean"), *[s.quantile(q / 100).alias(f"p{q}") for q in (10, 25, 50, 75, 90)])
        .sort("bucket")
        .collect()
    )


# ---------------------------------------------------------------------------- performance
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
    preds = lake.scan(_table(model)).select("prediction_id", "at", "model_version", "score").collect()
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


# ---------------------------------------------------------------------------- alerts
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
    return latest.rename({"at": "opened_at"}).sort("opened_at", descending=True).select(
        "alert_id", "kind", "severity", "model", "message", "payload_json", "fingerprint", "status", "opened_at"
    )


def _current(fingerprint: str, lake: Lake) -> str | None:
    frame = lake.read_or_empty("alerts", columns=["fingerprint", "status", "at"]).filter(pl.col("fingerprint") == fingerprint)
    return frame.sort("at")["status"][-1] if frame.height else None


def _write_alert(lake: Lake, alert: Alert, settings: Settings | None) -> None:
    lake.append("alerts", [{
        "alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity, "model": alert.model,
        "message": alert.message, "payload_json": json.dumps(alert.evidence, default=_json_num),
        "fingerprint": alert.fingerprint, "status": alert.status, "at": alert.at,
    }], metadata={"model": alert.model or "", "alert": alert.fingerprint, "status": alert.status})
    cfg = monitor_config(alert.model or "_", settings) if alert.model else None
    url = cfg.webhook_url if cfg else (settings or load_settings()).section("alerts").get("webhook_url")
    if url:
        _post(url, alert, cfg.webhook_timeout_s if cfg else 5.0)


def _post(url: str, alert: Alert, timeout: float) -> bool:
    """POST the alert as JSON; a failing webhook is logged, never raised (the row is the record)."""
    import httpx

    body = {"alert_id": alert.alert_id, "kind": alert.kind, "severity": alert.severity, "model": alert.model,
            "message": alert.message, "evidence": alert.evidence, "fingerprint": alert.fingerprint,
            "status": alert.status, "at": alert.at.isoformat()}
    try:
        resp = httpx.post(url, content=json.dumps(body, default=_json_num), headers={"content-type": "application/json"}, timeout=timeout)
        resp.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        _log.warning("alert webhook %s failed: %s", url, exc)
        return False


def raise_alert(
    kind: str, model: str | None, *, message: str, evidence: Mapping[str, Any], severity: str = "warning",
    fingerprint: str | None = None, lake: Lake | None = None, settings: Settings | None = None,
) -> Alert | None:
    """Open an alert unless the same condition (fingerprint) is already open; return the new row or None."""
    lake = resolve(lake)
    fp = fingerprint or f"{kind}:{model}"
    if _current(fp, lake) == "open":
        return None
    alert = Alert(new_id(), kind, severity, model, message, dict(evidence), fp, "open", utcnow())
    _write_alert(lake, alert, settings)
    return alert


def resolve_alert(
    kind: str, model: str | None, *, message: str, evidence: Mapping[str, Any] | None = None,
    fingerprint: str | None = None, lake: Lake | None = None, settings: Settings | None = None,
) -> Alert | None:
    """Write a ``resolved`` row when the condition's alert is open; return it, or None if nothing was open."""
    lake = resolve(lake)
    fp = fingerprint or f"{kind}:{model}"
    if _current(fp, lake) != "open":
        return None
    alert = Alert(new_id(), kind, "info", model, message, dict(evidence or {}), fp, "resolved", utcnow())
    _write_alert(lake, alert, settings)
    return alert
