"""Paired candidate-vs-champion tests: DeLong for AUC, paired bootstrap otherwise; the gate's use of them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ttest_rel

from core import gating, significance
from core.training import compute_metrics


def _world(n: int = 400, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    a = y * 0.9 + rng.normal(0, 1, n)
    b = y * 0.6 + rng.normal(0, 1, n) + 0.3 * a  # correlated with a, as two models of one problem are
    return y, a, b


def test_delong_matches_the_definition_on_small_data():
    y, a, b = _world(150)
    aucs, cov = significance.delong(y, np.vstack((a, b)))
    for k, s in enumerate((a, b)):
        assert aucs[k] == pytest.approx(compute_metrics("binary", y, 1 / (1 + np.exp(-s)))["auc"], abs=1e-12)
    # DeLong's structural components, by brute force over every (positive, negative) pair
    comps = []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(1), psi.mean(0)))
    s10 = np.cov(np.vstack([c[0] for c in comps]))
    s01 = np.cov(np.vstack([c[1] for c in comps]))
    expected = s10 / (y == 1).sum() + s01 / (y == 0).sum()
    np.testing.assert_allclose(cov, expected, rtol=1e-10)


def test_delong_standard_error_agrees_with_a_paired_bootstrap():
    y, a, b = _world(300, seed=2)
    aucs, cov = significance.delong(y, np.vstack((a, b)))
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(1500):
        i = rng.integers(0, y.size, y.size)
        diffs.append(compute_metrics("binary", y[i], a[i])["auc"] - compute_metrics("binary", y[i], b[i])["auc"])
    assert se == pytest.approx(np.std(diffs), rel=0.1)


def test_bootstrap_of_a_per_row_loss_agrees_with_the_paired_t_test():
    y, a, b = _world(500, seed=3)
    pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    cmp = significance.compare("log_loss", y, pa, pb, resamples=4000)
    loss = lambda p: -(y * np.log(p) + (1 - y) * np.log(1 - p))  # noqa: E731
    t = ttest_rel(loss(pb), loss(pa), alternative="greater")  # candidate's loss lower = better
    assert cmp.method == "paired_bootstrap" and cmp.p_value == pytest.approx(t.pvalue, abs=0.03)
    assert cmp.improvement == pytest.approx(float(np.mean(loss(pb) - loss(pa))), rel=1e-12)


def test_identical_models_are_not_significant_and_a_real_gain_is():
    y, a, _ = _world(2000, seed=4)
    noise = a + np.random.default_rng(9).normal(0, 0.01, a.size)  # the same model, retrained on noise
    same = significance.compare("auc", y, noise, a)
    assert not same.significant and same.ci_low < 0 < same.ci_high
    better = significance.compare("auc", y, y * 3 + a, a)
    assert better.significant and better.ci_low > 0 and better.p_value < 1e-6
    assert "DeLong" in better.summary() and "n=2000" in better.summary()


def _inputs(cmp: dict, **kw) -> gating.GateInputs:
    return gating.GateInputs("m", 2, "binary", {"auc": cmp["candidate"]}, champion_version=1,
                             champion_metrics={"auc": cmp["champion"]}, validation_status="passed", size_bytes=1,
                             latency_p95_ms={1: 1.0, 100: 1.0}, comparison=cmp, **kw)


def test_the_gate_reports_the_interval_and_counts_significance_only_as_advice():
    y, a, _ = _world(2000, seed=5)
    tiny = significance.compare("auc", y, a + 1e-9 * y, a).to_dict()  # a hair better: noise
    report = gating.run_gate(gating.Policy(), _inputs(tiny))
    sig = next(c for c in report.checks if c.name == "significant:auc")
    assert sig.advisory and not sig.passed and "CI" in sig.detail and "DeLong" in sig.detail
    assert report.passed and report.significant is False  # a person may promote; automation may not
    off = gating.run_gate(gating.policy_from_dict({"significance": False}), _inputs(tiny))
    assert off.significant is None
    with pytest.raises(Exception, match="significance"):
        gating.policy_from_dict({"significance": 2})


def test_leakage_flag_fails_the_gate_unless_the_policy_allows_it():
    y, a, _ = _world(200, seed=6)
    cmp = significance.compare("auc", y, a, a).to_dict()
    leak = {"flagged": [{"feature": "arr_delay", "why": "AUC 1.0000 on its own (>= 0.99)", "score": 1.0}]}
    report = gating.run_gate(gating.Policy(), _inputs(cmp, leakage=leak))
    assert not report.passed and [c.name for c in report.failed] == ["no_leakage"]
    assert "arr_delay" in report.failed[0].detail
    allowed = gating.run_gate(gating.policy_from_dict({"refuse_leakage": False}), _inputs(cmp, leakage=leak))
    assert allowed.passed
