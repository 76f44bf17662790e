"""Evaluate: run the promotion gate of a version on its holdout and read the recorded reports.

Evaluation data: the candidate's training dataset version, split exactly as its run split it
(``core.training.split`` with the run's seed, time column and valid fraction); the holdout part
is scored by the candidate *and* by the current champion (with its own model), so the
beat-champion check never compares numbers measured on different data. ``core.gating.run_gate``
decides; this module measures.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import polars as pl

from core import gating, registry
from core.config import Settings
from core.errors import LakeopsError, PromotionRefusedError
from core.flows.promote.policy import _actor, authorize, load_policy
from core.flows.train import run_leakage
from core.gating import GateReport, Policy
from core.lake import Lake

__all__ = ["approval", "evaluate", "gate_reports", "latest_gate"]

_LATENCY_REPEATS = 40
_LATENCY_WARMUP = 5


def _holdout(mv: registry.ModelVersion, lake: Lake) -> pl.DataFrame:
    """The candidate's evaluation frame: the holdout its run used, rebuilt from its lineage.

    For a split of one dataset version that is the split's validation part; for a retrain, the
    newest labelled traffic (``core.trainsets``), disjoint from the training rows.
    """
    from core import tracking, trainsets

    if not mv.dataset_name or mv.dataset_version is None or not mv.run_id:
        raise PromotionRefusedError(
            f"model {mv.model!r} v{mv.version} has no dataset lineage (run and dataset version), "
            "so it cannot be evaluated on its holdout; register a model trained from a dataset"
        )
    run = tracking.get_run(mv.run_id, lake=lake)
    seed = run.seed if run.seed is not None else int(run.params.get("seed", 0))
    frames = trainsets.run_frames(dataset=mv.dataset_name, version=int(mv.dataset_version), params=run.params,
                                  signature=mv.signature, seed=int(seed), lake=lake)
    return frames.holdout


def _score(loaded: registry.LoadedModel, frame: pl.DataFrame, lake: Lake) -> tuple[dict[str, float], np.ndarray]:
    """(metrics, scores) of a model on ``frame`` (a feature-view model's missing features computed as of each row)."""
    from core.features import with_view_features
    from core.training import compute_metrics

    sig = loaded.signature
    y = frame[sig["target"]].cast(pl.Float64).to_numpy()
    scores = loaded.model.predict(with_view_features(frame, sig, lake=lake))
    return compute_metrics(sig["task"], y, scores, float(sig.get("threshold", 0.5))), scores


def _compare(policy: Policy, mv: registry.ModelVersion, holdout: pl.DataFrame, cand: np.ndarray,
             champ: np.ndarray) -> dict[str, Any] | None:
    """The paired test of candidate vs champion on the holdout (``core.significance``), or None."""
    from core import significance

    bc = policy.beat_champion
    if bc is None:
        return None
    sig = mv.signature
    metric = bc.metric or gating.default_metric(sig.get("task", "binary"))
    y = holdout[sig["target"]].cast(pl.Float64).to_numpy()
    try:
        result = significance.compare(metric, y, cand, champ, margin=bc.margin, alpha=policy.alpha,
                                      threshold=float(sig.get("threshold", 0.5)))
    except ValueError:  # e.g. one class only in the holdout: nothing to test
        return None
    return result.to_dict()


def _latency_p95(loaded: registry.LoadedModel, frame: pl.DataFrame, sizes: list[int]) -> dict[int, float]:
    """Measured p95 milliseconds of ``model.predict`` (encode + score) per batch size."""
    out: dict[int, float] = {}
    for rows in sizes:
        idx = np.arange(rows) % max(1, frame.height)
        batch = frame[idx.tolist()]
        for _ in range(_LATENCY_WARMUP):
            loaded.model.predict(batch)
        samples = np.empty(_LATENCY_REPEATS)
        for i in range(_LATENCY_REPEATS):
            t0 = time.perf_counter()
            loaded.model.predict(batch)
            samples[i] = (time.perf_counter() - t0) * 1000.0
        out[rows] = float(np.percentile(samples, 95))
    return out


def _validation_status(name: str | None, version: int | None, lake: Lake) -> str | None:
    from core import datasets

    if name is None or version is None:
        return None
    rows = datasets.versions(name, lake=lake).filter(pl.col("version") == version)
    return rows["validation_status"][0] if rows.height else None


def evaluate(
    model: str,
    version: int,
    *,
    actor: str | None = None,
    lake: Lake,
    settings: Settings,
    policy: Policy | None = None,
) -> GateReport:
    """Run the promotion gate for ``model`` ``version`` and record the report as a ``gate`` event.

    Both the candidate and the current champion are scored on the candidate's holdout; the
    training data's validation status, the model file size and measured p95 latencies for the
    policy's batch sizes are checked too.

    Args:
        model: registered model name.
        version: the candidate version.
        actor: who runs the gate (default: settings' actor).
        lake: the lake.
        settings: settings holding ``[models.<model>.policy]``.
        policy: a policy to use instead of the configured one.

    Returns:
        The gate report (a failed gate is a normal report, not an exception).

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or version.
        ArtifactIntegrityError: the candidate's artifact is missing or tampered.
        PromotionRefusedError: the version has no dataset lineage to evaluate on.
    """
    authorize(model, "evaluate", settings=settings, lake=lake)
    policy = policy or load_policy(model, settings=settings, lake=lake)
    mv = registry.get_version(model, version, lake=lake)
    candidate = registry.load(model, version=version, alias=None, lake=lake)
    holdout = _holdout(mv, lake)
    metrics, cand_scores = _score(candidate, holdout, lake)
    champ_v = registry.champion_version(model, lake)
    champ_metrics: dict[str, float] | None = None
    champ_error = None
    comparison = None
    if champ_v is not None and champ_v != version:
        try:
            champ_metrics, champ_scores = _score(registry.load(model, version=champ_v, alias=None, lake=lake), holdout, lake)
            comparison = _compare(policy, mv, holdout, cand_scores, champ_scores)
        except LakeopsError as exc:  # e.g. the champion needs a feature this data lacks
            champ_error = str(exc)
    inputs = gating.GateInputs(
        model=model,
        version=version,
        task=mv.signature.get("task", "binary"),
        candidate_metrics=metrics,
        champion_version=champ_v,
        champion_metrics=champ_metrics,
        champion_error=champ_error,
        validation_status=_validation_status(mv.dataset_name, mv.dataset_version, lake),
        size_bytes=mv.size_bytes,
        latency_p95_ms=_latency_p95(candidate, holdout, sorted(policy.max_p95_latency_ms or Policy().max_p95_latency_ms)),
        eval_dataset=mv.dataset_name,
        eval_dataset_version=mv.dataset_version,
        eval_rows=holdout.height,
        comparison=comparison,
        leakage=run_leakage(mv.run_id, lake=lake) if mv.run_id else None,
    )
    report = gating.run_gate(policy, inputs)
    registry.record_event(
        model,
        "gate",
        version=version,
        actor=_actor(actor, settings),
        reason=report.summary(),
        report=report.to_dict(),
        lake=lake,
    )
    return report


def gate_reports(model: str, *, lake: Lake) -> dict[int, GateReport]:
    """Return the latest gate report of every evaluated version of ``model``."""
    ev = registry.events(model, lake=lake).filter(pl.col("action") == "gate")
    out: dict[int, GateReport] = {}
    for row in ev.iter_rows(named=True):
        out[int(row["version"])] = GateReport.from_dict(json.loads(row["report_json"]))
    return out


def latest_gate(model: str, version: int, *, lake: Lake) -> GateReport | None:
    """Return the latest gate report of ``model`` ``version``, or None when never evaluated."""
    return gate_reports(model, lake=lake).get(int(version))


def approval(model: str, version: int, *, lake: Lake) -> str | None:
    """Return the latest approve/reject decision on a version: ``approved``, ``rejected`` or None."""
    ev = registry.events(model, lake=lake).filter(
        (pl.col("version") == version) & pl.col("action").is_in(["approve", "reject"])
    )
    return None if ev.height == 0 else ("approved" if ev["action"][-1] == "approve" else "rejected")


