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
    np.testing.assert_allclose(st.jensenshannon, jensenshannon(p, q), **TOL)  # distance, natural log
    np.testing.assert_allclose(st.js_divergence_bits, jensenshannon(p, q, base=2) ** 2, **TOL)
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


# ---------------------------------------------------------------------------- honest defaults
def _levels_frame(rng: np.random.Generator, n: int, new_share: float) -> pl.Series:
    base = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    base[rng.random(n) < new_share] = "brand_new"
    return pl.Series("plan", base.tolist(), dtype=pl.String)


def test_new_level_at_8_percent_is_flagged_on_evidentlys_scale() -> None:
    rng = np.random.default_rng(21)
    ref = drift.CategoricalReference.from_values(_levels_frame(rng, 20000, 0.0))
    cur = _levels_frame(rng, 5000, 0.08)
    res = drift.check_column("plan", ref, cur)
    assert res.test == "jensenshannon" and res.status == "drift" and res.drifted
    union = ["a", "b", "c", "d", "brand_new"]
    p = np.array([ref.counts[ref.levels.index(u)] if u in ref.levels else 0 for u in union], float)
    q = np.array([(cur == u).sum() for u in union], float)
    np.testing.assert_allclose(res.statistic, jensenshannon(p, q), **TOL)  # scipy/Evidently: distance, base e
    assert res.statistic >= 0.1 > res.stats["js_divergence_bits"]  # the old bits default (> 0.1) missed it
    assert res.stats["new_level_share"] == pytest.approx(q[-1] / q.sum())
    assert "new_level_share" in res.quality["flags"]


def test_new_level_below_the_distance_threshold_is_still_flagged_by_its_share() -> None:
    rng = np.random.default_rng(22)
    ref = drift.CategoricalReference.from_values(_levels_frame(rng, 20000, 0.0))
    res = drift.check_column("plan", ref, _levels_frame(rng, 5000, 0.02))
    assert res.statistic < 0.1  # Jensen-Shannon alone would say "no drift"
    assert res.status == "drift" and res.quality["flags"] == ["new_level_share"]
    assert any("never had" in r for r in res.reasons)
    quiet = drift.DriftPolicy.from_config({"quality": {"new_level_share": 0.05}})
    assert drift.check_column("plan", ref, _levels_frame(rng, 5000, 0.02), quiet).status == "ok"


@pytest.mark.parametrize("bad", [None, np.nan, np.inf])
def test_a_column_with_no_usable_value_is_no_data_never_no_drift(bad) -> None:
    rng = np.random.default_rng(3)
    ref = drift.NumericReference.from_values(rng.normal(size=3000))
    res = drift.check_column("x", ref, pl.Series("x", [bad] * 500, dtype=pl.Float64))
    assert res.status == "no_data" and res.drifted is None and res.no_data_side == "current"
    assert res.n_cur == 0 and np.isnan(res.statistic)
    assert "no usable value in the window" in res.reasons[0]
    assert res.quality["null_share" if bad is None else "nonfinite_share"] == 1.0


def test_all_null_reference_column_and_empty_window_are_no_data() -> None:
    ref = drift.build_reference(
        pl.DataFrame({"x": [None] * 100, "c": [None] * 100}, schema={"x": pl.Float64, "c": pl.String}),
        numeric=["x"], categorical=["c"],
    )
    res = drift.compare(ref, pl.DataFrame({"x": np.arange(50.0), "c": ["a"] * 50}))
    assert [f.status for f in res.features] == ["no_data", "no_data"]
    assert {f.no_data_side for f in res.features} == {"reference"}
    assert res.drifted is None and res.status == "no_data" and np.isnan(res.share)
    empty = drift.compare(ref, pl.DataFrame(schema={"x": pl.Float64, "c": pl.String}))
    assert empty.drifted is None and [f.no_data_side for f in empty.features] == ["both", "both"]


