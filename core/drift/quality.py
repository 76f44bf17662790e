"""Data-quality drift of one column against its reference: null share, NaN/inf share, out-of-range share, new-level share.

A monitor that only compares the distribution of the values that are there misses a feature that
half turned null or started arriving as NaN: the statistics drop those values first. These
shares are compared with the reference's under stated tolerances (``QualityTolerances``):

* **null share** ``nulls / rows``: flagged when it differs from the reference's by more than
  ``null_share`` (0.05) either way.
* **NaN/inf share** ``(NaN + ±inf) / rows`` (numeric): flagged when it exceeds the reference's
  by more than ``nonfinite_share`` (0.01).
* **out-of-range share** (numeric): the share of the current finite values below the
  reference's minimum or above its maximum (0 in the reference by construction), flagged above
  ``out_of_range_share`` (0.02). With ``n`` reference values a same-distribution value falls
  outside with probability ``2 / (n + 1)``, 0.3 % at 600 rows.
* **new-level share** (categorical): the share of current non-null values whose level the
  reference never had, flagged above ``new_level_share`` (0.01).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.drift.reference import CategoricalReference, NumericColumn, NumericReference
from core.errors import ConfigError

__all__ = ["ColumnQuality", "QualityTolerances", "categorical_quality", "numeric_quality", "numeric_quality_counts"]


@dataclass(frozen=True)
class QualityTolerances:
    """Tolerances of the data-quality comparison (TOML ``[drift.quality]``; see the module docstring)."""

    null_share: float = 0.05
    nonfinite_share: float = 0.01
    out_of_range_share: float = 0.02
    new_level_share: float = 0.01

    def __post_init__(self) -> None:
        for name in ("null_share", "nonfinite_share", "out_of_range_share", "new_level_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"[drift.quality] {name} must be a share in [0, 1], got {value!r}")


@dataclass(frozen=True)
class ColumnQuality:
    """The quality shares of one current column, the reference's, and which of them broke tolerance.

    ``usable`` counts the values the statistics use (non-null, finite). Reference shares are
    None when the stored reference predates the counts. ``flags`` names the broken checks,
    ``reasons`` says each in words.
    """

    rows: int
    nulls: int
    nonfinite: int
    usable: int
    null_share: float
    ref_null_share: float | None
    nonfinite_share: float | None = None
    ref_nonfinite_share: float | None = None
    out_of_range_share: float | None = None
    new_level_share: float | None = None
    flags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The shares and flags as a plain dict (for reports)."""
        return {
            "rows": self.rows, "nulls": self.nulls, "nonfinite": self.nonfinite, "usable": self.usable,
            "null_share": self.null_share, "ref_null_share": self.ref_null_share,
            "nonfinite_share": self.nonfinite_share, "ref_nonfinite_share": self.ref_nonfinite_share,
            "out_of_range_share": self.out_of_range_share, "new_level_share": self.new_level_share,
            "flags": list(self.flags),
        }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def _null_check(null_share: float, ref_share: float | None, tol: float) -> tuple[str, str] | None:
    if ref_share is None or math.isnan(null_share) or abs(null_share - ref_share) <= tol:
        return None
    return "null_share", f"null share {null_share:.3f} vs {ref_share:.3f} in the reference (tolerance ±{tol:g})"


def numeric_quality(reference: NumericReference, column: NumericColumn, tol: QualityTolerances) -> ColumnQuality:
    """Quality shares of a numeric current column (``numeric_column``) against its reference."""
    usable = column.values.size
    below = above = 0
    if usable and reference.n:
        lo, hi = float(reference.uniques[0]), float(reference.uniques[-1])
        below = int(np.searchsorted(column.values, lo, side="left"))
        above = usable - int(np.searchsorted(column.values, hi, side="right"))
    return numeric_quality_counts(reference, rows=column.rows, nulls=column.nulls, nonfinite=column.nonfinite,
                                  usable=usable, below=below, above=above, tol=tol)


def numeric_quality_counts(
    reference: NumericReference, *, rows: int, nulls: int, nonfinite: int, usable: int, below: int, above: int,
    tol: QualityTolerances,
) -> ColumnQuality:
    """``numeric_quality`` from counts: rows, nulls, NaN/inf, usable values and the usable values
    below the reference's minimum and above its maximum (what partitions of a window add up)."""
    ref_rows = reference.rows
    ref_null = _share(reference.nulls, ref_rows) if ref_rows else None
    ref_nonfinite = _share(reference.nonfinite, ref_rows) if ref_rows else None
    null_share = _share(nulls, rows)
    nonfinite_share = _share(nonfinite, rows)
    out = None
    if usable and reference.n:
        lo, hi = float(reference.uniques[0]), float(reference.uniques[-1])
        out = (below + above) / usable
    flags: list[tuple[str, str]] = []
    null_flag = _null_check(null_share, ref_null, tol.null_share)
    if null_flag:
        flags.append(null_flag)
    if ref_nonfinite is not None and not math.isnan(nonfinite_share) and nonfinite_share - ref_nonfinite > tol.nonfinite_share:
        flags.append(("nonfinite_share", f"NaN/inf share {nonfinite_share:.3f} vs {ref_nonfinite:.3f} in the reference "
                                         f"(tolerance +{tol.nonfinite_share:g})"))
    if out is not None and out > tol.out_of_range_share:
        flags.append(("out_of_range_share", f"{out:.1%} of values outside the reference range "
                                            f"[{lo:.6g}, {hi:.6g}] (tolerance {tol.out_of_range_share:.0%})"))
    return ColumnQuality(rows, nulls, nonfinite, usable, null_share, ref_null, nonfinite_share,
                         ref_nonfinite, out, None, tuple(f for f, _ in flags), tuple(r for _, r in flags))


def categorical_quality(
    reference: CategoricalReference, *, rows: int, nulls: int, new_level_share: float, new_levels: tuple[str, ...],
    tol: QualityTolerances,
) -> ColumnQuality:
    """Quality shares of a categorical current column against its reference."""
    ref_null = _share(reference.nulls, reference.rows) if reference.rows else None
    null_share = _share(nulls, rows)
    usable = rows - nulls
    flags: list[tuple[str, str]] = []
    null_flag = _null_check(null_share, ref_null, tol.null_share)
    if null_flag:
        flags.append(null_flag)
    if usable and new_level_share > tol.new_level_share:
        shown = ", ".join(map(repr, new_levels[:5])) + (", ..." if len(new_levels) > 5 else "")
        flags.append(("new_level_share", f"{new_level_share:.1%} of values are levels the reference never had "
                                         f"({shown}; tolerance {tol.new_level_share:.0%})"))
    return ColumnQuality(rows, nulls, 0, usable, null_share, ref_null, None, None, None,
                         new_level_share if usable else None, tuple(f for f, _ in flags), tuple(r for _, r in flags))
