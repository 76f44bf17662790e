"""Target leakage: how well each feature alone explains the target, and which features look like it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np
import polars as pl

from core.training._metrics import _auc_of

__all__ = ["DOMINANT_GAIN", "LEAKAGE_GAIN", "LEAKAGE_GAIN_SCORE", "LEAKAGE_SCORE", "leakage"]


LEAKAGE_SCORE = 0.99
"""A single feature reaching this alone (AUC for a binary target, |Spearman rho| or out-of-fold
R² for regression) is flagged as likely leakage."""
LEAKAGE_GAIN = 0.9
"""A single feature holding this share of the model's total gain, and reaching ``LEAKAGE_GAIN_SCORE``
alone, is flagged too (a tiny model puts all its gain on one feature whatever the data: the
share alone is not evidence)."""
LEAKAGE_GAIN_SCORE = 0.9
DOMINANT_GAIN = 0.5
"""A single feature holding this share of the gain (but under ``LEAKAGE_GAIN``) is only warned about."""


class _Flag(TypedDict):
    feature: str
    why: str
    score: float


class _Warning(TypedDict):
    feature: str
    why: str



def _out_of_fold_means(codes: pl.Series, y: np.ndarray) -> np.ndarray:
    """Each row's category scored by the target mean of its category in the *other* half of rows.

    In-sample category means would give any high-cardinality column a perfect score; two folds
    keep the score honest.
    """
    n = len(codes)
    fold = np.arange(n) % 2
    frame = pl.DataFrame({"c": codes, "y": y, "f": fold})
    means = frame.group_by("c", "f").agg(pl.col("y").mean().alias("m"))
    other = frame.with_columns((1 - pl.col("f")).alias("f")).join(means, on=["c", "f"], how="left")
    fallback = float(np.mean(y)) if n else 0.0
    return other["m"].fill_null(fallback).to_numpy().astype(np.float64)


def leakage(
    frame: pl.DataFrame, signature: Mapping[str, Any], importance: pl.DataFrame | None = None
) -> dict[str, Any]:
    """How well each feature alone explains the target, and which features look like leakage.

    A feature is *flagged* when alone it reaches ``LEAKAGE_SCORE`` (binary: AUC of its values,
    or of its categories' out-of-fold target means; regression: |Spearman rho|, or the
    out-of-fold R² of its categories' means) or holds ``LEAKAGE_GAIN`` of the model's gain;
    it is *warned* about when it holds ``DOMINANT_GAIN``. The gain rule also needs the feature to
    reach ``LEAKAGE_GAIN_SCORE`` alone. Features that separate the classes
    perfectly are almost always the target (or something computed from it) under another name.

    Returns:
        ``{"scores": {feature: score}, "gain_share": {feature: share}, "flagged": [{feature,
        why}], "warnings": [{feature, why}], "thresholds": {...}}``.
    """
    target = signature["target"]
    task = signature.get("task", "binary")
    y = frame[target].cast(pl.Float64).to_numpy()
    keep = ~np.isnan(y)
    y = y[keep]
    scores: dict[str, float] = {}
    for f in signature["features"]:
        col = frame[f["name"]].filter(pl.Series(keep))
        if f["kind"] == "categorical":
            values = _out_of_fold_means(col.cast(pl.String).fill_null("\x00null"), y)
        else:
            values = col.cast(pl.Float64).to_numpy()
        if task == "binary":
            score = _auc_of(values, y)
        elif f["kind"] == "categorical":
            ss = float(np.sum((y - y.mean()) ** 2))
            score = 1.0 - float(np.sum((y - values) ** 2)) / ss if ss > 0 else 0.0
        else:
            ok = ~np.isnan(values)
            score = abs(float(pl.DataFrame({"a": values[ok], "b": y[ok]}).select(
                pl.corr("a", "b", method="spearman")).item() or 0.0)) if ok.sum() > 2 else 0.0
        scores[f["name"]] = round(score, 6) if math.isfinite(score) else float("nan")
    share: dict[str, float] = {}
    if importance is not None and importance.height and float(importance["gain"].sum()) > 0:
        total = float(importance["gain"].sum())
        share = {r["feature"]: round(float(r["gain"]) / total, 6) for r in importance.iter_rows(named=True)}
    flagged: list[_Flag] = []
    warnings: list[_Warning] = []
    what = "AUC" if task == "binary" else "|rho| / R²"
    for name in scores:
        sc, sh = scores[name], share.get(name, 0.0)
        if sc >= LEAKAGE_SCORE:
            flagged.append({"feature": name, "why": f"{what} {sc:.4f} on its own (>= {LEAKAGE_SCORE})", "score": sc})
        elif sh >= LEAKAGE_GAIN and sc >= LEAKAGE_GAIN_SCORE:
            flagged.append({"feature": name, "why": f"holds {sh:.0%} of the model's gain (>= {LEAKAGE_GAIN:.0%}) "
                            f"and reaches {what} {sc:.3f} alone", "score": sc})
        elif sh >= DOMINANT_GAIN:
            warnings.append({"feature": name, "why": f"holds {sh:.0%} of the model's gain; {what} alone {sc:.3f}"})
    flagged.sort(key=lambda d: -d["score"])
    return {"scores": scores, "gain_share": share, "flagged": flagged, "warnings": warnings,
            "thresholds": {"score": LEAKAGE_SCORE, "gain": LEAKAGE_GAIN, "gain_score": LEAKAGE_GAIN_SCORE,
                           "dominant_gain": DOMINANT_GAIN}}
