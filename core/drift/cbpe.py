"""Confidence-based performance estimation (CBPE) for binary classifiers: performance before the labels arrive.

Labels arrive days or weeks late; the model's own calibrated confidence says what its performance
probably is now. The method is NannyML's CBPE:

1. **Calibrate** the model's scores on the reference holdout (whose labels are known) with
   isotonic regression (pool-adjacent-violators, ``scipy.optimize.isotonic_regression``; equal
   scores are pooled first, and new scores are mapped by linear interpolation between the fitted
   points, clipped at the ends, as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``
   does). As in NannyML, the calibration is used only when it lowers the expected calibration
   error out of sample: 10 seeded 90/10 splits of the holdout, ECE over 10 equal-count bins of
   the pooled test parts; otherwise (and when the holdout AUC is above 0.999) the scores are
   used as they are.
2. **Estimate** each metric from the calibrated probabilities ``p_i`` of a window alone, with
   predictions ``ŷ_i = score_i >= threshold`` (the model's threshold, as in
   ``core.training.compute_metrics``). Each label is taken as Bernoulli(``p_i``), independently:

   * accuracy ``E = Σ c_i / n`` with ``c_i = p_i`` if ``ŷ_i = 1`` else ``1 - p_i``;
   * precision ``Σ_{ŷ=1} p_i / N_pp``; recall ``A / (A + B)`` with ``A = Σ_{ŷ=1} p_i``,
     ``B = Σ_{ŷ=0} p_i``; F1 ``2A / (N_pp + A + B)`` (NannyML's ratios of expected counts);
   * ROC AUC ``(S - P(P+1)/2) / (P (n - P))`` at ``S = Σ R_i p_i``, ``P = Σ p_i`` where ``R_i``
     are the mid-ranks of the raw scores: the Mann-Whitney form of AUC at the expected counts.
     Expanded, it equals the area under NannyML's expected ROC curve (pairs ranked by the raw
     score, each pair weighted ``p_i (1 - p_j)``).

3. **Sampling error**: the standard deviation of the metric the labels will give, given the
   window's scores: exact for accuracy and precision (sums of independent Bernoullis over a
   fixed count), by the delta method for recall, F1 and AUC (``Var S = Σ R_i² v_i``,
   ``Var P = Σ v_i``, ``Cov = Σ R_i v_i``, ``v_i = p_i (1 - p_i)``). The band is the estimate
   ± 3 sampling errors (NannyML's width), clipped to [0, 1]. It does not include the
   calibration's own error (the holdout is finite), nor any change of ``P(y | x)``: CBPE assumes
   the world changed in *which* inputs arrive (covariate shift), not in what they mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from core.drift.reference import ArrayPacker, _dot, unpack_arrays

__all__ = ["CBPE_METRICS", "BAND_SIGMAS", "Calibration", "Estimate", "estimate_performance"]

CBPE_METRICS = ("auc", "accuracy", "precision", "recall", "f1")
BAND_SIGMAS = 3.0


@dataclass(frozen=True, eq=False)
class Calibration:
    """An isotonic map from the model's scores to probabilities, fitted on the reference holdout.

    ``x`` (ascending distinct scores) and ``y`` (non-decreasing probabilities) are the fitted
    points; ``applied`` is False when calibration did not help out of sample, and then the map
    is the identity. ``threshold`` is the model's decision threshold.
    """

    x: np.ndarray
    y: np.ndarray
    applied: bool
    threshold: float
    n: int
    positives: int
    ece_before: float = math.nan
    ece_after: float = math.nan

    def __call__(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities of ``scores``."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.applied:
            return np.clip(s, 0.0, 1.0)
        return np.interp(s, self.x, self.y)

    @classmethod
    def fit(cls, scores: Any, labels: Any, *, threshold: float = 0.5, seed: int = 0) -> Calibration:
        """Fit the calibration on reference scores and their 0/1 labels (see the module docstring).

        Raises:
            ValueError: sizes differ, the sample is empty, or a label is not 0/1.
        """
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if s.shape != y.shape or s.size == 0:
            raise ValueError(f"calibration needs as many labels as scores (got {y.size} and {s.size}), at least one")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("calibration labels must be 0 or 1")
        pos = int(y.sum())
        x_fit, y_fit = _isotonic(s, y)
        identity = cls(np.array([0.0, 1.0]), np.array([0.0, 1.0]), False, threshold, s.size, pos)
        if pos in (0, s.size) or s.size < 20:
            return identity
        if _auc(s, y) > 0.999:
            return identity
        before, after = _ece_out_of_sample(s, y, seed)
        if after < before:
            return cls(x_fit, y_fit, True, threshold, s.size, pos, before, after)
        return cls(identity.x, identity.y, False, threshold, s.size, pos, before, after)

    def to_bytes(self) -> bytes:
        """Serialise (raw arrays + JSON header, no pickle)."""
        packer = ArrayPacker()
        header = {
            "kind": "calibration", "x": packer.put(self.x, "<f8"), "y": packer.put(self.y, "<f8"),
            "applied": self.applied, "threshold": self.threshold, "n": self.n, "positives": self.positives,
            "ece_before": self.ece_before, "ece_after": self.ece_after,
        }
        return packer.pack(header)

    @classmethod
    def from_bytes(cls, data: bytes) -> Calibration:
        """Load a calibration written by ``to_bytes``.

        Raises:
            ValueError: ``data`` is not a serialised calibration.
        """
        h, get = unpack_arrays(data)
        if not isinstance(h, dict) or h.get("kind") != "calibration":
            raise ValueError("not a lakeops calibration")
        return cls(get(h["x"]), get(h["y"]), bool(h["applied"]), float(h["threshold"]), int(h["n"]),
                   int(h["positives"]), float(h["ece_before"]), float(h["ece_after"]))


def _isotonic(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) fit of ``y`` on ``s``: equal scores pooled, then PAVA with their weights."""
    order = np.argsort(s, kind="stable")
    xs, ys = s[order], y[order]
    starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
    weights = np.diff(np.append(starts, xs.size)).astype(np.float64)
    means = np.add.reduceat(ys, starts) / weights
    fitted = optimize.isotonic_regression(means, weights=weights, increasing=True).x
    return xs[starts], np.clip(fitted, 0.0, 1.0)


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = stats.rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins of ``p`` (NannyML's definition)."""
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    edges = np.linspace(0, p.size, bins + 1).astype(np.int64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi > lo:
            total += (hi - lo) / p.size * abs(float(p[lo:hi].mean()) - float(y[lo:hi].mean()))
    return total


def _ece_out_of_sample(s: np.ndarray, y: np.ndarray, seed: int, splits: int = 10) -> tuple[float, float]:
    """Pooled test-part ECE before and after calibrating on the rest, over seeded 90/10 splits per class."""
    rng = np.random.default_rng(seed)
    idx_by_class = [np.flatnonzero(y == c) for c in (0.0, 1.0)]
    ys, raw, cal = [], [], []
    for _ in range(splits):
        test = np.concatenate([rng.permutation(ix)[: max(1, round(ix.size * 0.1))] for ix in idx_by_class])
        mask = np.zeros(s.size, bool)
        mask[test] = True
        x_fit, y_fit = _isotonic(s[~mask], y[~mask])
        ys.append(y[mask])
        raw.append(np.clip(s[mask], 0.0, 1.0))
        cal.append(np.interp(s[mask], x_fit, y_fit))
    yy = np.concatenate(ys)
    return _ece(yy, np.concatenate(raw)), _ece(yy, np.concatenate(cal))


@dataclass(frozen=True)
class Estimate:
    """One estimated metric: value, sampling error (std of the realised value given the scores) and band."""

    metric: str
    value: float
    sampling_error: float
    lower: float
    upper: float

    def as_dict(self) -> dict[str, float | str]:
        """The estimate as a plain dict."""
        return {"metric": self.metric, "value": self.value, "sampling_error": self.sampling_error,
                "lower": self.lower, "upper": self.upper}


def _band(metric: str, value: float, se: float) -> Estimate:
    if math.isnan(value):
        return Estimate(metric, value, se, math.nan, math.nan)
    return Estimate(metric, value, se, max(0.0, value - BAND_SIGMAS * se), min(1.0, value + BAND_SIGMAS * se))


def estimate_performance(
    scores: Any, calibration: Calibration, *, metrics: Sequence[str] = CBPE_METRICS
) -> dict[str, Estimate]:
    """Estimate binary-classification metrics of a window from its scores alone (see the module docstring).

    Args:
        scores: the model's scores of the window (P(class 1) before calibration).
        calibration: the reference calibration (``Calibration.fit`` on the holdout).
        metrics: which of ``auc``, ``accuracy``, ``precision``, ``recall``, ``f1``.

    Returns:
        ``{metric: Estimate}``; values are NaN for an empty window.
    """
    unknown = set(metrics) - set(CBPE_METRICS)
    if unknown:
        raise ValueError(f"CBPE cannot estimate {sorted(unknown)}; it estimates {', '.join(CBPE_METRICS)}")
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    n = s.size
    if n == 0:
        return {m: _band(m, math.nan, math.nan) for m in metrics}
    p = calibration(s)
    v = p * (1.0 - p)
    pred = s >= calibration.threshold
    out: dict[str, Estimate] = {}
    a, b = float(p[pred].sum()), float(p[~pred].sum())
    va, vb = float(v[pred].sum()), float(v[~pred].sum())
    n_pp = int(pred.sum())
    if "accuracy" in metrics:
        correct = np.where(pred, p, 1.0 - p)
        out["accuracy"] = _band("accuracy", float(correct.mean()), math.sqrt(float(v.sum())) / n)
    if "precision" in metrics:
        out["precision"] = _band("precision", a / n_pp if n_pp else 0.0, math.sqrt(va) / n_pp if n_pp else 0.0)
    if "recall" in metrics:
        tot = a + b
        value = a / tot if tot > 0 else 0.0
        se = math.sqrt(b * b * va + a * a * vb) / tot**2 if tot > 0 else 0.0
        out["recall"] = _band("recall", value, se)
    if "f1" in metrics:
        d = n_pp + a + b
        value = 2.0 * a / d if d > 0 else 0.0
        se = math.sqrt((2.0 * (n_pp + b) / d**2) ** 2 * va + (2.0 * a / d**2) ** 2 * vb) if d > 0 else 0.0
        out["f1"] = _band("f1", value, se)
    if "auc" in metrics:
        out["auc"] = _band("auc", *_auc_estimate(s, p, v))
    return {m: out[m] for m in metrics}


def _auc_estimate(s: np.ndarray, p: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    n = s.size
    big_p = float(p.sum())
    if big_p <= 0.0 or big_p >= n:
        return math.nan, math.nan
    r = stats.rankdata(s)  # mid-ranks: ties count one half, as in the realised AUC
    big_s = float(_dot(r, p))
    den = big_p * (n - big_p)
    num = big_s - big_p * (big_p + 1.0) / 2.0
    value = num / den
    g_s = 1.0 / den
    g_p = (-(big_p + 0.5) * den - num * (n - 2.0 * big_p)) / den**2
    var = g_s * g_s * float(_dot(r * r, v)) + 2.0 * g_s * g_p * float(_dot(r, v)) + g_p * g_p * float(v.sum())
    return value, math.sqrt(max(var, 0.0))
