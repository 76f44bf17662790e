"""Drift attribution: which features moved the model's score between the reference and a window.

LightGBM's per-row feature contributions (``pred_contrib``, TreeSHAP; ``core.training.Model.
contributions``) add up, with a constant expected value, to the row's raw score (log-odds for a
binary model). So the mean raw score of a set of rows is the sum of the features' mean
contributions plus that constant, and the *shift* of the mean raw score between the reference
and a window splits exactly into per-feature shifts::

    mean_raw(window) - mean_raw(reference) = Σ_f [mean_contrib_f(window) - mean_contrib_f(reference)]

``share_f = shift_f / Σ shift`` then adds up to 1 (signed: a feature that pushed against the
overall move has a negative share). Features are ranked by ``|shift_f|``. The means are taken
over the rows given (a seeded sample of each side, its size stated), so the identity holds for
those rows exactly and estimates the full sets' shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Attribution", "attribute"]


@dataclass(frozen=True)
class Attribution:
    """Per-feature shifts of the mean contribution, ranked by size, and the raw-score shift they add up to."""

    features: list[dict[str, float | str]]
    score_shift: float
    reference_raw_mean: float
    current_raw_mean: float
    n_ref: int
    n_cur: int

    def top(self, k: int = 5) -> list[dict[str, float | str]]:
        """The ``k`` features that moved the score most."""
        return self.features[:k]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for reports and alert evidence)."""
        return {"score_shift": self.score_shift, "reference_raw_mean": self.reference_raw_mean,
                "current_raw_mean": self.current_raw_mean, "n_ref": self.n_ref, "n_cur": self.n_cur,
                "features": self.features}


def attribute(
    names: Sequence[str], reference_mean: Any, current_contrib: Any, *, n_ref: int, n_cur: int | None = None
) -> Attribution:
    """Split the mean raw-score shift into per-feature shifts of mean contributions.

    Args:
        names: the feature names, in contribution column order.
        reference_mean: mean contributions over the reference rows, ``len(names) + 1`` values
            (the last is LightGBM's expected value).
        current_contrib: the window's contributions, one row per prediction (or their mean).
        n_ref: how many reference rows the mean was taken over.
        n_cur: how many window rows ``current_contrib`` holds when it is already a mean.

    Returns:
        The attribution, features sorted by ``|shift|`` descending.
    """
    ref = np.asarray(reference_mean, dtype=np.float64)
    cur = np.asarray(current_contrib, dtype=np.float64)
    if cur.ndim == 2:
        n_cur = cur.shape[0]
        cur = cur.mean(axis=0) if n_cur else np.full(ref.shape, np.nan)
    k = len(names)
    if ref.shape != (k + 1,) or cur.shape != (k + 1,):
        raise ValueError(f"contributions need {k + 1} columns ({k} features + expected value), got {ref.shape}, {cur.shape}")
    shifts = cur[:k] - ref[:k]
    total = float(shifts.sum()) + float(cur[k] - ref[k])  # the expected value is the same constant: adds 0
    rows: list[dict[str, float | str]] = [
        {"feature": name, "reference_mean": float(r), "current_mean": float(c), "shift": float(d),
         "share": float(d) / total if total != 0 and not math.isnan(total) else math.nan}
        for name, r, c, d in zip(names, ref[:k], cur[:k], shifts, strict=True)
    ]
    rows.sort(key=lambda row: -abs(float(row["shift"])) if not math.isnan(float(row["shift"])) else 0.0)
    return Attribution(rows, total, float(ref.sum()), float(cur.sum()), int(n_ref), int(n_cur or 0))
