"""The refusal rules of ``core.gating``: when a candidate may not be promoted, staged, rejected or
rolled back. Plain functions over plain data: no lake, no model."""

from __future__ import annotations

from core.gating import (
    Check,
    GateReport,
    Policy,
    PromotionState,
    StagingPolicy,
    alias_refusal,
    auto_promotion_refusal,
    champion_refusal,
    live_promotion_refusal,
    promotion_refusal,
    reject_refusal,
    rollback_refusal,
    stage_refusal,
)


def _report(passed: bool = True, champion: int | None = 1, significant: bool | None = None) -> GateReport:
    checks = [Check("min:auc", 0.85 if passed else 0.7, 0.8, passed)]
    if significant is not None:
        checks.append(Check("significant:auc", 0.01 if significant else 0.4, 0.05, significant, "p=0.4", advisory=True))
    return GateReport("churn", 2, passed, tuple(checks), champion_version=champion)


def _state(**kw) -> PromotionState:
    return PromotionState(**{"model": "churn", "version": 2, "champion": 1, "report": _report(), **kw})


def test_a_passing_gate_against_the_current_champion_is_allowed():
    assert promotion_refusal(Policy(), _state()) is None
    assert promotion_refusal(Policy(), _state(champion=None, report=_report(champion=None))) is None


def test_no_gate_report_failed_gate_and_stale_champion_are_refused_in_that_order():
    none = promotion_refusal(Policy(), _state(report=None))
    assert none == "model 'churn' v2 has no gate report; run 'lakeops models evaluate churn 2' first"
    failed = promotion_refusal(Policy(), _state(report=_report(passed=False), decision="approved"))
    assert failed is not None and "failed its gate: min:auc (value 0.7, threshold 0.8)" in failed
    stale = promotion_refusal(Policy(), _state(champion=3))
    assert stale is not None and "gated against champion v1, but the champion is now v3" in stale
    first = promotion_refusal(Policy(), _state(champion=None))
    assert first is not None and "but the champion is now none" in first


def test_staging_needs_a_passed_live_gate_before_approval_is_looked_at():
    staged = Policy(staging=StagingPolicy(mode="canary", fraction=0.2), require_approval=True)
    waiting = promotion_refusal(staged, _state(decision="approved"))
    assert waiting is not None and "requires a live period first" in waiting and "--mode canary" in waiting
    assert promotion_refusal(staged, _state(decision="approved", live_passed=True)) is None
    needs = promotion_refusal(staged, _state(live_passed=True))
    assert needs is not None and "requires approval" in needs
    # without staging, the live gate is not asked for
    assert promotion_refusal(Policy(), _state(live_passed=False)) is None


def test_rejection_refuses_even_when_approval_is_not_required():
    assert "was rejected" in (promotion_refusal(Policy(), _state(decision="rejected")) or "")
    assert "requires approval" in (promotion_refusal(Policy(require_approval=True), _state()) or "")
    assert promotion_refusal(Policy(require_approval=True), _state(decision="approved")) is None


def test_auto_promotion_needs_auto_promote_significance_and_no_approval():
    auto = Policy(auto_promote=True)
    assert auto_promotion_refusal(auto, _report(passed=False)) == _report(passed=False).summary()
    assert "auto_promote is off" in (auto_promotion_refusal(Policy(), _report()) or "")
    noise = auto_promotion_refusal(auto, _report(significant=False))
    assert noise is not None and "not significant at 0.05 (p=0.4)" in noise
    assert auto_promotion_refusal(Policy(auto_promote=True, significance=None), _report(significant=False)) is None
    assert auto_promotion_refusal(auto, _report(significant=True)) is None
    assert auto_promotion_refusal(auto, _report()) is None  # no champion compared: nothing to test
    assert "requires approval" in (auto_promotion_refusal(Policy(auto_promote=True, require_approval=True), _report()) or "")
    assert live_promotion_refusal(auto) is None
    assert live_promotion_refusal(Policy()) == live_promotion_refusal(Policy(auto_promote=True, require_approval=True))
    assert live_promotion_refusal(Policy()) is not None


def test_champion_stage_reject_rollback_and_alias_rules():
    assert champion_refusal("churn", 2, 2) == "model 'churn' v2 is already the champion"
    assert champion_refusal("churn", 2, 1) is None and champion_refusal("churn", 2, None) is None
    assert "is the champion; stage another version" in (stage_refusal("churn", 1, 1, _report()) or "")
    assert "needs a passing gate" in (stage_refusal("churn", 2, 1, None) or "")
    assert "needs a passing gate" in (stage_refusal("churn", 2, 1, _report(passed=False)) or "")
    assert "needs a passing gate" in (stage_refusal("churn", 2, 3, _report()) or "")
    assert stage_refusal("churn", 2, 1, _report()) is None
    assert "keeps serving until the alias moves" in (reject_refusal("churn", 1, 1) or "")
    assert reject_refusal("churn", 2, 1) is None
    assert rollback_refusal("churn", []) == "model 'churn' has no previous champion to roll back to (champion history: none)"
    assert "(champion history: v3)" in (rollback_refusal("churn", [3]) or "")
    assert rollback_refusal("churn", [1, 3]) is None
    assert alias_refusal("champion") is not None and alias_refusal("shadow") is None
