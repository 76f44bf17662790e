"""Per-column profiles of a frame (pure, vectorised): counts, nulls, distinct values, statistics.

A profile is a plain JSON-able dict, stored with each dataset version so that the UI, validation
and drift checks reuse it without rereading the data::

    {"rows": 20000, "bins": 20, "columns": {
        "age": {"dtype": "Int64", "kind": "numeric", "count": 20000, "nulls": 0,
                "null_fraction": 0.0, "distinct": 73, "min": 18.0, "max": 90.0, "mean": 43.1,
                "std": 14.2, "quantiles": {"0.01": 18.0, ..., "0.99": 80.0},
                "histogram": {"edges": [18.0, 21.6, ...], "counts": [812, ...]}},
        "plan": {"dtype": "String", "kind": "categorical", ..., "distinct": 4,
                 "top": [{"value": "basic", "count": 6975, "frequency": 0.349}, ...],
                 "other_count": 0}}}

Kinds: ``numeric`` (integers and floats; NaN counts as null), ``categorical`` (strings and
booleans), ``datetime`` (dates and timestamps: min/max as ISO text), ``other`` (nested types).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

__all__ = ["QUANTILES", "column_kind", "histogram_frame", "profile", "summary_frame"]

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def column_kind(dtype: pl.DataType) -> str:
    """Return the profile kind of a polars dtype: numeric, categorical, datetime or other."""
    if dtype.is_numeric():
        return "numeric"
    if dtype in (pl.String, pl.Boolean) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "categorical"
    if dtype.is_temporal():
        return "datetime"
    return "other"


def _num(value: Any) -> float | None:
    """A JSON-safe float (None for null/NaN/inf)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def profile(frame: pl.DataFrame, *, bins: int = 20, top: int = 20) -> dict[str, Any]:
    """Profile every column of ``frame``.

    Args:
        frame: the data.
        bins: number of equal-width histogram bins between a numeric column's min and max.
        top: how many most frequent values to keep for categorical columns.

    Returns:
        The profile dict described in the module docstring.
    """
    kinds = {c: column_kind(t) for c, t in frame.schema.items()}
    rows = frame.height
    # One pass for null counts (NaN counts as missing) and for the few non-numeric statistics.
    exprs: list[pl.Expr] = []
    for c, dtype in frame.schema.items():
        values = pl.col(c)
        missing = values.is_null() | values.is_nan() if dtype.is_float() else values.is_null()
        exprs.append(missing.sum().alias(f"{c}\x00nulls"))
        if kinds[c] in ("datetime", "other"):
            exprs.append(values.n_unique().alias(f"{c}\x00distinct"))
        if kinds[c] == "datetime":
            exprs += [values.min().alias(f"{c}\x00min"), values.max().alias(f"{c}\x00max")]
    stats = frame.select(exprs).row(0, named=True) if exprs else {}
    columns: dict[str, dict[str, Any]] = {}
    for c, dtype in frame.schema.items():
        nulls = int(stats.get(f"{c}\x00nulls", 0) or 0)
        col: dict[str, Any] = {
            "dtype": str(dtype),
            "kind": kinds[c],
            "count": rows - nulls,
            "nulls": nulls,
            "null_fraction": nulls / rows if rows else 0.0,
        }
        if kinds[c] == "numeric":
            col.update(_numeric(frame[c], bins))
        elif kinds[c] == "categorical":
            col.update(_top_values(frame[c], top, rows - nulls))
        else:
            distinct = int(stats.get(f"{c}\x00distinct", 0) or 0)
            col["distinct"] = max(distinct - (1 if nulls else 0), 0)
        if kinds[c] == "datetime":
            lo, hi = stats[f"{c}\x00min"], stats[f"{c}\x00max"]
            col["min"] = lo.isoformat() if lo is not None else None
            col["max"] = hi.isoformat() if hi is not None else None
        columns[c] = col
    return {"rows": rows, "bins": bins, "columns": columns}


