"""The monitoring use cases: check drift, check performance, and retrain through the same gate.

Jobs (``jobs/``), the CLI (``lakeops drift check``, ``lakeops alerts list``) and the demo call
these. A check writes its report, then opens an alert when its condition holds (once per
episode: the alert is de-duplicated by fingerprint) or resolves it when the condition clears.
``retrain`` appends the labelled feedback to the champion's dataset (a new, validated version),
trains with the champion's recorded training params and seed, registers the new version, gates
it against the champion on the same holdout and promotes it when the policy says
``auto_promote = true``; otherwise the version waits for a human approval/promotion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl

from core import monitoring
from core.config import Settings, load_settings
from core.lake import Lake, resolve
from core.monitoring import DriftReport, EstimateReport, PerformanceReport

__all__ = [
    "RetrainOutcome",
    "alerts_open",
    "check_drift",
    "check_estimated_performance",
    "check_performance",
    "ingest_feedback",
    "retrain",
    "retrain_if_needed",
]

_FEEDBACK_SOURCE = "feedback:{model}:"


@dataclass(frozen=True)
class RetrainOutcome:
    """What one retrain did: data, run, new version, gate and promotion decision."""

    model: str
    reason: str
    champion_before: int | None
    dataset: str
    dataset_version: int
    rows_added: int
    run_id: str
    version: int
    metrics: dict[str, float]
    gate_passed: bool
    promoted: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able outputs (for ``job_runs``)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _drift_message(rep: DriftReport) -> str:
    assert rep.result is not None
    feats = rep.result.drifted_features
    score_drifted = rep.score is not None and rep.score.drifted
    multi = rep.multivariate
    head = "data drift" if rep.result.drifted else ("prediction drift" if score_drifted else "multivariate drift")
    share = "no feature could be compared" if rep.result.drifted is None else (
        f"share {rep.result.share:.2f} {'>=' if rep.result.drifted else '<'} {rep.result.share_threshold:.2f}")
    compared = sum(f.status in ("ok", "drift") and f.counted for f in rep.result.features)
    score = "; the score distribution drifted" if score_drifted else ""
    if score_drifted and rep.attribution is not None and rep.attribution.features:
        score += " (moved most by " + ", ".join(
            f"{f['feature']} {float(f['share']):+.0%}" for f in rep.attribution.top(3)) + ")"
    mv = ""
    if multi is not None and multi.drifted:
        mv = (f"; a domain classifier tells the window from the reference (AUC {multi.statistic:.3f} >= "
              f"{multi.threshold:.3f})")
    return (
        f"{head} on model {rep.model!r} v{rep.model_version}: {len(feats)} of {compared} compared features "
        f"drifted ({share}){score}{mv}" + (f": {', '.join(feats)}" if feats else "")
    )


def _quality_evidence(rep: DriftReport) -> list[dict[str, Any]]:
    """Counted features with no data now (but some in the reference) or broken quality tolerances."""
    assert rep.result is not None
    out = []
    for f in rep.result.features:
        if not f.counted:
            continue
        no_data = f.status == "no_data" and f.no_data_side == "current"
        flags = list((f.quality or {}).get("flags") or [])
        if no_data or flags:
            out.append({"feature": f.feature, "status": f.status, "flags": (["no_data"] if no_data else []) + flags,
                        "reasons": list(f.reasons), "quality": f.quality})
    return out


def _sync_feature_alert(kind: str, model: str, features: list[str], message: str, evidence: dict[str, Any],
                        severity: str, rep: DriftReport, lake: Lake, settings: Settings) -> str | None:
    """Keep one open ``kind`` alert per set of affected features: a new set opens its own alert (so a
    second column going empty is not hidden behind an ongoing one) and resolves the previous set's."""
    current = f"{kind}:{model}:" + ",".join(sorted(features)) if features else None
    result = None
    stale = monitoring.alerts(model, lake=lake).filter((pl.col("kind") == kind) & (pl.col("fingerprint") != (current or "")))
    for fp in stale["fingerprint"].to_list():
        done = monitoring.resolve_alert(
            kind, model, fingerprint=fp, lake=lake, settings=settings,
            message=f"{kind} on model {model!r}: {'now ' + ', '.join(features) if features else 'cleared'} "
                    f"(report {rep.report_id})",
            evidence={"report_id": rep.report_id, "model_version": rep.model_version, "features": features})
        result = "resolved" if done else result
    if current is not None:
        opened = monitoring.raise_alert(kind, model, message=message, evidence=evidence, severity=severity,
                                        fingerprint=current, lake=lake, settings=settings)
        result = "opened" if opened else "ongoing"
    return result


