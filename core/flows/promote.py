"""Gate and promote: evaluate a version against its policy, approve/reject, promote, roll back.

The CLI (``lakeops models ...``), the Models page and the retrain job all call these functions,
so every promotion goes through the same checks and leaves the same audit events.

Evaluation data: the candidate's training dataset version, split exactly as its run split it
(``core.training.split`` with the run's seed, time column and valid fraction); the holdout part
is scored by the candidate *and* by the current champion (with its own model), so the
beat-champion check never compares numbers measured on different data.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core import gating, registry
from core.config import Settings, load_settings
from core.errors import ConfigError, LakeopsError, PromotionRefusedError
from core.flows.train import run_leakage
from core.gating import GateReport, Policy
from core.lake import Lake, resolve

__all__ = [
    "PromotionOutcome",
    "alias",
    "approval",
    "approve",
    "evaluate",
    "evaluate_and_maybe_promote",
    "gate_reports",
    "latest_gate",
    "load_policy",
    "policy_with_source",
    "promote",
    "reject",
    "rollback",
    "set_policy",
]

_LATENCY_REPEATS = 40
_LATENCY_WARMUP = 5


@dataclass(frozen=True)
class PromotionOutcome:
    """What ``evaluate_and_maybe_promote`` did: the gate report, and whether it promoted and why."""

    report: GateReport
    promoted: bool
    why: str


def load_policy(
    model: str,
    *,
    settings: Settings | None = None,
    path: str | Path | None = None,
    lake: Lake | None = None,
) -> Policy:
    """Return the promotion policy of ``model``.

    Precedence: ``path`` (a TOML file) when given, else ``[models.<model>.policy]`` in the
    settings when present, else the policy last recorded in the lake for the model
    (``set_policy``, a ``policy`` registry event), else the defaults (see ``core.gating``).

    Raises:
        ConfigError: the file cannot be read or a key is invalid (named).
    """
    return policy_with_source(model, settings=settings, path=path, lake=lake)[0]


def policy_with_source(
    model: str,
    *,
    settings: Settings | None = None,
    path: str | Path | None = None,
    lake: Lake | None = None,
) -> tuple[Policy, str]:
    """Like ``load_policy``, also saying where the policy came from (for ``lakeops models policy``)."""
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"policy file {p}: cannot read it ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"policy file {p}: invalid TOML: {exc}") from None
        nested = (
            data.get("models", {}).get(model, {}).get("policy")
            if isinstance(data.get("models"), dict)
            else None
        )
        where = f"policy file {p}"
        return gating.policy_from_dict(nested if nested is not None else data, where=where), where
    settings = settings or load_settings()
    section = settings.section(f"models.{model}.policy")
    if section:
        where = f"[models.{model}.policy]"
        return gating.policy_from_dict(section, where=where), f"{where} in {settings.config_path or 'settings'}"
    lake = resolve(lake)
    recorded = registry.events(model, lake=lake).filter(pl.col("action") == "policy")
    if recorded.height:
        last = recorded.row(-1, named=True)
        where = f"recorded in the lake by {last['actor']} at {last['at']:%Y-%m-%d %H:%M} UTC"
        return gating.policy_from_dict(json.loads(last["report_json"] or "{}"), where=where), where
    return gating.policy_from_dict({}, where="defaults"), "defaults"


def set_policy(
    model: str,
    policy: Mapping[str, Any],
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> Policy:
    """Record ``model``'s promotion policy in the lake (a ``policy`` registry event).

    Every process using the lake (CLI, scheduler, API, UI) then applies it, unless a
    ``[models.<model>.policy]`` section in lakeops.toml overrides it.

    Raises:
        ConfigError: a key or value of the policy is invalid (named).
        RegistryError: no reason given.
    """
    lake = resolve(lake)
    why = _reason(reason, f"setting the policy of {model!r}")
    parsed = gating.policy_from_dict(policy, where=f"policy of {model!r}")
    registry.record_event(
        model, "policy", actor=_actor(actor, settings), reason=why, report=parsed.to_dict(), lake=lake
    )
    return parsed


def _actor(actor: str | None, settings: Settings | None) -> str:
    return actor or (settings or load_settings()).actor


def _reason(reason: str | None, what: str) -> str:
    if reason is None or not str(reason).strip():
        from core.errors import RegistryError

        raise RegistryError(f'{what} needs a reason: pass --reason "..." (it goes into the audit trail)')
    return str(reason).strip()


# ---------------------------------------------------------------------------- evaluation
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


def _score(loaded: registry.LoadedModel, frame: pl.DataFrame) -> tuple[dict[str, float], np.ndarray]:
    """(metrics, scores) of a model on ``frame``."""
    from core.training import compute_metrics

    sig = loaded.signature
    y = frame[sig["target"]].cast(pl.Float64).to_numpy()
    scores = loaded.model.predict(frame)
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
        result = significance.compare(metric, y, cand, champ, margin=bc.margin, alpha=policy.significance or 0.05,
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
    lake: Lake | None = None,
    settings: Settings | None = None,
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
        lake: the lake (default: from settings).
        settings: settings holding ``[models.<model>.policy]``.
        policy: a policy to use instead of the configured one.

    Returns:
        The gate report (a failed gate is a normal report, not an exception).

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model or version.
        ArtifactIntegrityError: the candidate's artifact is missing or tampered.
        PromotionRefusedError: the version has no dataset lineage to evaluate on.
    """
    lake = resolve(lake)
    policy = policy or load_policy(model, settings=settings, lake=lake)
    mv = registry.get_version(model, version, lake=lake)
    candidate = registry.load(model, version=version, alias=None, lake=lake)
    holdout = _holdout(mv, lake)
    metrics, cand_scores = _score(candidate, holdout)
    champ_v = registry.champion_version(model, lake)
    champ_metrics: dict[str, float] | None = None
    champ_error = None
    comparison = None
    if champ_v is not None and champ_v != version:
        try:
            champ_metrics, champ_scores = _score(registry.load(model, version=champ_v, alias=None, lake=lake), holdout)
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
        latency_p95_ms=_latency_p95(candidate, holdout, sorted(policy.max_p95_latency_ms) or [1, 100]),
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


