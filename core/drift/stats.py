"""The drift statistics: Wasserstein from the quantile coupling, KS from one merge of the sorted samples (only when
asked), PSI from the reference's quantile bins; chi-square, Jensen-Shannon and PSI over category counts."""

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
    _dot,
    _runs,
    scale_of,
    sorted_finite,
)

__all__ = [
    "EPSILON",
    "CategoricalStats",
    "NumericStats",
    "categorical_stats",
    "chi_square",
    "jensen_shannon",
    "jensen_shannon_distance",
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
_FLOAT_EXACT = 2**50  # breakpoint arithmetic in float64 is exact below this (n * m)


# ---------------------------------------------------------------------------- numeric statistics
@dataclass(frozen=True)
class NumericStats:
    """The numeric statistics of one column. ``ks``/``ks_p_value`` are None when not asked for
    (they cost a merge of the samples, and the p-value up to 0.35 CPU s at 1M rows)."""

    n_ref: int
    n_cur: int
    wasserstein: float
    wasserstein_norm: float
    psi: float
    ks: float | None = None
    ks_p_value: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """The statistics as a plain dict (for reports)."""
        return {
            "wasserstein": self.wasserstein,
            "wasserstein_norm": self.wasserstein_norm,
            "psi": self.psi,
            "ks": self.ks,
            "ks_p_value": self.ks_p_value,
        }


def _ks_statistic(
    ref: np.ndarray, ref_counts: np.ndarray | None, cur: np.ndarray, cur_counts: np.ndarray | None
) -> float:
    """Two-sample KS statistic ``max |F_ref - F_cur|`` over every observed value, from one linear merge.

    A stable argsort of ``[ref, cur]`` is a single timsort merge of two sorted runs (linear), so
    neither sample is sorted again. At merged position ``k`` the ECDF difference is
    ``(r_k·m - c_k·n) / (n·m)`` with ``r_k``, ``c_k`` the counts so far: exact integers, divided
    once. Only the last of each group of equal values counts (right-continuous ECDFs), which is
    scipy's ``searchsorted(side="right")``. Run-length samples (``*_counts``) merge their
    distinct values with weights.
    """
    n = ref.size if ref_counts is None else int(ref_counts.sum())
    m = cur.size if cur_counts is None else int(cur_counts.sum())
    both = np.concatenate((ref, cur))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both
    is_cur = order[:-1] >= ref.size
    if ref_counts is None and cur_counts is None:
        diff = np.cumsum(is_cur, dtype=np.int64)
        diff *= -(n + m)
        diff += np.arange(m, (ref.size + cur.size) * m, m, dtype=np.int64)
    else:
        weights = np.concatenate(
            (np.ones(ref.size, np.int64) if ref_counts is None else ref_counts,
             np.ones(cur.size, np.int64) if cur_counts is None else cur_counts)
        )[order[:-1]]
        cur_w = np.where(is_cur, weights, 0)
        diff = np.cumsum(weights - cur_w, dtype=np.int64) * m
        diff -= np.cumsum(cur_w, dtype=np.int64) * n
    del order, is_cur
    np.abs(diff, out=diff)
    changes = merged[1:] != merged[:-1]  # comparisons, not differences: no overflow at 1e308
    return float(np.max(diff, where=changes, initial=0)) / (float(n) * float(m))


def _breaks_le(cum: np.ndarray | None, scale: int, x: np.ndarray) -> np.ndarray:
    """How many quantile breakpoints (``cum·scale``, or ``1..N`` times ``scale``) are ``<= x``."""
    if cum is None:
        return x // scale
    return np.searchsorted(cum * scale, x, side="right")


def _w1_plain(a: np.ndarray, b: np.ndarray) -> float:
    """``Σ len·|Q_a - Q_b|`` over the quantile intervals of two plain sorted samples (not yet / n·m)."""
    n, m = a.size, b.size
    if n == m:  # breakpoints coincide: the coupling pairs the i-th smallest values
        d = a - b
        np.abs(d, out=d)
        return float(d.sum()) * n
    total = 0.0
    for x_vals, y_vals, nx, ny, below in ((a, b, n, m, 1.0), (b, a, m, n, 0.0)):
        # intervals ending at x's breakpoints (k+1)·ny; y holds its value whose breakpoint is the
        # first at or after the end: index = y's breakpoints strictly below (first pass) or at or
        # below (second pass, so a breakpoint both share gets length 0 there).
        x = np.arange(1, nx + 1, dtype=np.float64) * ny  # integers < 2**50: exact in float64
        q = np.floor((x - below) / nx)
        prev = np.maximum(q * nx, x - ny)
        x -= prev
        d = np.take(y_vals, np.minimum(q, y_vals.size - 1).astype(np.intp))
        d -= x_vals
        np.abs(d, out=d)
        total += float(_dot(x, d))
    return total


def _w1(va: np.ndarray, ca: np.ndarray | None, vb: np.ndarray, cb: np.ndarray | None) -> float:
    """Order-1 Wasserstein distance as ``∫_0^1 |Q_a(u) - Q_b(u)| du`` over the merged quantile breakpoints.

    ``va``/``vb`` are sorted values, ``ca``/``cb`` their cumulative counts in run-length form
    (None: one each). The breakpoints of ``Q_a`` are ``ca/n``, of ``Q_b`` ``cb/m``; scaled by
    ``n·m`` they are integers, so which value each sample holds on each interval is integer
    arithmetic: no merge or sort of the data. Equals ``∫ |F_a - F_b| dx`` (scipy's form).
    """
    n = va.size if ca is None else int(ca[-1])
    m = vb.size if cb is None else int(cb[-1])
    if ca is None and cb is None and n * m < _FLOAT_EXACT:
        return _w1_plain(va, vb) / (float(n) * float(m))
    xa = (np.arange(1, n + 1, dtype=np.int64) if ca is None else ca) * m
    xb = (np.arange(1, m + 1, dtype=np.int64) if cb is None else cb) * n
    # intervals ending at an A breakpoint x: B holds its value whose breakpoint is the first >= x
    qb = _breaks_le(cb, n, xa - 1)
    prev = np.maximum(np.concatenate(([0], xa[:-1])), np.where(qb > 0, xb[np.maximum(qb - 1, 0)], 0))
    total = float(_dot((xa - prev).astype(np.float64), np.abs(va - vb[qb])))
    # intervals ending at a B breakpoint y (a breakpoint shared with A gets length 0)
    fa = _breaks_le(ca, m, xb)
    prev = np.maximum(np.concatenate(([0], xb[:-1])), np.where(fa > 0, xa[np.maximum(fa - 1, 0)], 0))
    total += float(_dot((xb - prev).astype(np.float64), np.abs(va[np.minimum(fa, va.size - 1)] - vb)))
    return total / (float(n) * float(m))


def _ks_p_asymp(d: float, n: int, m: int) -> float:
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = EPSILON) -> float:
    n_ref, n_cur = float(ref_counts.sum()), float(cur_counts.sum())
    if n_ref == 0 or n_cur == 0:
        return math.nan  # an empty sample has no distribution to compare
    p = ref_counts / n_ref
    q = cur_counts / n_cur
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_stats(
    reference: NumericReference, current_sorted: np.ndarray, *, ks: bool = True, p_value: bool | None = None
) -> NumericStats:
    """Wasserstein (raw and normed), PSI and, when asked, KS of a sorted current sample against a reference.

    Args:
        reference: the stored reference.
        current_sorted: finite current values, sorted ascending (``sorted_finite``).
        ks: compute the KS statistic (one merge of the samples).
        p_value: compute its p-value too (default: when ``ks``).

    Returns:
        The statistics; NaN everywhere when either sample is empty.
    """
    p_value = ks if p_value is None else p_value
    n, m = reference.n, current_sorted.size
    if n == 0 or m == 0:
        nan = math.nan
        return NumericStats(n, m, nan, nan, nan, nan if ks else None, nan if p_value else None)
    uniques, counts = _runs(current_sorted)
    scale = scale_of(reference.uniques, uniques)
    ref_vals, cur_vals = reference.uniques, uniques
    if scale != 1.0:  # exact power-of-two scaling keeps differences of values near 1e308 finite
        ref_vals, cur_vals = ref_vals / scale, cur_vals / scale
    cur_cum = None if counts is None else np.cumsum(counts, dtype=np.int64)
    w_scaled = _w1(ref_vals, reference.cumulative, cur_vals, cur_cum)
    norm = w_scaled / max(reference.std / scale, _STD_FLOOR / scale)
    d = p = None
    if ks or p_value:
        if max(n, m) <= _KS_EXACT_MAX_N:
            res = stats.ks_2samp(reference.values, current_sorted)  # small: scipy's exact p-value
            d, p = float(res.statistic), float(res.pvalue)
        else:
            d = _ks_statistic(reference.uniques, reference.counts, uniques, counts)
            p = _ks_p_asymp(d, n, m) if p_value else None
    psi_ = _psi_from_counts(reference.bin_counts, _bin_counts(current_sorted, reference.edges))
    return NumericStats(n, m, w_scaled * scale, norm, psi_, d if ks else None, p if p_value else None)


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value (``scipy.stats.ks_2samp``, method auto)."""
    s = numeric_stats(NumericReference.from_values(reference), sorted_finite(current))
    assert s.ks is not None and s.ks_p_value is not None
    return s.ks, s.ks_p_value


def wasserstein(reference: Any, current: Any, *, normed: bool = False) -> float:
    """Order-1 Wasserstein distance (``scipy.stats.wasserstein_distance``); ``normed`` divides by the reference std."""
    s = numeric_stats(NumericReference.from_values(reference), sorted_finite(current), ks=False)
    return s.wasserstein_norm if normed else s.wasserstein


def psi(reference: Any, current: Any, *, bins: int = DEFAULT_BINS, eps: float = EPSILON) -> float:
    """PSI of numeric samples over the reference's quantile bins (see the package docstring); NaN if a sample is empty."""
    ref = NumericReference.from_values(reference, bins=bins)
    cur = sorted_finite(current)
    return _psi_from_counts(ref.bin_counts, _bin_counts(cur, ref.edges), eps)


