from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.stats.contingency import chi2_contingency

from core import drift
from core.errors import ConfigError

TOL = dict(rtol=1e-9, atol=1e-9)

SIZES = [(7, 9), (200, 350), (1000, 1000), (5000, 12000), (15000, 4000), (30000, 30000)]


def _samples(rng: np.random.Generator, n: int, m: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(0, 1, n)
    b = rng.normal(rng.uniform(-0.3, 0.3), rng.uniform(0.7, 1.5), m)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return a, b


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_numeric_statistics_equal_scipy(n: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(n * 31 + m + ties)
    a, b = _samples(rng, n, m, ties)
    st = drift.numeric_stats(drift.NumericReference.from_values(a), drift.sorted_finite(b))
    ks = stats.ks_2samp(a, b)  # method="auto": exact up to 10,000 per side, asymptotic beyond
    np.testing.assert_allclose(st.ks, ks.statistic, **TOL)
    np.testing.assert_allclose(st.ks_p_value, ks.pvalue, **TOL)
    w = stats.wasserstein_distance(a, b)
    np.testing.assert_allclose(st.wasserstein, w, **TOL)
    np.testing.assert_allclose(st.wasserstein_norm, w / np.std(a), **TOL)
    assert drift.ks_test(a, b) == pytest.approx((ks.statistic, ks.pvalue), rel=1e-9, abs=1e-12)
    assert drift.wasserstein(b, a) == pytest.approx(stats.wasserstein_distance(b, a), rel=1e-9)


def test_psi_numeric_matches_entropy_definition() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 5000), rng.normal(0.5, 1, 3000)
    edges = np.unique(np.quantile(a, np.linspace(0, 1, 11)[1:-1]))
    p = np.bincount(np.digitize(a, edges, right=True), minlength=edges.size + 1) / a.size
    q = np.bincount(np.digitize(b, edges, right=True), minlength=edges.size + 1) / b.size
    assert (p > 0).all() and (q > 0).all()
    expected = stats.entropy(q, p) + stats.entropy(p, q)
    np.testing.assert_allclose(drift.psi(a, b), expected, **TOL)
    assert drift.psi(a, a) == pytest.approx(0.0, abs=1e-12)


def test_psi_empty_bin_uses_epsilon() -> None:
    a = np.arange(100.0)
    b = np.full(50, 5.0)  # everything in the first decile
    ref = drift.NumericReference.from_values(a)
    assert ref.bin_counts.sum() == 100
    p = ref.bin_counts / 100
    q = np.array([1.0] + [drift.EPSILON] * (p.size - 1))
    np.testing.assert_allclose(drift.psi(a, b), np.sum((q - p) * np.log(q / p)), **TOL)


def test_nan_and_inf_are_dropped() -> None:
    a = np.array([1.0, 2.0, np.nan, 3.0, np.inf])
    b = np.array([2.0, np.nan, 5.0, -np.inf, 6.0])
    st = drift.numeric_stats(drift.NumericReference.from_values(a), drift.sorted_finite(b))
    ks = stats.ks_2samp([1.0, 2.0, 3.0], [2.0, 5.0, 6.0])
    assert (st.n_ref, st.n_cur) == (3, 3)
    assert st.ks == pytest.approx(ks.statistic) and st.ks_p_value == pytest.approx(ks.pvalue)
    assert drift.sorted_finite(pl.Series([3.0, None, 1.0])).tolist() == [1.0, 3.0]


def _cat_samples(rng: np.random.Generator, n: int, m: int) -> tuple[list[str], list[str]]:
    ref_levels = [f"l{i}" for i in range(12)]
    cur_levels = [f"l{i}" for i in range(3, 15)]  # l0-l2 missing, l12-l14 new
    a = rng.choice(ref_levels, n, p=rng.dirichlet(np.ones(12))).tolist()
    b = rng.choice(cur_levels, m, p=rng.dirichlet(np.ones(12))).tolist()
    return a, b


def _aligned(a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    union = sorted(set(a) | set(b))
    return (np.array([a.count(u) for u in union], float), np.array([b.count(u) for u in union], float))


@pytest.mark.parametrize(("n", "m"), [(40, 25), (500, 3000), (8000, 2000)])
def test_categorical_statistics_equal_scipy(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    a, b = _cat_samples(rng, n, m)
    ref = drift.CategoricalReference.from_values(a)
    vc = pl.Series("x", b).value_counts(name="n")
    st = drift.categorical_stats(ref, vc["x"].to_list(), vc["n"].to_numpy())
    p, q = _aligned(a, b)
    chi, pval, _, _ = chi2_contingency(np.vstack([p, q]), correction=False)
    np.testing.assert_allclose(st.chisquare, chi, **TOL)
    np.testing.assert_allclose(st.chisquare_p_value, pval, **TOL)
    np.testing.assert_allclose(st.jensenshannon, jensenshannon(p, q, base=2) ** 2, **TOL)
    eps = drift.EPSILON
    pp, qq = p / p.sum(), q / q.sum()
    pp, qq = np.where(pp == 0, eps, pp), np.where(qq == 0, eps, qq)
    np.testing.assert_allclose(st.psi, np.sum((qq - pp) * np.log(qq / pp)), **TOL)
    assert list(st.new_levels) == sorted(set(b) - set(a)) and st.new_levels
    assert set(st.missing_levels) == set(a) - set(b) and st.missing_levels


def test_chisquare_function_and_degenerate_cases() -> None:
    obs = np.array([[10.0, 20.0, 30.0, 0.0], [5.0, 25.0, 10.0, 0.0]])
    chi, p, _, _ = chi2_contingency(obs[:, :3], correction=False)
    assert drift.chi_square(obs[0], obs[1]) == pytest.approx((chi, p), rel=1e-12)
    assert drift.chi_square([5, 0], [7, 0]) == (0.0, 1.0)  # one category: scipy's dof=0 case
    assert drift.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: 1 bit
    assert drift.jensen_shannon([3, 3], [1, 1]) == pytest.approx(0.0)


def test_default_tests_and_policy_overrides() -> None:
    assert drift.default_test("numeric", 5000, 800) == "ks"
    assert drift.default_test("numeric", 5000, 1001) == "wasserstein"
    assert drift.default_test("categorical", 1000, 1000) == "chisquare"
    assert drift.default_test("categorical", 20000, 5000) == "jensenshannon"
    policy = drift.DriftPolicy.from_config(
        {"share": 0.3, "thresholds": {"wasserstein": 0.2}},
        {"features": {"age": {"test": "psi", "threshold": 0.25}}, "window_rows": 100},
    )
    assert policy.share == 0.3
    assert policy.rule_for("age", "numeric", 10, 10) == ("psi", 0.25)
    assert policy.rule_for("x", "numeric", 5000, 5000) == ("wasserstein", 0.2)
    assert policy.rule_for("c", "categorical", 50, 50) == ("chisquare", 0.05)
    with pytest.raises(ConfigError, match="unknown test 'kl'"):
        drift.DriftPolicy.from_config({"features": {"age": {"test": "kl"}}})
    with pytest.raises(ConfigError, match="share"):
        drift.DriftPolicy.from_config({"share": 2})
    with pytest.raises(ConfigError, match="bogus"):
        drift.DriftPolicy.from_config({"bogus": 1})
    with pytest.raises(ConfigError, match="does not apply"):
        drift.DriftPolicy(numeric_test="chisquare")


def test_compare_flags_shifted_columns_only() -> None:
    rng = np.random.default_rng(7)
    n = 4000
    ref = pl.DataFrame(
        {
            "a": rng.normal(0, 1, n),
            "b": rng.normal(0, 1, n),
            "c": rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1]),
            "d": rng.choice(["x", "y"], n),
        }
    )
    cur = pl.DataFrame(
        {
            "a": rng.normal(1.0, 1, 3000),  # shifted
            "b": rng.normal(0, 1, 3000),
            "c": rng.choice(["x", "y", "z", "new"], 3000, p=[0.1, 0.2, 0.3, 0.4]),  # shifted
            "d": rng.choice(["x", "y"], 3000),
            "extra": np.zeros(3000),
        }
    )
    reference = drift.build_reference(ref, numeric=["a", "b"], categorical=["c", "d"])
    result = drift.compare(reference, cur)
    assert result.drifted_features == ["a", "c"]
    assert result.share == 0.5 and result.drifted
    frame = result.to_frame()
    assert frame["test"].to_list() == ["wasserstein", "wasserstein", "jensenshannon", "jensenshannon"]
    small = drift.compare(reference, cur.head(300))
    assert [f.test for f in small.features] == ["ks", "ks", "chisquare", "chisquare"]
    assert all(f.p_value is not None for f in small.features)
    assert small.drifted_features == ["a", "c"]
    none = drift.compare(reference, ref.sample(2000, seed=1))
    assert not none.drifted and none.share == 0.0


@pytest.mark.parametrize("tied_side", ["reference", "current"])
def test_mixed_tied_and_continuous_samples(tied_side: str) -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 20000), rng.normal(0.05, 1, 15000)
    if tied_side == "reference":
        a = np.round(a, 1)
    else:
        b = np.round(b, 1)
    ref = drift.NumericReference.from_values(a)
    assert (ref.counts is not None) == (tied_side == "reference")
    st = drift.numeric_stats(ref, drift.sorted_finite(b))
    ks = stats.ks_2samp(a, b)
    np.testing.assert_allclose([st.ks, st.ks_p_value], [ks.statistic, ks.pvalue], **TOL)
    np.testing.assert_allclose(st.wasserstein, stats.wasserstein_distance(a, b), **TOL)
    np.testing.assert_array_equal(ref.values, np.sort(a))


def test_reference_bytes_roundtrip() -> None:
    rng = np.random.default_rng(5)
    frame = pl.DataFrame(
        {"x": rng.normal(size=500), "t": np.round(rng.normal(size=500)), "c": rng.choice(["a", "b"], 500)}
    )
    ref = drift.build_reference(frame, numeric=["x", "t"], categorical=["c"])
    back = drift.reference_from_bytes(drift.reference_to_bytes(ref))
    assert list(back) == ["x", "t", "c"]
    assert back["t"].counts is not None and back["x"].counts is None
    for name in ("x", "t"):
        np.testing.assert_array_equal(back[name].values, ref[name].values)
        np.testing.assert_array_equal(back[name].edges, ref[name].edges)
        assert back[name].std == ref[name].std
    assert back["c"].levels == ("a", "b") and back["c"].counts.tolist() == ref["c"].counts.tolist()
    assert drift.compare(back, frame).share == 0.0