def test_three_of_four_features_empty_is_not_a_clean_no_drift() -> None:
    rng = np.random.default_rng(4)
    frame = pl.DataFrame({k: rng.normal(size=4000) for k in "abcd"})
    ref = drift.build_reference(frame, numeric=list("abcd"), categorical=[])
    cur = pl.DataFrame({"a": rng.normal(size=2000), "b": [None] * 2000, "c": [np.nan] * 2000},
                       schema={"a": pl.Float64, "b": pl.Float64, "c": pl.Float64})  # d is missing entirely
    res = drift.compare(ref, cur)
    assert [f.status for f in res.features] == ["ok", "no_data", "no_data", "no_data"]
    assert res.no_data_features == ["b", "c", "d"]
    assert res.share == 0.0 and res.drifted is False and res.status == "no_data"
    frame_ = res.to_frame()
    assert frame_["status"].to_list() == ["ok", "no_data", "no_data", "no_data"]
    assert frame_["drifted"].to_list() == [False, None, None, None]


def test_half_the_rows_turning_null_is_data_quality_drift() -> None:
    rng = np.random.default_rng(5)
    ref = drift.NumericReference.from_values(rng.normal(size=5000))
    vals = rng.normal(size=4000)
    cur = pl.Series("x", [None if i % 2 else v for i, v in enumerate(vals)], dtype=pl.Float64)
    res = drift.check_column("x", ref, cur)
    assert res.stats["wasserstein_norm"] < 0.1  # the values that are there did not move
    assert res.status == "drift" and res.quality["flags"] == ["null_share"]
    assert res.quality["null_share"] == 0.5 and res.quality["ref_null_share"] == 0.0
    few_nulls = pl.Series("x", [None if i % 50 == 0 else v for i, v in enumerate(vals)], dtype=pl.Float64)
    assert drift.check_column("x", ref, few_nulls).status == "ok"  # 2 % nulls: within the ±0.05 tolerance


def test_nan_share_and_out_of_range_share_are_flagged() -> None:
    rng = np.random.default_rng(6)
    ref = drift.NumericReference.from_values(rng.uniform(0, 1, 5000))
    vals = rng.uniform(0, 1, 3000)
    vals[:90] = np.nan  # 3 % NaN
    res = drift.check_column("x", ref, pl.Series("x", vals))
    assert res.quality["flags"] == ["nonfinite_share"] and res.quality["nonfinite_share"] == pytest.approx(0.03)
    vals = rng.uniform(0, 1, 3000)
    vals[:150] += 5.0  # 5 % beyond the reference's maximum
    res = drift.check_column("x", ref, pl.Series("x", vals))
    outside = np.mean((vals < ref.uniques[0]) | (vals > ref.uniques[-1]))
    assert 0.05 <= outside < 0.052  # the shifted 5 %, and the odd value beyond the reference's own extremes
    assert res.quality["flags"] == ["out_of_range_share"] and res.quality["out_of_range_share"] == pytest.approx(outside)


def test_few_usable_values_are_insufficient_not_ok() -> None:
    rng = np.random.default_rng(7)
    ref = drift.NumericReference.from_values(rng.normal(size=3000))
    res = drift.check_column("x", ref, pl.Series("x", rng.normal(size=12)))
    assert res.status == "insufficient" and res.drifted is None and res.test == "ks"
    assert res.p_value is not None  # the statistic is still reported
    res = drift.compare({"x": ref}, pl.DataFrame({"x": rng.normal(size=12)}))
    assert res.drifted is None and res.status == "no_data"


def test_huge_magnitudes_give_finite_statistics() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 1, 20000), rng.normal(0.3, 1, 15000)
    top = max(np.abs(a).max(), np.abs(b).max())
    a, b = a / top, b / top  # |values| <= 1, so scale = 1.7e308 reaches the edge of float64
    for scale in (1e300, 1.7e308):
        ref = drift.NumericReference.from_values(a * scale)
        st = drift.numeric_stats(ref, drift.sorted_finite(b * scale))
        assert all(np.isfinite(v) for v in (st.wasserstein_norm, st.psi, st.ks, st.ks_p_value, ref.std, ref.mean))
        np.testing.assert_allclose(st.wasserstein_norm, stats.wasserstein_distance(a, b) / np.std(a), rtol=1e-9)
        np.testing.assert_allclose(st.ks, stats.ks_2samp(a, b).statistic, **TOL)
        assert drift.check_column("x", ref, pl.Series("x", b * scale)).status == "drift"


