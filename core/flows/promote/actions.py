"""Promote: approve/reject, promote, roll back, move aliases, and the retrain job's gate-then-promote.

Whether a move is refused is decided by ``core.gating`` (``promotion_refusal`` and its peers,
plain functions over plain data); this module reads the registry state they need, writes the
events and moves the aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import gating, registry
from core.config import Settings
from core.errors import PromotionRefusedError
from core.flows.promote.evaluation import approval, evaluate, latest_gate
from core.flows.promote.policy import _actor, _reason, authorize, load_policy
from core.gating import GateReport, Policy
from core.lake import Lake

__all__ = ["PromotionOutcome", "alias", "approve", "evaluate_and_maybe_promote", "promote", "reject", "rollback"]


@dataclass(frozen=True)
class PromotionOutcome:
    """What ``evaluate_and_maybe_promote`` did: the gate report, and whether it promoted and why."""

    report: GateReport
    promoted: bool
    why: str


# ---------------------------------------------------------------------------- decisions
def _decide(
    model: str,
    version: int,
    action: str,
    reason: str | None,
    actor: str | None,
    lake: Lake,
    settings: Settings,
) -> str:
    why = _reason(reason, f"{action} of {model!r} v{version}")
    authorize(model, "approve", settings=settings, lake=lake)
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
    lake: Lake,
    settings: Settings,
) -> str:
    """Record a manual approval of a version (needed to promote when the policy requires it)."""
    return _decide(model, version, "approve", reason, actor, lake, settings)


def reject(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake,
    settings: Settings,
) -> str:
    """Record a manual rejection of a version (it can then only be promoted with ``force``).

    The current champion cannot be rejected: serving keeps answering with it until the alias
    moves, so a rejection would leave the registry saying one thing and the API doing another.
    Roll back or promote another version first, then reject it.

    Raises:
        RegistryError: no reason.
        PromotionRefusedError: the version is the current champion.
    """
    refusal = gating.reject_refusal(model, version, registry.champion_version(model, lake))
    if refusal:
        raise PromotionRefusedError(refusal)
    return _decide(model, version, "reject", reason, actor, lake, settings)


def _state(model: str, version: int, champion: int | None, policy: Policy, lake: Lake) -> gating.PromotionState:
    """What ``core.gating.promotion_refusal`` needs about the candidate, read from the registry."""
    live = False
    if policy.staging is not None:
        from core.flows.rollout import latest_live_pass

        live = latest_live_pass(model, version, champion, lake=lake)
    return gating.PromotionState(model, version, champion, latest_gate(model, version, lake=lake),
                                 approval(model, version, lake=lake), live)


def promote(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    force: bool = False,
    lake: Lake,
    settings: Settings,
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
    why = _reason(reason, f"promoting {model!r} v{version}")
    authorize(model, "promote", settings=settings, lake=lake)
    registry.get_version(model, version, lake=lake)
    champion = registry.champion_version(model, lake)
    unforceable = gating.champion_refusal(model, version, champion)
    if unforceable:
        raise PromotionRefusedError(unforceable)
    policy = policy or load_policy(model, settings=settings, lake=lake)
    state = _state(model, version, champion, policy, lake)
    refusal = gating.promotion_refusal(policy, state)
    if refusal and not force:
        raise PromotionRefusedError(refusal)
    # Never forced past: a version whose artifact fails its sha256 (or is missing) would not be
    # served (every replica refuses it) while the registry said it is the champion.
    registry.load(model, version=version, alias=None, lake=lake)  # raises ArtifactIntegrityError
    details: dict[str, Any] = {
        "forced": bool(force),
        "gate_passed": None if state.report is None else state.report.passed,
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


def _supersede(model: str, version: int, reason: str, lake: Lake, settings: Settings) -> None:
    """The champion changed: its predecessor's open alerts no longer describe it (resolved as superseded)."""
    from core import monitoring

    monitoring.supersede_alerts(model, version, reason=reason, lake=lake, settings=settings)


def rollback(
    model: str,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake,
    settings: Settings,
) -> registry.AliasChange:
    """Return ``champion`` to the previous champion in one step (its artifact is checked first).

    Raises:
        RegistryError: no reason.
        PromotionRefusedError: there is no previous champion, or a concurrent change won.
        ArtifactIntegrityError: the previous champion's artifact is missing or tampered.
    """
    why = _reason(reason, f"rolling back {model!r}")
    authorize(model, "rollback", settings=settings, lake=lake)
    registry.versions(model, lake=lake)  # unknown model -> ModelNotFoundError
    stack = registry.state(model, lake=lake).champion_stack
    refusal = gating.rollback_refusal(model, stack)
    if refusal:
        raise PromotionRefusedError(refusal)
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
    lake: Lake,
    settings: Settings,
) -> registry.AliasChange:
    """Point a non-champion alias (``challenger``, ``shadow`` ...) at a version, or remove it.

    Raises:
        PromotionRefusedError: for ``champion`` (use ``promote``/``rollback``, which gate it).
    """
    refusal = gating.alias_refusal(name)
    if refusal:
        raise PromotionRefusedError(refusal)
    why = _reason(reason, f"moving alias {name!r}")
    authorize(model, "alias", alias=name, settings=settings, lake=lake)
    return registry.set_alias(
        model,
        name,
        None if delete else version,
        actor=_actor(actor, settings),
        reason=why,
        action="unalias" if delete else "alias",
        lake=lake,
    )


def evaluate_and_maybe_promote(
    model: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake,
    settings: Settings,
) -> PromotionOutcome:
    """Gate a version and promote it when the policy allows automatic promotion (the retrain job).

    Promotes only if the gate passed, ``auto_promote`` is true and ``require_approval`` is false;
    otherwise the version stays a candidate awaiting a human, and ``why`` says so.
    """
    policy = load_policy(model, settings=settings, lake=lake)
    report = evaluate(model, version, actor=actor, lake=lake, settings=settings, policy=policy)
    waiting = gating.auto_promotion_refusal(policy, report)
    if waiting:
        return PromotionOutcome(report, False, waiting)
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
