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
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl

from core import monitoring
from core.config import Settings, load_settings
from core.lake import Lake, resolve
from core.monitoring import DriftReport, PerformanceReport

__all__ = [
    "RetrainOutcome",
    "alerts_open",
    "check_drift",
    "check_performance",
    "ingest_feedback",
    "retrain",
    "retrain_if_needed",
    "stated_reason",
]

_FEEDBACK_SOURCE = "feedback:{model}:"
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able outputs (for ``job_runs``)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _drift_message(rep: DriftReport) -> str:
    assert rep.result is not None
    feats = rep.result.drifted_features
    score_drifted = rep.score is not None and rep.score.drifted
    cmp = ">=" if rep.result.drifted else "<"
    head = "data drift" if rep.result.drifted else "prediction drift"
    score = "; the score distribution drifted" if score_drifted else ""
    return (
        f"{head} on model {rep.model!r} v{rep.model_version}: {len(feats)} of {len(rep.result.features)} features "
        f"drifted (share {rep.result.share:.2f} {cmp} {rep.result.share_threshold:.2f}){score}"
        + (f": {', '.join(feats)}" if feats else "")
    )


def check_drift(
    model: str,
    *,
    window_rows: int | None = None,
    window_hours: float | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> DriftReport:
    """Run a drift check (``core.monitoring.check_drift``) and open or resolve the drift alert.

    Returns:
        The report, with ``alert`` = ``opened``, ``ongoing``, ``resolved`` or None.
    """
    lake = resolve(lake)
    settings = settings or load_settings()
    rep = monitoring.check_drift(model, window_rows=window_rows, window_hours=window_hours, lake=lake, settings=settings, now=now)
    if rep.status != "ok" or rep.result is None:
        return rep
    if rep.drifted:
        evidence = {
            "report_id": rep.report_id,
            "model_version": rep.model_version,
            "window": {"rows": rep.window_rows, "start": str(rep.window_start), "end": str(rep.window_end)},
            "reference": {"dataset": rep.reference_dataset, "version": rep.reference_version},
            "share": rep.result.share,
            "share_threshold": rep.result.share_threshold,
            "features": [
                {"feature": f.feature, "test": f.test, "statistic": f.statistic, "p_value": f.p_value, "threshold": f.threshold}
                for f in rep.result.features if f.drifted
            ],
            "score": None if rep.score is None else {"test": rep.score.test, "statistic": rep.score.statistic, "drifted": rep.score.drifted},
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
    """Run a performance check on labelled predictions and open or resolve the performance alert."""
    lake = resolve(lake)
    settings = settings or load_settings()
    rep = monitoring.check_performance(model, window_hours=window_hours, lake=lake, settings=settings, now=now)
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
    Every change is recorded under ``settings.actor`` (``scheduler:retrain`` when the scheduler
    runs it); inside ``stated_reason`` the person's reason replaces ``reason``.

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
    stated = _STATED_REASON.get()
    reason = stated or reason
    audit = f"retrain run by hand: {reason}" if stated else f"automatic retrain: {reason}"
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
    decision = promote_flow.evaluate_and_maybe_promote(model, new.version, reason=audit[:1000],
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