def test_psi_of_an_empty_sample_is_nan() -> None:
    assert np.isnan(drift.psi(np.arange(100.0), []))
    assert np.isnan(drift.psi(np.arange(100.0), [np.nan, np.inf]))
    assert np.isnan(drift.psi([], np.arange(10.0)))
    assert np.isnan(drift.psi_categorical([3, 4], [0, 0]))
    assert np.isnan(drift.jensen_shannon([3, 4], [0, 0]))


def test_ks_and_its_p_value_are_computed_only_when_asked() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=20000), rng.normal(0.02, 1, 20000)
    ref = drift.NumericReference.from_values(a)
    lazy = drift.check_column("x", ref, pl.Series("x", b))
    assert lazy.test == "wasserstein" and lazy.stats["ks"] is None and lazy.stats["ks_p_value"] is None
    full = drift.check_column("x", ref, pl.Series("x", b), drift.DriftPolicy(statistics="all"))
    ks = stats.ks_2samp(a, b)
    np.testing.assert_allclose([full.stats["ks"], full.stats["ks_p_value"]], [ks.statistic, ks.pvalue], **TOL)
    assert full.statistic == lazy.statistic


@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 7), (1000, 999), (4000, 4000), (777, 12000)])
def test_wasserstein_from_the_quantile_coupling_equals_scipy(n: int, m: int) -> None:
    rng = np.random.default_rng(n + 7 * m)
    for a, b in ((rng.exponential(1, n), rng.exponential(1.3, m)), (np.round(rng.normal(size=n)), rng.normal(size=m)),
                 (rng.normal(size=n), np.round(rng.normal(size=m), 1))):
        st = drift.numeric_stats(drift.NumericReference.from_values(a), drift.sorted_finite(b), ks=False)
        np.testing.assert_allclose(st.wasserstein, stats.wasserstein_distance(a, b), **TOL)


def test_expected_drift_features_are_reported_but_not_counted() -> None:
    rng = np.random.default_rng(10)
    ref_frame = pl.DataFrame({"month": rng.integers(1, 13, 6000).astype(float), "x": rng.normal(size=6000)})
    cur = pl.DataFrame({"month": np.full(2000, 7.0), "x": rng.normal(size=2000)})
    reference = drift.build_reference(ref_frame, numeric=["month", "x"], categorical=[])
    plain = drift.compare(reference, cur)
    assert plain.drifted and plain.drifted_features == ["month"]
    policy = drift.DriftPolicy.from_config({"features": {"month": {"role": "expected_drift"}}})
    res = drift.compare(reference, cur, policy)
    month = res.features[0]
    assert month.status == "drift" and month.role == "expected_drift" and not month.counted
    assert res.drifted is False and res.share == 0.0 and res.expected_drift == ["month"]
    assert res.to_frame()["role"].to_list() == ["expected_drift", "feature"]
    with pytest.raises(ConfigError, match="role must be one of"):
        drift.DriftPolicy.from_config({"features": {"month": {"role": "ignore"}}})


def test_policy_config_for_quality_multivariate_and_statistics() -> None:
    policy = drift.DriftPolicy.from_config(
        {"quality": {"null_share": 0.2}, "multivariate_threshold": 0.6, "multivariate_sample": 2000},
        {"statistics": "all", "min_values": 10, "features": {"m": {"role": "expected_drift"}}},
        {"features": {"m": {"threshold": 0.3}}},
    )
    assert policy.quality.null_share == 0.2 and policy.quality.new_level_share == 0.01
    assert (policy.multivariate_threshold, policy.multivariate_sample, policy.min_values) == (0.6, 2000, 10)
    assert policy.features["m"] == drift.FeatureRule(None, 0.3, "expected_drift")
    for bad, match in (({"quality": {"nulls": 0.1}}, r"\[drift.quality\]: unknown key\(s\) nulls"), ({"quality": {"null_share": 2}}, "share in"),
                       ({"statistics": "some"}, "statistics"), ({"multivariate_threshold": 0.3}, "AUC"),
                       ({"multivariate": "yes"}, "true or false")):
        with pytest.raises(ConfigError, match=match):
            drift.DriftPolicy.from_config(bad)