def gate_reports(model: str, *, lake: Lake | None = None) -> dict[int, GateReport]:
    """Return the latest gate report of every evaluated version of ``model``."""
    import json

    lake = resolve(lake)
    ev = registry.events(model, lake=lake).filter(pl.col("action") == "gate")
    out: dict[int, GateReport] = {}
    for row in ev.iter_rows(named=True):
        out[int(row["version"])] = GateReport.from_dict(json.loads(row["report_json"]))
    return out


def latest_gate(model: str, version: int, *, lake: Lake | None = None) -> GateReport | None:
    """Return the latest gate report of ``model`` ``version``, or None when never evaluated."""
    return gate_reports(model, lake=lake).get(int(version))


def approval(model: str, version: int, *, lake: Lake | None = None) -> str | None:
    """Return the latest approve/reject decision on a version: ``approved``, ``rejected`` or None."""
    ev = registry.events(model, lake=resolve(lake)).filter(
        (pl.col("version") == version) & pl.col("action").is_in(["approve", "reject"])
    )
    return None if ev.height == 0 else ("approved" if ev["action"][-1] == "approve" else "rejected")


# ---------------------------------------------------------------------------- decisions
def _decide(
    model: str,
    version: int,
    action: str,
    reason: str | None,
    actor: str | None,
    lake: Lake | None,
    settings: Settings | None,
) -> str:
    lake = resolve(lake)
    why = _reason(reason, f"{action} of {model!r} v{version}")
    registry.get_version(model, version, lake=lake)
    return registry.record_event(
        model, action, version=version, actor=_actor(actor, settings), reason=why, lake=lake
    )