def check_drift(
    model: str,
    *,
    window_rows: int | None = None,
    window_hours: float | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> DriftReport:
    """Run a drift check (``core.monitoring.check_drift``) and open or resolve its alerts.

    Three conditions, three alerts: ``drift`` (the verdict), ``no_data`` (a counted feature populated
    in the reference has no usable value in the window; critical) and ``data_quality`` (a counted
    feature broke a data-quality tolerance: more nulls, NaN/inf, values out of the reference
    range, new levels). The last two are keyed by the set of affected features, so a feature
    joining the set is alerted rather than hidden behind an ongoing alert. The drift
    alert's evidence names the drifted features, the score shift's top contributing features and
    the domain classifier's separating features.

    Returns:
        The report, with ``alert`` (drift) and ``quality_alert`` (no_data, else data_quality) =
        ``opened``, ``ongoing``, ``resolved`` or None.
    """
    lake = resolve(lake)
    settings = settings or load_settings()
    rep = monitoring.check_drift(model, window_rows=window_rows, window_hours=window_hours, lake=lake, settings=settings, now=now)
    if rep.status != "ok" or rep.result is None:
        return rep
    quality = _quality_evidence(rep)
    empty = [q for q in quality if "no_data" in q["flags"]]
    flagged = [q for q in quality if "no_data" not in q["flags"]]  # an empty column is the no_data alert's
    window_ev = {"rows": rep.window_rows, "start": str(rep.window_start), "end": str(rep.window_end)}
    got = _sync_feature_alert(
        "no_data", model, [q["feature"] for q in empty],
        f"no data on model {model!r} v{rep.model_version}: " + ", ".join(q["feature"] for q in empty)
        + " had values in the reference and none usable in the window", {
            "report_id": rep.report_id, "model_version": rep.model_version, "features": empty, "window": window_ev},
        "critical", rep, lake, settings)
    got_q = _sync_feature_alert(
        "data_quality", model, [q["feature"] for q in flagged],
        f"data quality on model {model!r} v{rep.model_version}: "
        + ", ".join(f"{q['feature']} ({'/'.join(q['flags'])})" for q in flagged), {
            "report_id": rep.report_id, "model_version": rep.model_version, "features": flagged, "window": window_ev},
        "warning", rep, lake, settings)
    rep = replace(rep, quality_alert=got or got_q)
    if rep.drifted is None:
        return rep  # nothing could be compared: the data-quality alert says why; the drift alert stays as it is
    if rep.drifted:
        evidence = {
            "report_id": rep.report_id,
            "model_version": rep.model_version,
            "window": {"rows": rep.window_rows, "start": str(rep.window_start), "end": str(rep.window_end)},
            "reference": {"dataset": rep.reference_dataset, "version": rep.reference_version},
            "share": rep.result.share,
            "share_threshold": rep.result.share_threshold,
            "features": [
                {"feature": f.feature, "test": f.test, "statistic": f.statistic, "p_value": f.p_value,
                 "threshold": f.threshold, "reasons": list(f.reasons)}
                for f in rep.result.features if f.status == "drift" and f.counted
            ],
            "expected_drift": [
                {"feature": f.feature, "status": f.status, "statistic": f.statistic}
                for f in rep.result.features if not f.counted
            ],
            "score": None if rep.score is None else {"test": rep.score.test, "statistic": rep.score.statistic, "drifted": rep.score.drifted},
            "attribution": None if rep.attribution is None else {
                "score_shift": rep.attribution.score_shift, "rows": [rep.attribution.n_ref, rep.attribution.n_cur],
                "top": rep.attribution.top(5)},
            "multivariate": None if rep.multivariate is None else {
                "auc": rep.multivariate.statistic, "threshold": rep.multivariate.threshold,
                "drifted": rep.multivariate.drifted, "top": rep.multivariate.stats.get("importance", [])[:5]},
        }
        opened = monitoring.raise_alert("drift", model, message=_drift_message(rep), evidence=evidence,
                                        severity="warning", lake=lake, settings=settings)
        return replace(rep, alert="opened" if opened else "ongoing")
    resolved = monitoring.resolve_alert(
        "drift", model, message=f"drift on model {model!r} cleared (report {rep.report_id}, share {rep.result.share:.2f})",
        evidence={"report_id": rep.report_id, "model_version": rep.model_version, "share": rep.result.share},
        lake=lake, settings=settings,
    )
    return replace(rep, alert="resolved" if resolved else None)


def check_performance(
    model: str, *, window_hours: float | None = None, lake: Lake | None = None,
    settings: Settings | None = None, now: datetime | None = None,
) -> PerformanceReport:
    """Run a performance check on labelled predictions and open or resolve the performance alert.

    The estimated performance of the latest window (CBPE, ``check_estimated_performance``) runs
    with it, so the scheduled performance job also speaks before the labels arrive; its report
    is ``PerformanceReport.estimate``.
    """
    lake = resolve(lake)
    settings = settings or load_settings()
    rep = monitoring.check_performance(model, window_hours=window_hours, lake=lake, settings=settings, now=now)
    rep = replace(rep, estimate=check_estimated_performance(model, lake=lake, settings=settings, now=now))
    if rep.degraded is None:
        return rep
    evidence = {
        "model_version": rep.model_version, "metric": rep.metric, "value": rep.value, "baseline": rep.baseline,
        "baseline_source": rep.baseline_source, "tolerance": rep.tolerance, "labelled": rep.labelled,
        "predictions": rep.predictions, "coverage": rep.coverage, "metrics": rep.metrics,
        "window": {"start": str(rep.window_start), "end": str(rep.window_end)},
    }
    if rep.degraded:
        msg = (
            f"performance of model {model!r} v{rep.model_version} dropped: {rep.metric} {rep.value:.4f} on "
            f"{rep.labelled} labelled predictions vs {rep.baseline:.4f} at the {rep.baseline_source} "
            f"(tolerance {rep.tolerance})"
        )
        opened = monitoring.raise_alert("performance", model, message=msg, evidence=evidence, severity="critical",
                                        lake=lake, settings=settings)
        return replace(rep, alert="opened" if opened else "ongoing")
    resolved = monitoring.resolve_alert(
        "performance", model, message=f"performance of model {model!r} back within tolerance ({rep.metric} {rep.value:.4f})",
        evidence=evidence, lake=lake, settings=settings,
    )
    return replace(rep, alert="resolved" if resolved else None)


def check_estimated_performance(
    model: str, *, window_rows: int | None = None, window_hours: float | None = None, lake: Lake | None = None,
    settings: Settings | None = None, now: datetime | None = None,
) -> EstimateReport:
    """Estimate performance before labels (``core.monitoring.estimate_performance``); open or resolve its alert.

    The ``estimated_performance`` alert opens when the policy metric's estimate is worse than its
    gate-time value by more than ``estimate_tolerance``, and resolves when it is back.
    """
    lake = resolve(lake)
    settings = settings or load_settings()
    rep = monitoring.estimate_performance(model, window_rows=window_rows, window_hours=window_hours, lake=lake,
                                          settings=settings, now=now)
    est = rep.estimate
    if rep.degraded is None or est is None:
        return rep
    evidence = {
        "report_id": rep.report_id, "model_version": rep.model_version, "metric": rep.metric,
        "estimate": est.value, "lower": est.lower, "upper": est.upper, "sampling_error": est.sampling_error,
        "baseline": rep.baseline, "baseline_source": rep.baseline_source, "tolerance": rep.tolerance,
        "realised": rep.realised.get(rep.metric), "labelled": rep.labelled, "calibrated": rep.calibrated,
        "estimates": {k: e.as_dict() for k, e in rep.estimates.items()},
        "window": {"rows": rep.window_rows, "start": str(rep.window_start), "end": str(rep.window_end)},
    }
    if rep.degraded:
        msg = (
            f"estimated performance of model {model!r} v{rep.model_version} dropped: {rep.metric} about "
            f"{est.value:.4f} (band {est.lower:.4f}-{est.upper:.4f}) on the last {rep.window_rows} predictions "
            f"vs {rep.baseline:.4f} at the {rep.baseline_source} (tolerance {rep.tolerance}); estimated from the "
            f"scores before labels arrive ({rep.labelled} labelled so far)"
        )
        opened = monitoring.raise_alert("estimated_performance", model, message=msg, evidence=evidence,
                                        severity="warning", lake=lake, settings=settings)
        return replace(rep, alert="opened" if opened else "ongoing")
    resolved = monitoring.resolve_alert(
        "estimated_performance", model,
        message=f"estimated performance of model {model!r} back within tolerance ({rep.metric} about {est.value:.4f})",
        evidence=evidence, lake=lake, settings=settings,
    )
    return replace(rep, alert="resolved" if resolved else None)


def alerts_open(model: str | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """The currently open alerts (one row per condition), newest first."""
    return monitoring.alerts(model, status="open", lake=lake)


# ---------------------------------------------------------------------------- retraining
def _watermark(dataset: str, model: str, lake: Lake) -> datetime | None:
    from core import datasets

    prefix = _FEEDBACK_SOURCE.format(model=model)
    rows = datasets.versions(dataset, lake=lake).filter(pl.col("source").str.starts_with(prefix))
    if rows.height == 0:
        return None
    return max(datetime.fromisoformat(s[len(prefix):]) for s in rows["source"].to_list())


def _labelled_rows(model: str, schema: dict[str, pl.DataType], *, target: str, time_column: str | None,
                   since: datetime | None, lake: Lake) -> tuple[pl.DataFrame, datetime | None]:
    """Predictions with feedback labels newer than ``since``, shaped like the dataset's rows."""
    if not lake.exists(f"predictions/{model}") or not lake.exists("feedback"):
        return pl.DataFrame(schema=schema), None
    fb = lake.read("feedback", columns=["prediction_id", "model", "label", "at"])
    fb = fb.filter(pl.col("model").is_null() | (pl.col("model") == model))
    if since is not None:
        fb = fb.filter(pl.col("at") > since)
    if fb.height == 0:
        return pl.DataFrame(schema=schema), None
    fb = fb.sort("at").unique("prediction_id", keep="last")
    log = monitoring.log_scan(model, lake)
    preds = log.select("prediction_id", "at", pl.col("features").struct.unnest()).join(
        fb.lazy().select("prediction_id", pl.col("label").alias("__truth"), pl.col("at").alias("__fb_at")),
        on="prediction_id", how="inner",
    ).collect()
    if preds.height == 0:
        return pl.DataFrame(schema=schema), None
    exprs = []
    for col, dtype in schema.items():
        if col == target:
            exprs.append(pl.col("__truth").cast(dtype, strict=False).alias(col))
        elif col == time_column:
            exprs.append(pl.col("at").cast(dtype, strict=False).alias(col))
        elif col in preds.columns and col not in ("prediction_id", "at"):
            exprs.append(pl.col(col).cast(dtype, strict=False).alias(col))
        elif dtype == pl.String:
            exprs.append(pl.col("prediction_id").alias(col))  # an id column: the prediction id is unique
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(col))
    return preds.select(exprs), preds["__fb_at"].max()  # type: ignore[return-value]


def ingest_feedback(model: str, *, dataset: str, target: str, time_column: str | None = None,
                    lake: Lake | None = None, settings: Settings | None = None) -> tuple[int, int]:
    """Append the labelled predictions not yet in ``dataset`` as a new validated version.

    Returns:
        ``(dataset_version, rows_added)``; the latest version and 0 when there is nothing new.

    Raises:
        DataValidationError: the batch broke the dataset's rules (it is then in quarantine).
    """
    from core import datasets

    lake = resolve(lake)
    settings = settings or load_settings()
    table = datasets.table_name(dataset)
    schema = dict(lake.scan(table).collect_schema())
    since = _watermark(dataset, model, lake)
    rows, upto = _labelled_rows(model, schema, target=target, time_column=time_column, since=since, lake=lake)
    if rows.height == 0 or upto is None:
        return datasets.latest_version(dataset, lake=lake), 0
    dv = datasets.ingest(dataset, rows, lake=lake, settings=settings, actor=settings.actor,
                         source=_FEEDBACK_SOURCE.format(model=model) + upto.isoformat())
    return dv.version, rows.height


def retrain(model: str, *, reason: str, lake: Lake | None = None, settings: Settings | None = None) -> RetrainOutcome:
    """Retrain ``model`` on its dataset plus the labelled feedback, gate it, promote if the policy allows.

    The training params, seed, time column and exclusions are the champion's run's; the gate
    scores the candidate and the champion on the candidate's holdout (``core.flows.promote``).

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
        DataValidationError: the feedback batch failed validation (nothing trained).
        TrainingError: training could not run.
    """
    from core import registry, tracking
    from core.flows import promote as promote_flow
    from core.flows.train import train_model

    lake = resolve(lake)
    settings = settings or load_settings()
    mv = monitoring.champion(model, lake=lake)
    run = tracking.get_run(mv.run_id, lake=lake)
    target = run.params.get("target") or mv.signature["target"]
    time_column = run.params.get("time_column") or None
    version, added = ingest_feedback(model, dataset=mv.dataset_name, target=target, time_column=time_column, lake=lake, settings=settings)
    outcome = train_model(
        mv.dataset_name, target=target, version=version, params=json.loads(run.params.get("train_params") or "{}"),
        seed=int(run.seed or 0), experiment=run.experiment, name=f"retrain {model} on {mv.dataset_name}@v{version}",
        task=run.params.get("task"), time_column=time_column, exclude=json.loads(run.params.get("exclude") or "[]"),
        tags={"trigger": "retrain", "reason": reason[:500], "model": model}, lake=lake,
    )
    new = registry.register(model, outcome.run_id, description=f"retrain: {reason}"[:1000],
                            tags={"trigger": "retrain"}, actor=settings.actor, lake=lake)
    decision = promote_flow.evaluate_and_maybe_promote(model, new.version, reason=f"automatic retrain: {reason}"[:1000],
                                                       actor=settings.actor, lake=lake, settings=settings)
    return RetrainOutcome(
        model=model, reason=reason, champion_before=mv.version, dataset=mv.dataset_name, dataset_version=version,
        rows_added=added, run_id=outcome.run_id, version=new.version, metrics=dict(outcome.metrics),
        gate_passed=decision.report.passed, promoted=decision.promoted, why=decision.why,
    )


def retrain_if_needed(model: str, *, lake: Lake | None = None, settings: Settings | None = None) -> RetrainOutcome | None:
    """Retrain when a drift or performance alert is open and no model version was registered since it opened.

    Waits (returns None) while fewer than ``min_labels`` new labelled predictions exist, so a
    retrain actually sees the new period.
    """
    from core import registry

    lake = resolve(lake)
    settings = settings or load_settings()
    open_ = alerts_open(model, lake=lake).filter(pl.col("kind").is_in(["drift", "performance"]))
    if open_.height == 0:
        return None
    since = open_["opened_at"].min()
    versions = registry.versions(model, lake=lake)
    if versions.filter(pl.col("created_at") > since).height:
        return None  # this episode was already retrained for (gate result is in the registry)
    mv = monitoring.champion(model, lake=lake)
    cfg = monitoring.monitor_config(model, settings)
    joined, _ = monitoring.labelled_window(model, lake=lake)
    wm = _watermark(mv.dataset_name, model, lake)
    fresh = joined.filter(pl.col("labelled_at") > wm).height if wm is not None else joined.height
    if fresh < cfg.min_labels:
        return None
    return retrain(model, reason=open_["message"][0], lake=lake, settings=settings)
