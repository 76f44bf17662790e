"""The monitoring use cases: check drift, check performance, and retrain through the same gate.

Jobs (``jobs/``), the CLI (``lakeops drift check``, ``lakeops alerts list``) and the demo call
these. A check writes its report, then opens an alert when its condition holds (once per
episode: the alert is de-duplicated by fingerprint) or resolves it when the condition clears.
``retrain`` records the labelled traffic as a new version of ``<model>_served`` (never written
into the source dataset), trains on the source data plus the older labelled traffic with the
champion's recorded params, seed and pass-through fields, holds out the newest labelled traffic,
registers the new version, gates it against the champion on that holdout and promotes it when
the policy allows; otherwise the version waits for a human approval/promotion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl

from core import monitoring
from core.catalog import prediction_table
from core.config import Settings
from core.errors import TrainingError
from core.lake import Lake
from core.monitoring import DriftReport, EstimateReport, PerformanceReport

__all__ = [
    "RetrainOutcome",
    "alerts_open",
    "check_drift_and_alert",
    "check_estimated_performance",
    "check_performance_and_alert",
    "record_served",
    "retrain",
    "retrain_if_needed",
    "stated_reason",
]

# A person's reason for a retrain they started by hand, carried through the job catalog (which
# passes its targets only lake, settings and trigger) to the audit events the retrain writes.
_STATED_REASON: ContextVar[str | None] = ContextVar("lakeops_stated_reason", default=None)


@contextmanager
def stated_reason(reason: str | None) -> Iterator[None]:
    """Within the block, a ``retrain`` records ``reason`` (a person's) instead of its caller's generic one."""
    token = _STATED_REASON.set(reason)
    try:
        yield
    finally:
        _STATED_REASON.reset(token)


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
    served_dataset: str = ""
    served_version: int = 0
    holdout_rows: int = 0

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


def check_drift_and_alert(
    model: str,
    *,
    window_rows: int | None = None,
    window_hours: float | None = None,
    lake: Lake,
    settings: Settings,
    now: datetime | None = None,
) -> DriftReport:
    """Measure drift (``core.monitoring.measure_drift``), then open or resolve its alerts.

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
    rep = monitoring.measure_drift(model, window_rows=window_rows, window_hours=window_hours, lake=lake, settings=settings, now=now)
    if rep.status != "ok" or rep.result is None:
        return rep
    result = rep.result  # kept narrowed across the replace()s below
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
            "share": result.share,
            "share_threshold": result.share_threshold,
            "features": [
                {"feature": f.feature, "test": f.test, "statistic": f.statistic, "p_value": f.p_value,
                 "threshold": f.threshold, "reasons": list(f.reasons)}
                for f in result.features if f.status == "drift" and f.counted
            ],
            "expected_drift": [
                {"feature": f.feature, "status": f.status, "statistic": f.statistic}
                for f in result.features if not f.counted
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
                                        severity="warning", lake=lake, settings=settings, model_version=rep.model_version)
        return replace(rep, alert="opened" if opened else "ongoing")
    resolved = monitoring.resolve_alert(
        "drift", model, message=f"drift on model {model!r} cleared (report {rep.report_id}, share {result.share:.2f})",
        evidence={"report_id": rep.report_id, "model_version": rep.model_version, "share": result.share},
        lake=lake, settings=settings,
    )
    return replace(rep, alert="resolved" if resolved else None)


def check_performance_and_alert(
    model: str, *, window_hours: float | None = None, lake: Lake,
    settings: Settings, now: datetime | None = None,
) -> PerformanceReport:
    """Run a performance check on labelled predictions and open or resolve the performance alert.

    The estimated performance of the latest window (CBPE, ``check_estimated_performance``) runs
    with it, so the scheduled performance job also speaks before the labels arrive; its report
    is ``PerformanceReport.estimate``.
    """
    rep = monitoring.measure_performance(model, window_hours=window_hours, lake=lake, settings=settings, now=now)
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
                                        lake=lake, settings=settings, model_version=rep.model_version)
        return replace(rep, alert="opened" if opened else "ongoing")
    resolved = monitoring.resolve_alert(
        "performance", model, message=f"performance of model {model!r} back within tolerance ({rep.metric} {rep.value:.4f})",
        evidence=evidence, lake=lake, settings=settings,
    )
    return replace(rep, alert="resolved" if resolved else None)


