from __future__ import annotations

import json
import math

import pytest

from core.errors import ConfigError
from core.gating import BeatChampion, GateInputs, GateReport, Policy, policy_from_dict, run_gate

GOOD = {"auc": 0.85, "brier": 0.15, "log_loss": 0.4}


def _inputs(**kw):
    base = dict(
        model="churn",
        version=2,
        task="binary",
        candidate_metrics=GOOD,
        validation_status="passed",
        size_bytes=1000,
        latency_p95_ms={1: 1.0, 100: 5.0},
        eval_dataset="churn",
        eval_dataset_version=3,
    )
    return GateInputs(**{**base, **kw})


def _check(report, name):
    return next(c for c in report.checks if c.name == name)


def test_absolute_thresholds_pass_and_fail():
    pol = Policy(min={"auc": 0.8}, max={"brier": 0.2})
    assert run_gate(pol, _inputs()).passed
    bad = run_gate(pol, _inputs(candidate_metrics={"auc": 0.79, "brier": 0.21}))
    assert not bad.passed
    assert [(c.name, c.value, c.threshold) for c in bad.failed] == [
        ("min:auc", 0.79, 0.8),
        ("max:brier", 0.21, 0.2),
    ]
    edge = run_gate(pol, _inputs(candidate_metrics={"auc": 0.8, "brier": 0.2}))
    assert edge.passed  # bounds are inclusive
    missing = run_gate(Policy(min={"f1": 0.5}), _inputs())
    assert not missing.passed and "not computed" in missing.failed[0].detail
    nan = run_gate(Policy(min={"auc": 0.5}), _inputs(candidate_metrics={"auc": math.nan}))
    assert not nan.passed


def test_beat_champion_margin_and_direction():
    pol = Policy(beat_champion=BeatChampion("auc", 0.01))
    win = run_gate(pol, _inputs(champion_version=1, champion_metrics={"auc": 0.83}))
    assert _check(win, "beat_champion:auc").passed
    assert _check(win, "beat_champion:auc").threshold == pytest.approx(0.84)
    lose = run_gate(pol, _inputs(champion_version=1, champion_metrics={"auc": 0.845}))
    assert not lose.passed and "champion v1" in lose.failed[0].detail and "churn v3" in lose.failed[0].detail
    lower = Policy(beat_champion=BeatChampion("brier", 0.02))
    assert run_gate(lower, _inputs(champion_version=1, champion_metrics={"brier": 0.18})).passed
    assert not run_gate(lower, _inputs(champion_version=1, champion_metrics={"brier": 0.16})).passed


def test_beat_champion_special_cases():
    pol = Policy()
    none = _check(run_gate(pol, _inputs()), "beat_champion:auc")
    assert none.passed and none.detail == "no champion"
    same = _check(
        run_gate(pol, _inputs(champion_version=2, champion_metrics={"auc": 0.9})), "beat_champion:auc"
    )
    assert same.passed and same.detail == "candidate is the champion"
    err = run_gate(pol, _inputs(champion_version=1, champion_error="missing feature column(s) age"))
    assert not err.passed and "could not be scored" in err.failed[0].detail
    reg = run_gate(
        pol,
        _inputs(
            task="regression",
            candidate_metrics={"rmse": 1.0},
            champion_version=1,
            champion_metrics={"rmse": 1.1},
        ),
    )
    assert _check(reg, "beat_champion:rmse").passed
    assert all(not c.name.startswith("beat") for c in run_gate(Policy(beat_champion=None), _inputs()).checks)


def test_data_size_and_latency_checks():
    pol = Policy(max_size_bytes=500, max_p95_latency_ms={1: 2.0, 100: 4.0})
    report = run_gate(pol, _inputs(validation_status="failed"))
    assert {c.name for c in report.failed} == {"validated_data", "max_size_bytes", "max_p95_latency_ms:100"}
    assert _check(report, "max_p95_latency_ms:1").passed
    assert run_gate(
        Policy(require_validated_data=False, max_size_bytes=None, max_p95_latency_ms={}),
        _inputs(validation_status=None),
    ).passed
    assert run_gate(Policy(), _inputs(validation_status="warned")).passed
    unmeasured = run_gate(Policy(max_p95_latency_ms={1000: 9.0}), _inputs())
    assert not unmeasured.passed


def test_report_roundtrips_through_json():
    report = run_gate(Policy(min={"auc": 0.9}), _inputs(champion_version=1, champion_metrics={"auc": 0.8}))
    back = GateReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back == report
    assert back.summary() == "gate FAILED for churn v2: min:auc"


def test_policy_parsing_defaults_and_errors():
    assert policy_from_dict({}) == Policy()
    pol = policy_from_dict(
        {
            "min": {"auc": 0.8},
            "max": {"brier": 0.2},
            "beat_champion": {"metric": "auc", "margin": 0.005},
            "max_size_bytes": 10_000,
            "max_p95_latency_ms": {"1": 5, "100": 20},
            "require_approval": True,
            "auto_promote": True,
        }
    )
    assert pol.beat_champion == BeatChampion("auc", 0.005)
    assert pol.max_p95_latency_ms == {1: 5.0, 100: 20.0} and pol.require_approval and pol.auto_promote
    assert policy_from_dict(pol.to_dict()) == pol
    assert policy_from_dict({"policy": {"beat_champion": False}}).beat_champion is None
    for bad, match in [
        ({"minimum": {}}, "unknown key"),
        ({"min": 0.8}, "min must be a table"),
        ({"max": {"brier": "low"}}, "max.brier must be a number"),
        ({"beat_champion": {"metric": "auc", "margin": -1}}, "margin must be >= 0"),
        ({"require_approval": "yes"}, "require_approval must be true or false"),
        ({"max_size_bytes": -5}, "positive integer"),
        ({"max_p95_latency_ms": {"one": 3}}, "batch size"),
    ]:
        with pytest.raises(ConfigError, match=match):
            policy_from_dict(bad, where="[models.churn.policy]")