def approve(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> str:
    """Record a manual approval of a version (needed to promote when the policy requires it)."""
    return _decide(model, version, "approve", reason, actor, lake, settings)


def reject(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> str:
    """Record a manual rejection of a version (it can then only be promoted with ``force``).

    The current champion cannot be rejected: serving keeps answering with it until the alias
    moves, so a rejection would leave the registry saying one thing and the API doing another.
    Roll back or promote another version first, then reject it.

    Raises:
        RegistryError: no reason.
        PromotionRefusedError: the version is the current champion.
    """
    lake = resolve(lake)
    if registry.champion_version(model, lake) == version:
        raise PromotionRefusedError(
            f"model {model!r} v{version} is the champion and keeps serving until the alias moves; "
            "roll back or promote another version first, then reject it"
        )
    return _decide(model, version, "reject", reason, actor, lake, settings)


def _refusal(model: str, version: int, champion: int | None, policy: Policy, lake: Lake) -> str | None:
    """Why an unforced promotion is refused, or None when it is allowed."""
    report = latest_gate(model, version, lake=lake)
    fix = f"run 'lakeops models evaluate {model} {version}'"
    if report is None:
        return f"model {model!r} v{version} has no gate report; {fix} first"
    if not report.passed:
        failed = ", ".join(f"{c.name} (value {c.value}, threshold {c.threshold})" for c in report.failed)
        return f"model {model!r} v{version} failed its gate: {failed}; retrain, or use --force with a reason"
    if report.champion_version != champion:
        return (
            f"model {model!r} v{version} was gated against champion "
            f"{'none' if report.champion_version is None else 'v' + str(report.champion_version)}, but the champion "
            f"is now {'none' if champion is None else 'v' + str(champion)}; {fix} again"
        )
    if policy.staging is not None:
        from core.flows.rollout import latest_live_pass

        if not latest_live_pass(model, version, champion, lake=lake):
            return (
                f"the policy of {model!r} requires a live period first: 'lakeops models stage {model} {version} "
                f"--mode {policy.staging.mode} --reason ...', then its live gate must pass (lakeops models rollout {model})"
            )
    decision = approval(model, version, lake=lake)
    if decision == "rejected":
        return f"model {model!r} v{version} was rejected; approve it again or use --force with a reason"
    if policy.require_approval and decision != "approved":
        return f"the policy of {model!r} requires approval: run 'lakeops models approve {model} {version} --reason ...' first"
    return None


def promote(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    force: bool = False,
    lake: Lake | None = None,
    settings: Settings | None = None,
    policy: Policy | None = None,
) -> registry.AliasChange:
    """Move ``champion`` to ``version`` if its latest gate passed (and approval was given where required).

    The gate report must have been computed against the current champion. ``force`` skips
    the gate and approval checks; it still needs a reason and is recorded as forced.

    Raises:
        RegistryError: no reason.
        PromotionRefusedError: gate missing/failed/stale, approval missing, already champion,
            or a concurrent change moved the champion first.
        ArtifactIntegrityError: the version's artifact is missing or fails its sha256 (even with
            ``force``: nothing could serve it).
    """
    lake = resolve(lake)
    why = _reason(reason, f"promoting {model!r} v{version}")
    registry.get_version(model, version, lake=lake)
    champion = registry.champion_version(model, lake)
    if champion == version:
        raise PromotionRefusedError(f"model {model!r} v{version} is already the champion")
    policy = policy or load_policy(model, settings=settings, lake=lake)
    refusal = _refusal(model, version, champion, policy, lake)
    if refusal and not force:
        raise PromotionRefusedError(refusal)
    # Never forced past: a version whose artifact fails its sha256 (or is missing) would not be
    # served (every replica refuses it) while the registry said it is the champion.
    registry.load(model, version=version, alias=None, lake=lake)  # raises ArtifactIntegrityError
    report = latest_gate(model, version, lake=lake)
    details: dict[str, Any] = {
        "forced": bool(force),
        "gate_passed": None if report is None else report.passed,
        "overridden": refusal if force else None,
    }
    change = registry.set_alias(
        model,
        "champion",
        version,
        actor=_actor(actor, settings),
        reason=why,
        action="promote",
        report=details,
        expected=champion,
        lake=lake,
    )
    if not change.applied:
        raise PromotionRefusedError(
            f"a concurrent change moved the champion of {model!r} first (now "
            f"v{registry.champion_version(model, lake)}); your promotion of v{version} is recorded as superseded"
        )
    _supersede(model, version, f"promoted by {_actor(actor, settings)}: {why}", lake, settings)
    return change


def _supersede(model: str, version: int, reason: str, lake: Lake, settings: Settings | None) -> None:
    """The champion changed: its predecessor's open alerts no longer describe it (resolved as superseded)."""
    from core import monitoring

    monitoring.supersede_alerts(model, version, reason=reason, lake=lake, settings=settings)


def rollback(
    model: str,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> registry.AliasChange:
    """Return ``champion`` to the previous champion in one step (its artifact is checked first).

    Raises:
        RegistryError: no reason.
        PromotionRefusedError: there is no previous champion, or a concurrent change won.
        ArtifactIntegrityError: the previous champion's artifact is missing or tampered.
    """
    lake = resolve(lake)
    why = _reason(reason, f"rolling back {model!r}")
    registry.versions(model, lake=lake)  # unknown model -> ModelNotFoundError
    stack = registry.state(model, lake=lake).champion_stack
    if len(stack) < 2:
        held = ", ".join(f"v{v}" for v in stack) or "none"
        raise PromotionRefusedError(
            f"model {model!r} has no previous champion to roll back to (champion history: {held})"
        )
    current, target = stack[-1], stack[-2]
    registry.load(model, version=target, alias=None, lake=lake)
    change = registry.set_alias(
        model,
        "champion",
        target,
        actor=_actor(actor, settings),
        reason=why,
        action="rollback",
        report={"from_version": current},
        expected=current,
        lake=lake,
    )
    if not change.applied:
        raise PromotionRefusedError(
            f"a concurrent change moved the champion of {model!r} first; the rollback is recorded as superseded"
        )
    _supersede(model, target, f"rolled back by {_actor(actor, settings)}: {why}", lake, settings)
    return change


def alias(
    model: str,
    name: str,
    version: int | None,
    *,
    reason: str,
    actor: str | None = None,
    delete: bool = False,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> registry.AliasChange:
    """Point a non-champion alias (``challenger``, ``shadow`` ...) at a version, or remove it.

    Raises:
        PromotionRefusedError: for ``champion`` (use ``promote``/``rollback``, which gate it).
    """
    if name == "champion":
        raise PromotionRefusedError("the champion alias moves only through 'promote' (gated) or 'rollback'")
    why = _reason(reason, f"moving alias {name!r}")
    return registry.set_alias(
        model,
        name,
        None if delete else version,
        actor=_actor(actor, settings),
        reason=why,
        action="unalias" if delete else "alias",
        lake=resolve(lake),
    )


def evaluate_and_maybe_promote(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> PromotionOutcome:
    """Gate a version and promote it when the policy allows automatic promotion (the retrain job).

    Promotes only if the gate passed, ``auto_promote`` is true and ``require_approval`` is false;
    otherwise the version stays a candidate awaiting a human, and ``why`` says so.
    """
    lake = resolve(lake)
    policy = load_policy(model, settings=settings, lake=lake)
    report = evaluate(model, version, actor=actor, lake=lake, settings=settings, policy=policy)
    if not report.passed:
        return PromotionOutcome(report, False, report.summary())
    if not policy.auto_promote:
        return PromotionOutcome(
            report, False, "gate passed; auto_promote is off, awaiting a manual promotion"
        )
    if policy.significance is not None and report.significant is False:
        detail = next(c.detail for c in report.checks if c.name.startswith("significant:"))
        return PromotionOutcome(
            report, False,
            f"gate passed, but the improvement is not significant at {policy.significance:g} ({detail}); not "
            "promoted automatically (promote by hand with a reason if you mean it, or set significance = false)",
        )
    if policy.require_approval:
        return PromotionOutcome(report, False, "gate passed; the policy requires approval before promotion")
    if policy.staging is not None:
        from core.flows.rollout import stage

        try:
            stage(model, version, mode=policy.staging.mode, fraction=policy.staging.fraction,
                  reason=f"{reason} (offline gate passed; live period before promotion)", actor=actor, lake=lake,
                  settings=settings)
        except PromotionRefusedError as exc:
            return PromotionOutcome(report, False, str(exc))
        return PromotionOutcome(report, False, f"gate passed; staged v{version} as {policy.staging.mode} challenger: "
                                               "its live gate decides the promotion")
    try:
        promote(model, version, reason=reason, actor=actor, lake=lake, settings=settings, policy=policy)
    except PromotionRefusedError as exc:
        return PromotionOutcome(report, False, str(exc))
    return PromotionOutcome(report, True, f"promoted v{version}: {report.summary()}")