def check_estimated_performance(
    model: str, *, window_rows: int | None = None, window_hours: float | None = None, lake: Lake,
    settings: Settings, now: datetime | None = None,
) -> EstimateReport:
    """Estimate performance before labels (``core.monitoring.estimate_performance``); open or resolve its alert.

    The ``estimated_performance`` alert opens when the policy metric's estimate is worse than its
    gate-time value by more than ``estimate_tolerance``, and resolves when it is back.
    """
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


def alerts_open(model: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """The currently open alerts (one row per condition), newest first."""
    return monitoring.alerts(model, status="open", lake=lake)


# ---------------------------------------------------------------------------- retraining
def _served_watermark(name: str, lake: Lake) -> datetime | None:
    """The newest ``__labelled_at`` already recorded in the served dataset ``name``."""
    from core import datasets

    if not lake.exists(datasets.table_name(name)):
        return None
    value = lake.scan(datasets.table_name(name)).select(pl.col("__labelled_at").max()).collect().item()
    return value


def record_served(model: str, *, lake: Lake, settings: Settings,
                  actor: str | None = None) -> tuple[int, int]:
    """Record the predictions labelled since the last call as a new version of ``<model>_served``.

    Each row is a labelled prediction as it was served: its features and pass-through fields
    from the log, its ground truth under the model's target name, and ``__prediction_id``,
    ``__served_at``, ``__labelled_at``, ``__model_version``. Nothing else is filled in; the
    model's source dataset is never touched. Labels that are not a valid ground truth for the
    model (not 0/1 for a binary model, not finite) never reach it.

    Returns:
        ``(served dataset version, rows added)``; the latest version and 0 when nothing is new
        (version 0 when there is no labelled traffic at all).

    Raises:
        DataValidationError: the batch broke the served dataset's rules (it is then quarantined).
    """
    from core import datasets, trainsets
    mv = monitoring.champion(model, lake=lake)
    name = trainsets.served_dataset(model)
    since = _served_watermark(name, lake)
    truth = monitoring.ground_truth(model, lake=lake)
    if since is not None:
        truth = truth.filter(pl.col("labelled_at") > since)
    latest = datasets.latest_version(name, lake=lake) if lake.exists(datasets.table_name(name)) else 0
    if truth.height == 0 or not lake.exists(prediction_table(model)):
        return latest, 0
    log = monitoring.log_scan(model, lake).join(truth.lazy(), on="prediction_id", how="semi").collect()
    rows = trainsets.served_rows(log, truth, mv.signature)
    if rows.height == 0:
        return latest, 0
    target = mv.signature.target
    spec = {"infer": False, "required": [target, "__prediction_id", "__served_at", "__labelled_at"],
            "unique": ["__prediction_id"]}
    dv = datasets.ingest(name, rows, lake=lake, settings=settings, actor=actor or settings.actor, spec=spec,
                         source=f"labelled traffic of {model} up to {rows['__labelled_at'].dt.max()}")
    return dv.version, rows.height


def retrain(model: str, *, reason: str, lake: Lake, settings: Settings,
            actor: str | None = None) -> RetrainOutcome:
    """Retrain ``model`` on its source data plus its labelled traffic, gate it, promote if the policy allows.

    The labelled traffic is recorded as a new version of ``<model>_served`` (``record_served``);
    training combines the source dataset's latest version with it and holds out the newest
    labelled traffic (``core.trainsets.retrain_frames``). The training params, seed, time
    column, exclusions and pass-through fields are the champion's; the gate scores the candidate
    and the champion on that holdout (``core.flows.promote``). Every change is recorded under
    ``actor`` (default ``settings.actor``: ``scheduler:retrain`` when the scheduler runs it);
    inside ``stated_reason`` the person's reason replaces ``reason``.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or no champion.
        DataValidationError: the labelled batch failed validation (nothing trained).
        TrainingError: training could not run (e.g. no labelled traffic yet).
    """
    from core import datasets, registry, tracking, trainsets
    from core.flows import promote as promote_flow
    from core.flows.train import train_model
    actor = actor or settings.actor
    stated = _STATED_REASON.get()
    reason = stated or reason
    audit = f"retrain run by hand: {reason}" if stated else f"automatic retrain: {reason}"
    mv = monitoring.champion(model, lake=lake)
    run = tracking.get_run(mv.run_id, lake=lake)
    sig = mv.signature
    target = run.params.get("target") or sig.target
    time_column = run.params.get("time_column") or None
    served_version, added = record_served(model, lake=lake, settings=settings, actor=actor)
    if served_version == 0:
        raise TrainingError(f"model {model!r} has no labelled traffic yet; send feedback labels first")
    source = mv.dataset_name
    version = datasets.latest_version(source, lake=lake)
    served_name = trainsets.served_dataset(model)
    exclude = [c for c in json.loads(run.params.get("exclude") or "[]") if c not in trainsets.SERVED_META]
    outcome = train_model(
        source, target=target, version=version, params=json.loads(run.params.get("train_params") or "{}"),
        seed=int(run.seed or 0), experiment=run.experiment,
        name=f"retrain {model} on {source}@v{version} + {served_name}@v{served_version}",
        task=run.params.get("task"), time_column=time_column, exclude=exclude,
        tags={"trigger": "retrain", "reason": reason[:500], "model": model}, lake=lake,
        passthrough=sig.passthrough_names, feedback_key=sig.feedback_key,
        served=(served_name, served_version),
        dedupe=(trainsets.dedupe_key(sig), [*sig.names, target]), settings=settings
    )
    new = registry.register(model, outcome.run_id, description=f"retrain: {reason}"[:1000],
                            tags={"trigger": "retrain"}, actor=actor, lake=lake)
    decision = promote_flow.evaluate_and_maybe_promote(model, new.version, reason=audit[:1000],
                                                       actor=actor, lake=lake, settings=settings)
    return RetrainOutcome(
        model=model, reason=reason, champion_before=mv.version, dataset=source, dataset_version=version,
        rows_added=added, run_id=outcome.run_id, version=new.version, metrics=dict(outcome.metrics),
        gate_passed=decision.report.passed, promoted=decision.promoted, why=decision.why,
        served_dataset=served_name, served_version=served_version,
        holdout_rows=int(decision.report.eval_rows or 0),
    )


def retrain_if_needed(model: str, *, lake: Lake, settings: Settings,
                      actor: str | None = None) -> RetrainOutcome | None:
    """Retrain when a drift or performance alert is open for the current champion and enough new labels came.

    "Enough" is ``min_labels`` labelled predictions newer than the last retrain's data (the
    served dataset's newest label): a retrain uses them, so the next one waits for the next
    ``min_labels``, whether the last candidate was promoted or refused by the gate. Alerts
    raised for an earlier champion do not count (they are resolved as superseded when the
    champion changes). Nothing is retrained while a challenger is staged.
    """
    from core import registry, trainsets
    mv = monitoring.champion(model, lake=lake)
    if registry.state(model, lake=lake).stage is not None:
        return None  # a challenger is meeting live traffic: its live gate decides first
    open_ = alerts_open(model, lake=lake).filter(pl.col("kind").is_in(["drift", "performance"]))
    if "model_version" in open_.columns:
        open_ = open_.filter(pl.col("model_version").is_null() | (pl.col("model_version") == mv.version))
    if open_.height == 0:
        return None
    cfg = monitoring.monitor_config(model, settings)
    truth = monitoring.ground_truth(model, lake=lake)
    wm = _served_watermark(trainsets.served_dataset(model), lake)
    fresh = truth.filter(pl.col("labelled_at") > wm).height if wm is not None else truth.height
    if fresh < cfg.min_labels:
        return None
    return retrain(model, reason=open_["message"][0], lake=lake, settings=settings, actor=actor)
