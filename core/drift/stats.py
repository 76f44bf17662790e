"""The drift statistics: KS, Wasserstein and PSI from one merge of sorted samples; chi-square, Jensen-Shannon and PSI over category counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from core.drift.reference import (
    DEFAULT_BINS,
    CategoricalReference,
    NumericReference,
    _bin_counts,
    _runs,
    sorted_finite,
)

__all__ = [
    "EPSILON",
    "CategoricalStats",
    "NumericStats",
    "categorical_stats",
    "chi_square",
    "jensen_shannon",
    "ks_test",
    "numeric_stats",
    "psi",
    "psi_categorical",
    "wasserstein",
]

EPSILON = 1e-4
"""Proportion given to an empty PSI bin (Evidently's value); bins are not renormalised."""
_KS_EXACT_MAX_N = 10_000  # scipy's MAX_AUTO_N: 'auto' is exact up to here
_STD_FLOOR = 1e-3


# ---------------------------------------------------------------------------- numeric statistics
@dataclass(frozen=True)
class NumericStats:
    """Every numeric statistic of one column, from one merge of the sorted samples."""

    n_ref: int
    n_cur: int
    ks: float
    ks_p_value: float
    wasserstein: float
    wasserstein_norm: float
    psi: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for reports)."""
        return {
            "ks": self.ks,
            "ks_p_value": self.ks_p_value,
            "wasserstein": self.wasserstein,
            "wasserstein_norm": self.wasserstein_norm,
            "psi": self.psi,
        }


def _merge_cdfs(
    ref: np.ndarray, ref_counts: np.ndarray | None, cur: np.ndarray, cur_counts: np.ndarray | None
) -> tuple[float, float]:
    """KS statistic and Wasserstein distance of two sorted samples from one linear merge.

    A stable argsort of ``[ref, cur]`` is a single timsort merge of two sorted runs (linear), so
    neither sample is sorted again. At merged position ``k`` the ECDF difference is
    ``F - G = (r_k·m - c_k·n) / (n·m)`` with ``r_k``, ``c_k`` the reference and current counts so
    far: exact integers, divided once. Inside a group of equal values the delta to the next value
    is 0, so partial counts there add nothing to the integral, and KS looks only where the value
    changes (the last of each group), which is exactly scipy's ``searchsorted(side="right")``.
    Samples in run-length form (``*_counts``) are merged by their distinct values, with weights.
    """
    n = ref.size if ref_counts is None else int(ref_counts.sum())
    m = cur.size if cur_counts is None else int(cur_counts.sum())
    total = ref.size + cur.size
    both = np.concatenate((ref, cur))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both
    is_cur = order[:-1] >= ref.size
    if ref_counts is None and cur_counts is None:
        diff = np.cumsum(is_cur, dtype=np.int64)
        diff *= -(n + m)
        diff += np.arange(m, total * m, m, dtype=np.int64)
    else:
        weights = np.concatenate(
            (np.ones(ref.size, np.int64) if ref_counts is None else ref_counts,
             np.ones(cur.size, np.int64) if cur_counts is None else cur_counts)
        )[order[:-1]]
        cur_w = np.where(is_cur, weights, 0)
        ref_w = weights - cur_w
        diff = np.cumsum(ref_w, dtype=np.int64) * m
        diff -= np.cumsum(cur_w, dtype=np.int64) * n
    del order, is_cur
    np.abs(diff, out=diff)
    deltas = np.diff(merged)
    del merged
    scale = float(n) * float(m)
    w = float(np.dot(diff.astype(np.float64), deltas)) / scale
    d = float(np.max(diff, where=deltas != 0, initial=0)) / scale
    return d, w


def _ks_p_asymp(d: float, n: int, m: int) -> float:
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = EPSILON) -> float:
    p = ref_counts / max(int(ref_counts.sum()), 1)
    q = cur_counts / max(int(cur_counts.sum()), 1)
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_stats(reference: NumericReference, current_sorted: np.ndarray) -> NumericStats:
    """KS, Wasserstein (raw and normed) and PSI of a sorted current sample against a reference.

    Args:
        reference: the stored reference.
        current_sorted: finite current values, sorted ascending (``sorted_finite``).

    Returns:
        The statistics; NaN everywhere when either sample is empty.
    """
    n, m = reference.n, current_sorted.size
    if n == 0 or m == 0:
        nan = math.nan
        return NumericStats(n, m, nan, nan, nan, nan, nan)
    if max(n, m) <= _KS_EXACT_MAX_N:
        res = stats.ks_2samp(reference.values, current_sorted)  # small: scipy's exact p-value
        d, p = float(res.statistic), float(res.pvalue)
        _, w = _merge_cdfs(reference.uniques, reference.counts, current_sorted, None)
    else:
        uniques, counts = _runs(current_sorted)
        d, w = _merge_cdfs(reference.uniques, reference.counts, uniques, counts)
        p = _ks_p_asymp(d, n, m)
    norm = w / max(reference.std, _STD_FLOOR)
    cur_counts = _bin_counts(current_sorted, reference.edges)
    return NumericStats(n, m, d, p, w, norm, _psi_from_counts(reference.bin_counts, cur_counts))


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value (``scipy.stats.ks_2samp``, method auto)."""
    s = numeric_stats(NumericReference.from_values(reference), sorted_finite(current))
    return s.ks, s.ks_p_value


