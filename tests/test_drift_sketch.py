"""Drift statistics from merged per-partition summaries (core.drift.sketch) against the local engine's."""

from __future__ import annotations

import numpy as np
import pytest

from core import drift
from core.drift import sketch


def _samples(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "continuous":
        return rng.normal(0, 1, 40_000), rng.normal(0.1, 1.2, 90_000)
    if kind == "integers":  # few distinct values: the grid is every reference value
        ref = np.round(rng.normal(50, 10, 40_000))
        cur = np.round(rng.normal(52, 10, 90_000))
        return ref, cur[np.isin(cur, ref)]  # and the window takes no value the reference lacks
    if kind == "plain-ties":  # over half distinct, so the reference keeps its plain form, ties and all
        return np.round(rng.beta(2, 5, 30_000), 5), np.concatenate([np.round(rng.beta(2.2, 5, 60_000), 5),
                                                                    rng.beta(2, 5, 30_000)])
    return rng.lognormal(0, 0.8, 40_000), np.concatenate([rng.lognormal(0.3, 0.8, 80_000), [np.nan] * 50, [np.inf] * 5])


@pytest.mark.parametrize("kind", ["continuous", "integers", "plain-ties", "skewed"])
@pytest.mark.parametrize("grid", [64, 4096])
def test_merged_summaries_bound_the_exact_statistics(kind, grid):
    rng = np.random.default_rng(7)
    ref_values, cur = _samples(kind, rng)
    ref = drift.NumericReference.from_values(ref_values)
    col = drift.numeric_column(cur)
    exact = drift.numeric_stats(ref, col.values, ks=True)
    g = sketch.make_grid(ref, grid)
    parts = [sketch.numeric_partial(p, 0, g, keep_values=False) for p in np.array_split(cur, 7)]
    merged = sketch.merge_numeric(parts)
    stats, extra = sketch.sketch_stats(ref, g, merged, ks=True)
    # counts and PSI merge exactly
    assert (merged.usable, merged.nonfinite, merged.rows) == (col.values.size, col.nonfinite, col.rows)
    assert stats["psi"] == pytest.approx(exact.psi, rel=1e-12)
    # Wasserstein in [W, W + bound], KS within its bound
    assert stats["wasserstein"] - 1e-12 <= exact.wasserstein <= stats["wasserstein"] + extra["wasserstein_bound"] + 1e-12
    assert abs(stats["ks"] - exact.ks) <= extra["ks_bound"] + 1e-12
    if grid == 4096:
        assert extra["wasserstein_norm_bound"] < 0.01  # small next to the 0.1 threshold
    if g.exhaustive:  # the grid is every reference value: KS is exact
        assert extra["ks_bound"] == 0 and stats["ks"] == pytest.approx(exact.ks, abs=1e-12)
    if kind == "integers" and g.exhaustive:  # no window value between two of them: Wasserstein exact too
        assert extra["wasserstein_bound"] == 0
        assert stats["wasserstein"] == pytest.approx(exact.wasserstein, rel=1e-12)
    # a check from the merged summary gives the local verdict and the quality shares
    policy = drift.DriftPolicy()
    local = drift.check_numeric("f", ref, col, policy)
    merged_check = drift.check_numeric_sketch("f", ref, g, merged, policy)
    assert (merged_check.status, merged_check.drifted, merged_check.quality) == (local.status, local.drifted, local.quality)
