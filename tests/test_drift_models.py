"""Drift checks that need a real LightGBM model: domain classifier, score-shift attribution, CBPE on a trained model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from core import drift, training


def _correlated(n: int, rho: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rho * x1 + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return pl.DataFrame({"x1": x1, "x2": x2, "x3": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], n)})


def test_a_correlation_flip_is_caught_by_the_multivariate_check_only() -> None:
    ref, cur = _correlated(20000, 0.8, 1), _correlated(5000, -0.8, 2)
    reference = drift.build_reference(ref, numeric=["x1", "x2", "x3"], categorical=["c"])
    uni = drift.compare(reference, cur)
    assert uni.drifted is False and uni.drifted_features == []  # every marginal is the same
    res = training.domain_classifier(ref, cur, features=["x1", "x2", "x3", "c"], categorical=["c"], sample=5000)
    assert (res.n_ref, res.n_cur, res.folds) == (5000, 5000, 5) and len(res.fold_aucs) == 5
    drifted, effective, _ = drift.multivariate_verdict(res.auc, res.n_ref, res.n_cur, 0.55)
    assert drifted and res.auc > 0.8 and effective == 0.55
    top = [name for name, _ in res.importance[:2]]
    assert set(top) == {"x1", "x2"} and sum(share for _, share in res.importance) == pytest.approx(1.0)
    same = training.domain_classifier(ref, _correlated(5000, 0.8, 3), features=["x1", "x2", "x3", "c"],
                                      categorical=["c"], sample=5000)
    assert abs(same.auc - 0.5) < 0.03 and drift.multivariate_verdict(same.auc, same.n_ref, same.n_cur, 0.55)[0] is False
    again = training.domain_classifier(ref, cur, features=["x1", "x2", "x3", "c"], categorical=["c"], sample=5000)
    assert again.auc == res.auc  # deterministic for a seed


def test_domain_classifier_sees_a_new_category_and_refuses_nonsense() -> None:
    ref = _correlated(3000, 0.0, 4)
    cur = _correlated(3000, 0.0, 5).with_columns(pl.when(pl.col("x3") > 0).then(pl.lit("new")).otherwise("c").alias("c"))
    res = training.domain_classifier(ref, cur, features=["x1", "c"], categorical=["c"])
    assert res.auc > 0.7 and res.importance[0][0] == "c"
    tiny = training.domain_classifier(ref, cur.head(3), features=["x1"], categorical=[])
    assert np.isnan(tiny.auc)
    with pytest.raises(training.TrainingError, match="at least one feature"):
        training.domain_classifier(ref, cur, features=[])


def _churnish(n: int, seed: int, shift: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + 10 * shift, 10, n)
    tenure = rng.exponential(24 * (1 - 0.5 * shift), n)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5 - 0.3 * shift, 0.3, 0.2 + 0.3 * shift])
    logit = -1.0 + 0.04 * (age - 40) - 0.05 * tenure + np.where(plan == "pro", 1.2, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame({"age": age, "tenure": tenure, "plan": plan, "churned": y})


@pytest.fixture(scope="module")
def trained():
    return training.train(_churnish(12000, 1), "churned", params={"num_iterations": 60}, seed=1)


def test_contributions_add_up_to_raw_scores_and_attribution_to_the_score_shift(trained) -> None:
    model = trained.model
    ref, cur = _churnish(3000, 2), _churnish(2000, 3, shift=0.8)
    contrib = model.contributions(ref)
    assert contrib.shape == (3000, 4)
    np.testing.assert_allclose(contrib.sum(axis=1), model.raw_scores(ref), rtol=0, atol=1e-9)
    np.testing.assert_allclose(1 / (1 + np.exp(-model.raw_scores(ref))), model.predict(ref), atol=1e-12)
    att = drift.attribute(model.feature_names, contrib.mean(axis=0), model.contributions(cur), n_ref=3000)
    shift = model.raw_scores(cur).mean() - model.raw_scores(ref).mean()
    assert att.score_shift == pytest.approx(shift, abs=1e-9)
    assert sum(f["shift"] for f in att.features) == pytest.approx(shift, abs=1e-9)
    assert sum(f["share"] for f in att.features) == pytest.approx(1.0, abs=1e-9)
    assert [f["feature"] for f in att.features] == sorted(model.feature_names, key=lambda n: -abs(
        next(f["shift"] for f in att.features if f["feature"] == n)))
    assert att.n_cur == 2000 and att.top(1)[0]["feature"] in ("age", "tenure", "plan")
    with pytest.raises(ValueError, match="columns"):
        drift.attribute(["a"], [0.0, 0.0, 0.0], np.zeros((3, 2)), n_ref=1)


def test_cbpe_on_a_trained_model_under_covariate_shift_stays_in_its_band(trained) -> None:
    model = trained.model
    holdout = _churnish(8000, 4)
    cal = drift.Calibration.fit(model.predict(holdout), holdout["churned"].to_numpy(), threshold=0.5)
    for seed, shift in ((5, 0.0), (6, 1.0)):
        window = _churnish(4000, seed, shift=shift)
        scores = model.predict(window)
        est = drift.estimate_performance(scores, cal)
        real = training.compute_metrics("binary", window["churned"].to_numpy(), scores)
        for m, e in est.items():
            assert e.lower <= real[m] <= e.upper, (shift, m, e, real[m])
    ref_est = drift.estimate_performance(model.predict(holdout), cal)["accuracy"].value
    moved = drift.estimate_performance(model.predict(_churnish(4000, 7, shift=1.0)), cal)["accuracy"].value
    assert abs(moved - ref_est) > 0.02  # the shift changes performance, and the estimate sees it