def wasserstein(reference: Any, current: Any, *, normed: bool = False) -> float:
    """Order-1 Wasserstein distance (``scipy.stats.wasserstein_distance``); ``normed`` divides by the reference std."""
    s = numeric_stats(NumericReference.from_values(reference), sorted_finite(current))
    return s.wasserstein_norm if normed else s.wasserstein


def psi(reference: Any, current: Any, *, bins: int = DEFAULT_BINS, eps: float = EPSILON) -> float:
    """PSI of numeric samples over the reference's quantile bins (see the module docstring)."""
    ref = NumericReference.from_values(reference, bins=bins)
    cur = sorted_finite(current)
    return _psi_from_counts(ref.bin_counts, _bin_counts(cur, ref.edges), eps)


# ---------------------------------------------------------------------------- categorical statistics
@dataclass(frozen=True)
class CategoricalStats:
    """Every categorical statistic of one column over the union of categories."""

    n_ref: int
    n_cur: int
    chisquare: float
    chisquare_p_value: float
    jensenshannon: float
    psi: float
    new_levels: tuple[str, ...] = ()
    missing_levels: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a plain dict (for reports)."""
        return {
            "chisquare": self.chisquare,
            "chisquare_p_value": self.chisquare_p_value,
            "jensenshannon": self.jensenshannon,
            "psi": self.psi,
            "new_levels": list(self.new_levels),
            "missing_levels": list(self.missing_levels),
        }


def chi_square(ref_counts: Any, cur_counts: Any) -> tuple[float, float]:
    """Pearson chi-square of homogeneity on the 2 x K table of aligned counts (no Yates correction).

    Categories absent from both rows are dropped first (as scipy would refuse a zero expected
    count). Equals ``scipy.stats.chi2_contingency([ref, cur], correction=False)[:2]``.
    """
    table = np.vstack([np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    k = table.shape[1]
    rows = table.sum(axis=1)
    if k <= 1 or np.any(rows == 0):
        return 0.0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(stats.chi2.sf(stat, k - 1))


def jensen_shannon(ref_counts: Any, cur_counts: Any, *, base: float = 2.0) -> float:
    """Jensen-Shannon divergence ½KL(P||M) + ½KL(Q||M) of aligned counts, in log ``base`` (bits)."""
    p = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(cur_counts, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    mid = (p + q) / 2.0
    js = 0.5 * np.sum(special.rel_entr(p, mid)) + 0.5 * np.sum(special.rel_entr(q, mid))
    return float(js / np.log(base))


def psi_categorical(ref_counts: Any, cur_counts: Any, *, eps: float = EPSILON) -> float:
    """PSI over aligned category counts (empty categories get proportion ``eps``)."""
    return _psi_from_counts(np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64), eps)


def categorical_stats(
    reference: CategoricalReference, levels: Sequence[str], counts: Any
) -> CategoricalStats:
    """Chi-square, Jensen-Shannon and PSI of current category counts against a reference."""
    counts = np.asarray(counts, dtype=np.int64)
    ref_index = {lv: i for i, lv in enumerate(reference.levels)}
    new = sorted(lv for lv in levels if lv not in ref_index)
    union = list(reference.levels) + new
    pos = {lv: i for i, lv in enumerate(union)}
    ref_c = np.zeros(len(union), dtype=np.int64)
    ref_c[: len(reference.levels)] = reference.counts
    cur_c = np.zeros(len(union), dtype=np.int64)
    if len(levels):
        np.add.at(cur_c, np.array([pos[lv] for lv in levels], dtype=np.int64), counts)
    n_ref, n_cur = int(ref_c.sum()), int(cur_c.sum())
    seen = set(levels)
    missing = tuple(lv for lv, c in zip(reference.levels, reference.counts, strict=True) if c and lv not in seen)
    if n_ref == 0 or n_cur == 0:
        nan = math.nan
        return CategoricalStats(n_ref, n_cur, nan, nan, nan, nan, tuple(new), missing)
    chi, p = chi_square(ref_c, cur_c)
    return CategoricalStats(
        n_ref, n_cur, chi, p, jensen_shannon(ref_c, cur_c), psi_categorical(ref_c, cur_c), tuple(new), missing
    )