# ---------------------------------------------------------------------------- categorical statistics
@dataclass(frozen=True)
class CategoricalStats:
    """Every categorical statistic of one column over the union of categories.

    ``jensenshannon`` is the Jensen-Shannon *distance* in natural-log units (Evidently's and
    scipy's ``jensenshannon``), ``js_divergence_bits`` its square in bits (the seed's number);
    ``new_level_share`` is the share of current values whose level the reference never had.
    """

    n_ref: int
    n_cur: int
    chisquare: float
    chisquare_p_value: float
    jensenshannon: float
    js_divergence_bits: float
    psi: float
    new_levels: tuple[str, ...] = ()
    missing_levels: tuple[str, ...] = ()
    new_level_share: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a plain dict (for reports)."""
        return {
            "chisquare": self.chisquare,
            "chisquare_p_value": self.chisquare_p_value,
            "jensenshannon": self.jensenshannon,
            "js_divergence_bits": self.js_divergence_bits,
            "psi": self.psi,
            "new_levels": list(self.new_levels),
            "missing_levels": list(self.missing_levels),
            "new_level_share": self.new_level_share,
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
    """Jensen-Shannon divergence ½KL(P||M) + ½KL(Q||M) of aligned counts, in log ``base`` (bits by default).

    ``scipy.spatial.distance.jensenshannon(P, Q, base) ** 2``; NaN when either sample is empty.
    """
    p = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(cur_counts, dtype=np.float64)
    if p.sum() == 0 or q.sum() == 0:
        return math.nan
    p = p / p.sum()
    q = q / q.sum()
    mid = (p + q) / 2.0
    js = 0.5 * np.sum(special.rel_entr(p, mid)) + 0.5 * np.sum(special.rel_entr(q, mid))
    return max(float(js / np.log(base)), 0.0)


def jensen_shannon_distance(ref_counts: Any, cur_counts: Any, *, base: float = math.e) -> float:
    """Jensen-Shannon distance: the square root of the divergence in log ``base`` (natural log by default).

    This is ``scipy.spatial.distance.jensenshannon(P, Q)`` and Evidently's ``jensenshannon``
    statistic (default threshold 0.1); NaN when either sample is empty.
    """
    return math.sqrt(jensen_shannon(ref_counts, cur_counts, base=base))


def psi_categorical(ref_counts: Any, cur_counts: Any, *, eps: float = EPSILON) -> float:
    """PSI over aligned category counts (empty categories get proportion ``eps``); NaN if a sample is empty."""
    return _psi_from_counts(np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64), eps)


def categorical_stats(
    reference: CategoricalReference, levels: Sequence[str], counts: Any
) -> CategoricalStats:
    """Chi-square, Jensen-Shannon (distance and divergence), PSI and new levels of current counts vs a reference."""
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
    new_share = float(cur_c[len(reference.levels):].sum()) / n_cur if n_cur else math.nan
    if n_ref == 0 or n_cur == 0:
        nan = math.nan
        return CategoricalStats(n_ref, n_cur, nan, nan, nan, nan, nan, tuple(new), missing, new_share)
    chi, p = chi_square(ref_c, cur_c)
    bits = jensen_shannon(ref_c, cur_c)
    distance = math.sqrt(bits * math.log(2.0))  # divergence in nats, square-rooted
    return CategoricalStats(
        n_ref, n_cur, chi, p, distance, bits, psi_categorical(ref_c, cur_c), tuple(new), missing, new_share
    )