def _numeric(series: pl.Series, bins: int) -> dict[str, Any]:
    """Statistics of one numeric column from one sorted copy of its values (NaN/inf dropped)."""
    x = series.cast(pl.Float64).to_numpy()
    x = np.sort(x[np.isfinite(x)])
    empty: dict[str, Any] = {"distinct": 0, "min": None, "max": None, "mean": None, "std": None,
             "quantiles": {str(q): None for q in QUANTILES}, "histogram": {"edges": [], "counts": []}}
    if x.size == 0:
        return empty
    lo, hi = float(x[0]), float(x[-1])
    pos = np.asarray(QUANTILES) * (x.size - 1)  # linear interpolation between order statistics
    below = np.floor(pos).astype(np.int64)
    above = np.minimum(below + 1, x.size - 1)
    quants = x[below] + (x[above] - x[below]) * (pos - below)
    n_bins = bins if hi > lo else 1
    counts, edges = np.histogram(x, bins=n_bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {
        "distinct": int(np.count_nonzero(np.diff(x)) + 1),
        "min": lo,
        "max": hi,
        "mean": _num(x.mean()),
        "std": _num(x.std(ddof=1)) if x.size > 1 else None,
        "quantiles": {str(q): _num(v) for q, v in zip(QUANTILES, quants, strict=True)},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(k) for k in counts]},
    }


def _top_values(series: pl.Series, top: int, non_null: int) -> dict[str, Any]:
    """The ``top`` most frequent non-null values (as text) with counts and frequencies."""
    counts = (
        series.drop_nulls()
        .cast(pl.String)
        .value_counts(sort=True, name="count")
        .sort(["count", series.name], descending=[True, False])
    )
    head = counts.head(top)
    values = [
        {"value": v, "count": int(k), "frequency": int(k) / non_null if non_null else 0.0}
        for v, k in head.iter_rows()
    ]
    return {"distinct": counts.height, "top": values, "other_count": int(non_null - int(head["count"].sum() or 0))}


def summary_frame(prof: dict[str, Any]) -> pl.DataFrame:
    """One row per column of a profile: name, dtype, kind, nulls, distinct, min/mean/max, top value."""
    rows = []
    for name, col in prof.get("columns", {}).items():
        top = col.get("top") or []
        rows.append(
            {
                "column": name,
                "dtype": col.get("dtype"),
                "kind": col.get("kind"),
                "count": col.get("count"),
                "nulls": col.get("nulls"),
                "null_pct": round(100 * float(col.get("null_fraction") or 0.0), 2),
                "distinct": col.get("distinct"),
                "min": None if col.get("min") is None else str(col["min"]),
                "mean": col.get("mean"),
                "max": None if col.get("max") is None else str(col["max"]),
                "top": f"{top[0]['value']} ({100 * top[0]['frequency']:.1f}%)" if top else None,
            }
        )
    schema = {
        "column": pl.String, "dtype": pl.String, "kind": pl.String, "count": pl.Int64, "nulls": pl.Int64,
        "null_pct": pl.Float64, "distinct": pl.Int64, "min": pl.String, "mean": pl.Float64,
        "max": pl.String, "top": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def histogram_frame(prof: dict[str, Any], column: str) -> pl.DataFrame:
    """The histogram (numeric) or top values (categorical) of one profiled column, for charting.

    Returns:
        Columns ``bin`` (label), ``start``, ``end`` (numeric only, else null), ``count`` and
        ``frequency``; empty when the column has neither.
    """
    col = prof.get("columns", {}).get(column)
    schema = {"bin": pl.String, "start": pl.Float64, "end": pl.Float64, "count": pl.Int64, "frequency": pl.Float64}
    if col is None:
        return pl.DataFrame(schema=schema)
    rows: list[dict[str, Any]] = []
    hist = col.get("histogram")
    if hist and hist.get("counts"):
        total = sum(hist["counts"]) or 1
        edges = hist["edges"]
        for i, k in enumerate(hist["counts"]):
            rows.append(
                {"bin": f"{edges[i]:.4g}–{edges[i + 1]:.4g}", "start": edges[i], "end": edges[i + 1],
                 "count": k, "frequency": k / total}
            )
    for t in col.get("top") or []:
        rows.append({"bin": t["value"], "start": None, "end": None, "count": t["count"], "frequency": t["frequency"]})
    return pl.DataFrame(rows, schema=schema)
