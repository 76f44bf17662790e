"""Target leakage: how well each feature alone explains the target, and which features look like it."""

from __future__ import annotations

import math
from typing import Any, TypedDict

import numpy as np
import polars as pl

from core.signature import Signature
from core.training._metrics import _auc_of

__all__ = ["DOMINANT_GAIN", "LEAKAGE_GAIN", "LEAKAGE_GAIN_SCORE", "LEAKAGE_SCORE", "dates_as_text", "leakage"]


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



# Dates and months written as text, as exports write them ("2018-03-01", "Mar-2018", "03/01/2018").
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%d.%m.%Y", "%Y%m%d", "%d-%b-%Y",
                 "%d %b %Y", "%b-%Y", "%b %Y", "%B %Y", "%Y-%m", "%Y/%m", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


def dates_as_text(signature: Signature, share: float = 0.9) -> list[_Warning]:
    """Categorical features whose levels are dates or months written as text.

    A model learns such a column as a set of levels: every date after training is a level it never
    saw (the serving log counts it as unknown, the drift check as a new level), so what it learned
    from the column cannot carry forward. Judged on the signature's levels (the same on either
    engine): a feature is named when ``share`` of its levels, at least two, parse with one format.
    """
    out: list[_Warning] = []
    for f in signature.features:
        if not f.categorical or len(f.levels) < 2:
            continue
        levels = pl.Series(f.name, list(f.levels), dtype=pl.String).str.strip_chars()
        for fmt in _DATE_FORMATS:
            kind = pl.Datetime if "%H" in fmt else pl.Date
            parsed = levels.str.strptime(kind, fmt, strict=False)
            if parsed.null_count() <= (1 - share) * len(levels):
                example = levels.filter(parsed.is_not_null())[0]
                out.append({"feature": f.name, "why": f"holds dates as text ({example!r}, format {fmt}): a date "
                            "after training is a level the model never saw; exclude it, or give the model "
                            "calendar features (month, day of week) instead"})
                break
    return out


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
    frame: pl.DataFrame, signature: Signature, importance: pl.DataFrame | None = None
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
    target = signature.target
    task = signature.task
    y = frame[target].cast(pl.Float64).to_numpy()
    keep = ~np.isnan(y)
    y = y[keep]
    scores: dict[str, float] = {}
    for f in signature.features:
        col = frame[f.name].filter(pl.Series(keep))
        if f.categorical:
            values = _out_of_fold_means(col.cast(pl.String).fill_null("\x00null"), y)
        else:
            values = col.cast(pl.Float64).to_numpy()
        if task == "binary":
            score = _auc_of(values, y)
        elif f.categorical:
            ss = float(np.sum((y - y.mean()) ** 2))
            score = 1.0 - float(np.sum((y - values) ** 2)) / ss if ss > 0 else 0.0
        else:
            ok = ~np.isnan(values)
            score = abs(float(pl.DataFrame({"a": values[ok], "b": y[ok]}).select(
                pl.corr("a", "b", method="spearman")).item() or 0.0)) if ok.sum() > 2 else 0.0
        scores[f.name] = round(score, 6) if math.isfinite(score) else float("nan")
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
    warnings += dates_as_text(signature)
    flagged.sort(key=lambda d: -d["score"])
    return {"scores": scores, "gain_share": share, "flagged": flagged, "warnings": warnings,
            "thresholds": {"score": LEAKAGE_SCORE, "gain": LEAKAGE_GAIN, "gain_score": LEAKAGE_GAIN_SCORE,
                           "dominant_gain": DOMINANT_GAIN}}