def test_multivariate_verdict_needs_more_separation_on_small_samples() -> None:
    drifted, effective, se0 = drift.multivariate_verdict(0.58, 10_000, 10_000, 0.55)
    assert drifted and effective == 0.55 and se0 == pytest.approx(np.sqrt(20001 / (12 * 1e8)))
    drifted, effective, _ = drift.multivariate_verdict(0.58, 100, 100, 0.55)
    assert not drifted and effective == pytest.approx(0.5 + 3 * np.sqrt(201 / 120000))
    assert drift.multivariate_verdict(float("nan"), 10, 10, 0.55)[0] is None


def test_reference_keeps_quality_counts_through_bytes() -> None:
    frame = pl.DataFrame({"x": [1.0, None, np.nan, 2.0, np.inf], "c": ["a", None, "b", "a", None]})
    ref = drift.build_reference(frame, numeric=["x"], categorical=["c"])
    back = drift.reference_from_bytes(drift.reference_to_bytes(ref))
    assert (back["x"].rows, back["x"].nulls, back["x"].nonfinite, back["x"].n) == (5, 1, 2, 2)
    assert (back["c"].rows, back["c"].nulls, back["c"].n) == (5, 2, 3)


# ---------------------------------------------------------------------------- CBPE (pure)
def _pava(y: list[float], w: list[float]) -> list[float]:
    blocks = [[v, wt, 1] for v, wt in zip(y, w, strict=True)]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][0] > blocks[i + 1][0]:
            v0, w0, c0 = blocks[i]
            v1, w1, c1 = blocks.pop(i + 1)
            blocks[i] = [(v0 * w0 + v1 * w1) / (w0 + w1), w0 + w1, c0 + c1]
            i = max(i - 1, 0)
        else:
            i += 1
    return [b[0] for b in blocks for _ in range(b[2])]


def test_isotonic_calibration_pools_ties_and_matches_pava() -> None:
    rng = np.random.default_rng(11)
    s = np.round(rng.uniform(0, 1, 400), 2)  # ties
    y = (rng.random(400) < s**2).astype(float)  # miscalibrated: true P = s^2
    cal = drift.Calibration.fit(s, y)
    assert cal.applied and cal.ece_after < cal.ece_before
    xs = np.unique(s)
    means = [y[s == x].mean() for x in xs]
    weights = [float((s == x).sum()) for x in xs]
    np.testing.assert_allclose(cal.x, xs)
    np.testing.assert_allclose(cal.y, _pava(means, weights), atol=1e-12)
    assert np.all(np.diff(cal(np.linspace(0, 1, 101))) >= 0)
    assert cal(np.array([-5.0]))[0] == cal.y[0] and cal(np.array([5.0]))[0] == cal.y[-1]
    back = drift.Calibration.from_bytes(cal.to_bytes())
    np.testing.assert_array_equal(back(s), cal(s))
    separable = drift.Calibration.fit(np.r_[np.full(50, 0.3), np.full(50, 0.6)], np.r_[np.zeros(50), np.ones(50)])
    assert not separable.applied  # AUC 1: nothing to calibrate (NannyML's rule)
    np.testing.assert_array_equal(separable([0.3, 0.6]), [0.3, 0.6])
    with pytest.raises(ValueError, match="0 or 1"):
        drift.Calibration.fit([0.2, 0.4], [0, 2])


def test_cbpe_estimates_and_sampling_errors_match_label_draws() -> None:
    rng = np.random.default_rng(12)
    s = rng.beta(1.3, 2.5, 2500)
    identity = drift.Calibration(np.array([0.0, 1.0]), np.array([0.0, 1.0]), False, 0.5, 0, 0)
    est = drift.estimate_performance(s, identity)
    from core.training import compute_metrics

    draws = np.array([[compute_metrics("binary", (rng.random(s.size) < s).astype(float), s)[m] for m in est]
                      for _ in range(600)])
    for i, (m, e) in enumerate(est.items()):
        assert e.value == pytest.approx(draws[:, i].mean(), abs=max(0.002, e.sampling_error / 5)), m
        assert e.sampling_error == pytest.approx(draws[:, i].std(), rel=0.12), m
        inside = np.mean((draws[:, i] >= e.lower) & (draws[:, i] <= e.upper))
        assert inside >= 0.99, (m, inside)
    assert np.isnan(drift.estimate_performance([], identity)["auc"].value)
