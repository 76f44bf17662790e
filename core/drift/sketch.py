"""Mergeable per-partition summaries of a window, for drift checks run as map-reduce over partitions.

A cluster cannot sort a window larger than one machine; each partition is summarised instead,
the summaries are added up, and the statistics are computed from the sums. What merges exactly:

* **Counts**: rows, nulls, NaN/inf, usable values, category counts, out-of-range counts, PSI bin
  counts. Chi-square, Jensen-Shannon, PSI and every data-quality share computed from them equal
  the local engine's.
* **Numeric columns** are summarised on a *grid*: the reference's distinct values when it has at
  most ``grid`` of them (integers, rounded values, calendar features), else ``grid`` of them at
  evenly spaced reference ranks (the minimum and maximum always included). Per partition: how many
  values equal each grid point, how many fall strictly between two points, and the sum of their
  distances to the next point (``Σ (g_{j+1} - v)``), plus the sums beyond the outermost points.

From those sums ``∫ F_cur`` over every cell between grid points is exact, and the reference's
ECDF is known exactly (its sorted values are on the client), so the Wasserstein distance
``∫ |F_ref - F_cur| dx`` is exact on every cell where the two ECDFs cannot cross. On a cell where
they may cross, the reported value takes ``|∫ h|`` (``h = F_ref - F_cur``), which is at most
``2 w · min(h_max, -h_min)`` below ``∫ |h|`` (``w`` the cell's width, ``h_max``/``h_min`` the
bounds of ``h`` there). The sum of those terms is reported as ``wasserstein_bound``
(``wasserstein_norm_bound`` on the normed scale): the true distance lies in ``[W, W + bound]``,
a bound computed from the data (0 when nothing can cross). The tails beyond the reference's
minimum and maximum are exact. KS ``D`` is exact at every grid point and bounded in between
(``ks_bound``). When the grid is every distinct reference value (the reference's ECDF is then flat
between points), KS is exact, and so is the Wasserstein distance unless the window has values
strictly between two reference values on a cell where the ECDFs cross.

Pure: numpy only, no I/O; the orchestration over a cluster is ``core.compute``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from core.drift.reference import NumericReference
from core.drift.stats import _ks_p_asymp, _psi_from_counts

__all__ = [
    "Grid",
    "NumericSketch",
    "categorical_partial",
    "make_grid",
    "merge_categorical",
    "merge_numeric",
    "numeric_partial",
    "sketch_stats",
]

_STD_FLOOR = 1e-3


class _Values(TypedDict):
    """``NumericStats.as_dict`` of a sketch: the first three are always computed (NaN when empty)."""

    wasserstein: float
    wasserstein_norm: float
    psi: float
    ks: float | None
    ks_p_value: float | None


@dataclass(frozen=True)
class Grid:
    """The grid of one numeric column and the reference's exact ECDF quantities on it.

    ``points``: sorted grid values (reference values; first = reference minimum, last = maximum).
    ``exhaustive``: the points are every distinct reference value. ``edges``: the PSI edges.
    ``ref_le``/``ref_lt``: reference counts ``<= g_j`` / ``< g_j``; ``ref_wsum[j]``: ``Σ (g_j - r)``
    over reference values strictly inside cell ``(g_{j-1}, g_j)``.
    """

    points: np.ndarray
    exhaustive: bool
    edges: np.ndarray
    ref_le: np.ndarray
    ref_lt: np.ndarray
    ref_wsum: np.ndarray
    n_ref: int


def make_grid(reference: NumericReference, size: int) -> Grid | None:
    """The grid of a numeric reference (None when the reference has no value)."""
    n = reference.n
    if n == 0:
        return None
    uniques = np.asarray(reference.uniques, dtype=np.float64)
    if reference.counts is None:  # the plain form may still hold ties (it is kept when over half are distinct)
        starts = np.flatnonzero(np.concatenate(([True], uniques[1:] != uniques[:-1])))
        counts = np.diff(np.append(starts, uniques.size)).astype(np.int64)
        uniques = uniques[starts]
    else:
        counts = np.asarray(reference.counts, np.int64)
    cum = np.cumsum(counts)
    exhaustive = uniques.size <= size
    if exhaustive:
        idx = np.arange(uniques.size)
    else:  # evenly spaced reference ranks: about n / size reference values per cell
        ranks = np.linspace(0, n - 1, size)
        idx = np.unique(np.concatenate(([0], np.searchsorted(cum, ranks, side="right"), [uniques.size - 1])))
        idx = idx[idx < uniques.size]
    points = uniques[idx]
    le = cum[idx]
    lt = le - counts[idx]
    # Σ (g_j - r) over reference values strictly between g_{j-1} and g_j (cell j), plus the tails
    ref_vals = uniques
    cell = np.searchsorted(points, ref_vals, side="left")
    inside = points[np.minimum(cell, points.size - 1)] != ref_vals
    w = np.where(inside, points[np.minimum(cell, points.size - 1)] - ref_vals, 0.0) * counts
    wsum = np.bincount(cell, weights=w, minlength=points.size + 1)
    return Grid(points, bool(exhaustive), np.asarray(reference.edges, dtype=np.float64), le, lt, wsum, n)


@dataclass
class NumericSketch:
    """A numeric column's mergeable summary (see the module docstring). ``values``: the sorted
    finite values, kept only when the caller asked for the exact path."""

    rows: int
    nulls: int
    nonfinite: int
    usable: int
    open_counts: np.ndarray | None
    point_counts: np.ndarray | None
    wsum: np.ndarray | None
    bin_counts: np.ndarray | None
    values: list[np.ndarray] | None = None


def numeric_partial(values: np.ndarray, nulls: int, grid: Grid | None, *, keep_values: bool) -> NumericSketch:
    """Summarise one partition's values of a numeric column (float64, nulls already removed as NaN).

    Args:
        values: the partition's values as float64 (NaN for null is fine: ``nulls`` says how many).
        nulls: how many of the NaN in ``values`` were nulls (the rest are NaN values).
        grid: the column's grid (None: an empty reference; only counts are kept).
        keep_values: also keep the sorted finite values (the exact path).
    """
    finite = np.isfinite(values)
    v = values[finite] if not finite.all() else values
    rows, usable = int(values.size), int(v.size)
    nonfinite = rows - usable - int(nulls)
    kept = [np.sort(v)] if keep_values else None
    if grid is None:
        return NumericSketch(rows, int(nulls), nonfinite, usable, None, None, None, None, kept)
    g = grid.points
    cell = np.searchsorted(g, v, side="left")  # g[cell-1] < v <= g[cell]
    at = g[np.minimum(cell, g.size - 1)]
    on_point = (cell < g.size) & (at == v)
    # distance to the cell's upper point; above the last point, the distance past it
    dist = np.where(cell < g.size, at - v, v - g[-1])
    dist[on_point] = 0.0
    point_counts = np.bincount(cell[on_point], minlength=g.size)[: g.size]
    all_counts = np.bincount(cell, minlength=g.size + 1)
    open_counts = all_counts.copy()
    open_counts[: g.size] -= point_counts
    wsum = np.bincount(cell, weights=dist, minlength=g.size + 1)
    bins = np.bincount(np.searchsorted(grid.edges, v, side="left"), minlength=grid.edges.size + 1)
    return NumericSketch(rows, int(nulls), nonfinite, usable, open_counts, point_counts, wsum, bins, kept)


def merge_numeric(parts: list[NumericSketch]) -> NumericSketch:
    """Add partition summaries up (exact: sums of integers and of per-cell distance sums)."""
    def add(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        return np.sum(arrays, axis=0) if arrays else None

    values = [a for p in parts if p.values is not None for a in p.values] if all(p.values is not None for p in parts) else None
    return NumericSketch(
        sum(p.rows for p in parts), sum(p.nulls for p in parts), sum(p.nonfinite for p in parts),
        sum(p.usable for p in parts), add("open_counts"), add("point_counts"), add("wsum"), add("bin_counts"), values,
    )


def sketch_stats(reference: NumericReference, grid: Grid | None, sketch: NumericSketch, *, ks: bool,
                 p_value: bool | None = None) -> tuple[_Values, dict[str, Any]]:
    """Wasserstein (raw, normed), PSI and optionally KS from a merged summary, with error bounds.

    The true Wasserstein distance lies in ``[wasserstein, wasserstein + wasserstein_bound]``, the
    true KS statistic within ``ks_bound`` of ``ks``.

    Returns:
        ``(stats, extra)``: ``stats`` as ``NumericStats.as_dict``; ``extra`` holds ``n_ref``,
        ``n_cur``, ``wasserstein_bound``, ``wasserstein_norm_bound``, ``ks_bound``, ``exhaustive_grid``
        and the out-of-range counts ``below``/``above``.
    """
    p_value = ks if p_value is None else p_value
    n, m = reference.n, sketch.usable
    nan = math.nan
    if grid is None or n == 0 or m == 0:
        empty: _Values = {"wasserstein": nan, "wasserstein_norm": nan, "psi": nan, "ks": nan if ks else None,
                          "ks_p_value": nan if p_value else None}
        return empty, {"n_ref": n, "n_cur": m, "below": 0, "above": 0}
    assert sketch.open_counts is not None and sketch.point_counts is not None and sketch.wsum is not None
    g = grid.points
    pc, oc, ws = sketch.point_counts, sketch.open_counts, sketch.wsum
    c_le = np.cumsum(oc[: g.size] + pc)  # current values <= g_j
    c_lt = c_le - pc
    fr_le, fr_lt = grid.ref_le / n, grid.ref_lt / n
    fc_le, fc_lt = c_le / m, c_lt / m
    # tails beyond the reference's min and max: exact
    total = float(ws[0]) / m + float(ws[g.size]) / m
    bound = 0.0
    if g.size > 1:
        w = np.diff(g)
        i_cur = fc_le[:-1] * w + ws[1 : g.size] / m
        i_ref = fr_le[:-1] * w + grid.ref_wsum[1 : g.size] / n
        integral = i_ref - i_cur
        h_max = fr_lt[1:] - fc_le[:-1]
        h_min = fr_le[:-1] - fc_lt[1:]
        crossing = (h_max > 0) & (h_min < 0)
        slack = np.where(crossing, w * np.minimum(h_max, -h_min), 0.0)
        # |∫h| is a lower bound of ∫|h|; measured, it is also the better estimate (the ECDFs of a
        # cell vary together far more often than they cross), so it is reported, with the bound above it
        total += float(np.abs(integral).sum())
        bound = 2.0 * float(slack.sum())
    std = max(reference.std, _STD_FLOOR)
    psi = _psi_from_counts(np.asarray(reference.bin_counts, dtype=np.float64), np.asarray(sketch.bin_counts, dtype=np.float64))
    stats: _Values = {"wasserstein": total, "wasserstein_norm": total / std, "psi": psi,
                                      "ks": None, "ks_p_value": None}
    extra: dict[str, Any] = {"n_ref": n, "n_cur": m, "wasserstein_bound": bound, "wasserstein_norm_bound": bound / std,
                             "exhaustive_grid": grid.exhaustive, "below": int(oc[0]), "above": int(oc[g.size])}
    if ks or p_value:
        d_lo = float(max(np.abs(fr_le - fc_le).max(), np.abs(fr_lt - fc_lt).max()))
        d_hi = d_lo
        if g.size > 1:
            open_ = (h_max > h_min)  # something inside the cell moves an ECDF
            if open_.any():
                d_hi = max(d_lo, float(np.maximum(h_max, -h_min)[open_].max()))
        d = (d_lo + d_hi) / 2
        extra["ks_bound"] = (d_hi - d_lo) / 2
        if ks:
            stats["ks"] = d
        if p_value:
            stats["ks_p_value"] = _ks_p_asymp(d, n, m)
    return stats, extra


def categorical_partial(values: Any) -> tuple[int, int, dict[str, int]]:
    """``(rows, nulls, {level: count})`` of one partition's categorical column (a polars Series)."""
    import polars as pl

    s = values if isinstance(values, pl.Series) else pl.Series("v", list(values), dtype=pl.String)
    vc = s.cast(pl.String).drop_nulls().value_counts(name="__n")
    return s.len(), s.null_count(), dict(zip(vc[vc.columns[0]].to_list(), vc["__n"].to_list(), strict=True))


def merge_categorical(parts: list[tuple[int, int, Mapping[str, int]]]) -> tuple[int, int, list[str], np.ndarray]:
    """Add categorical partials up: ``(rows, nulls, levels, counts)`` (levels sorted)."""
    counts: dict[str, int] = {}
    for _, _, c in parts:
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + int(v)
    levels = sorted(counts)
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), levels,
            np.array([counts[k] for k in levels], dtype=np.int64))

