"""Gate and promote: evaluate a version against its policy, approve/reject, promote, roll back.

The CLI (``lakeops models ...``), the Models page and the retrain job all call these functions,
so every promotion goes through the same checks and leaves the same audit events.

Three parts: ``policy`` (which policy applies to a model, who may act: ``load_policy``,
``set_policy``, ``authorize``), ``evaluation`` (the gate on the candidate's holdout, with the
champion re-scored on the same rows: ``evaluate``, ``gate_reports``) and ``actions`` (approve,
reject, promote, roll back, aliases). When a move is refused is decided by the pure rules of
``core.gating`` (``promotion_refusal``, ``auto_promotion_refusal`` ...).
"""

from __future__ import annotations

from core.flows.promote.actions import (
    PromotionOutcome,
    alias,
    approve,
    evaluate_and_maybe_promote,
    promote,
    reject,
    rollback,
)
from core.flows.promote.evaluation import approval, evaluate, gate_reports, latest_gate
from core.flows.promote.policy import (
    allowed_actions,
    authorize,
    load_policy,
    policy_with_source,
    set_policy,
)

__all__ = [
    "PromotionOutcome",
    "alias",
    "allowed_actions",
    "approval",
    "approve",
    "authorize",
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
