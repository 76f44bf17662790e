"""Paired comparison of two models on the same rows: is the candidate better than the champion, beyond noise?

Pure: arrays in, a ``Comparison`` out.

- **AUC**: DeLong's test for two correlated ROC curves (DeLong, DeLong & Clarke-Pearson 1988),
  computed with the midrank algorithm of Sun & Xu (2014) in O(n log n). The difference's
  variance comes from the structural components of both AUCs on the same positives and
  negatives; the interval and p-value use the normal approximation.
- **Every other metric** (log_loss, brier, accuracy, precision, recall, f1, rmse, mae, r2): a
  paired Poisson bootstrap (each row gets a Poisson(1) weight, the same weights for both
  models), ``resamples`` times with a fixed seed; the interval is the percentile interval of
  the difference and the p-value the share of resamples where the improvement is not above
  the margin.

The question asked is one-sided: H0 "the candidate improves on the champion by at most
``margin``" (in the metric's better direction) against "by more than ``margin``". The p-value
is that test's; ``significant`` is ``p < alpha``. The interval is the two-sided ``1 - alpha``
interval of the *improvement* (positive = the candidate is better), whatever the metric's direction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["Comparison", "compare", "compare_unpaired", "delong"]

_LOWER_IS_BETTER = {"log_loss", "brier", "rmse", "mae"}


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of candidate and champion on the same ``n`` rows.

    Attributes:
        metric: the metric compared.
        method: ``delong`` or ``paired_bootstrap``.
        n: rows compared.
        candidate: the candidate's metric value; ``champion`` the champion's.
        improvement: how much better the candidate is (positive = better, in the metric's units).
        ci_low, ci_high: the two-sided ``1 - alpha`` interval of the improvement.
        margin: the improvement required by the policy.
        p_value: one-sided p-value of "improvement <= margin".
        alpha: the level.
        significant: ``p_value < alpha``.
    """

    metric: str
    method: str
    n: int
    candidate: float
    champion: float
    improvement: float
    ci_low: float
    ci_high: float
    margin: float
    p_value: float
    alpha: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the gate report)."""
        return asdict(self)

    def summary(self) -> str:
        """One line, e.g. ``auc +0.0123 [95% CI +0.0041, +0.0205], p=0.0017 (DeLong, n=720)``."""
        level = f"{(1 - self.alpha) * 100:g}%"
        name = "DeLong" if self.method == "delong" else "paired bootstrap"
        return (f"{self.metric} {self.improvement:+.4g} [{level} CI {self.ci_low:+.4g}, {self.ci_high:+.4g}], "
                f"p={self.p_value:.3g} vs margin {self.margin:g} ({name}, n={self.n})")


def _midrank(x: np.ndarray) -> np.ndarray:
    """1-based midranks of ``x`` (ties share their average rank)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.concatenate(([True], xs[1:] != xs[:-1]))
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, x.size))
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)
    return ranks


def delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of ``k`` score vectors on the same labels and their DeLong covariance matrix.

    Args:
        y: 0/1 labels, shape (n,).
        scores: shape (k, n).

    Returns:
        ``(aucs (k,), covariance (k, k))``.

    Raises:
        ValueError: ``y`` has a single class.
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes among the rows")
    k = s.shape[0]
    tx = np.empty((k, m))
    ty = np.empty((k, n))
    tz = np.empty((k, m + n))
    for r in range(k):
        x, z = s[r, pos], s[r, ~pos]
        tx[r], ty[r] = _midrank(x), _midrank(z)
        tz[r] = _midrank(np.concatenate((x, z)))
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def _sign(metric: str) -> float:
    return -1.0 if metric in _LOWER_IS_BETTER else 1.0


def _weighted(metric: str, y: np.ndarray, s: np.ndarray, w: np.ndarray, threshold: float) -> np.ndarray:
    """``metric`` of ``s`` for each row of weights ``w`` (resamples x rows), vectorised."""
    tot = w.sum(axis=1)
    if metric in ("rmse", "mae", "r2"):
        err = s - y
        if metric == "mae":
            return (w @ np.abs(err)) / tot
        mse = (w @ (err * err)) / tot
        if metric == "rmse":
            return np.sqrt(mse)
        mean = (w @ y) / tot
        var = (w @ (y * y)) / tot - mean * mean
        return np.where(var > 0, 1.0 - mse / np.where(var > 0, var, 1.0), 0.0)
    if metric == "log_loss":
        p = np.clip(s, 1e-15, 1 - 1e-15)
        return (w @ -(y * np.log(p) + (1 - y) * np.log(1 - p))) / tot
    if metric == "brier":
        return (w @ ((s - y) ** 2)) / tot
    pred = s >= threshold
    pos = y == 1
    if metric == "accuracy":
        return (w @ (pred == pos).astype(np.float64)) / tot
    tp = w @ (pred & pos).astype(np.float64)
    fp = w @ (pred & ~pos).astype(np.float64)
    fn = w @ (~pred & pos).astype(np.float64)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    if metric == "precision":
        return precision
    if metric == "recall":
        return recall
    if metric == "f1":
        den = precision + recall
        return np.divide(2 * precision * recall, den, out=np.zeros_like(den), where=den > 0)
    raise ValueError(f"no paired test for metric {metric!r}")


def compare(
    metric: str,
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    threshold: float = 0.5,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two models' scores on the same rows for ``metric`` (see the module docstring).

    Args:
        metric: ``auc`` (DeLong) or another metric of ``core.training.compute_metrics`` (bootstrap).
        y: the true labels or values.
        candidate: the candidate's scores; ``champion`` the champion's, on the same rows.
        margin: the improvement that counts (the policy's ``beat_champion.margin``).
        alpha: the level of the one-sided test and of the ``1 - alpha`` interval.
        threshold: the class threshold (threshold metrics of a binary model).
        resamples: bootstrap resamples; seed: their seed.
    """
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(champion, dtype=np.float64)
    z = float(ndtri(1 - alpha / 2))
    if metric == "auc":
        aucs, cov = delong(y, np.vstack((a, b)))
        diff = float(aucs[0] - aucs[1])
        var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
        se = math.sqrt(max(var, 0.0))
        if se == 0.0:
            p = 0.0 if diff > margin else 1.0
        else:
            p = float(1.0 - ndtr((diff - margin) / se))
        return Comparison(metric, "delong", y.size, float(aucs[0]), float(aucs[1]), diff, diff - z * se,
                          diff + z * se, margin, p, alpha, p < alpha)
    sign = _sign(metric)
    ones = np.ones((1, y.size))
    point_a = float(_weighted(metric, y, a, ones, threshold)[0])
    point_b = float(_weighted(metric, y, b, ones, threshold)[0])
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, min(resamples, 4_000_000 // max(1, y.size)))  # bound the weight matrix to ~32 MB
    for start in range(0, resamples, chunk):
        w = rng.poisson(1.0, size=(min(chunk, resamples - start), y.size)).astype(np.float64)
        w[w.sum(axis=1) == 0, 0] = 1.0  # an all-zero resample (tiny n) would divide by zero
        diffs[start : start + w.shape[0]] = sign * (_weighted(metric, y, a, w, threshold) - _weighted(metric, y, b, w, threshold))
    improvement = sign * (point_a - point_b)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = float((np.count_nonzero(diffs <= margin) + 1) / (resamples + 1))
    return Comparison(metric, "paired_bootstrap", y.size, point_a, point_b, improvement, float(lo), float(hi),
                      margin, p, alpha, p < alpha)


def compare_unpaired(
    metric: str,
    y_a: np.ndarray,
    a: np.ndarray,
    y_b: np.ndarray,
    b: np.ndarray,
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    threshold: float = 0.5,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare a candidate and a champion scored on *different* rows (a canary's two groups).

    Each group is resampled on its own (Poisson bootstrap); AUC uses ``core.training``'s rank
    AUC of each resample. The interval and the one-sided p-value are as in ``compare``.
    """
    y_a, a = np.asarray(y_a, dtype=np.float64), np.asarray(a, dtype=np.float64)
    y_b, b = np.asarray(y_b, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sign = _sign(metric)
    rng = np.random.default_rng(seed)

    def value(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
        if metric != "auc":
            return _weighted(metric, y, s, w, threshold)
        out = np.empty(w.shape[0])
        for i in range(w.shape[0]):
            idx = np.repeat(np.arange(y.size), w[i].astype(np.int64))
            out[i] = _auc(y[idx], s[idx])
        return out

    ones_a, ones_b = np.ones((1, y_a.size)), np.ones((1, y_b.size))
    point_a, point_b = float(value(y_a, a, ones_a)[0]), float(value(y_b, b, ones_b)[0])
    draws = min(resamples, 500) if metric == "auc" else resamples  # rank AUC per resample costs more
    wa = rng.poisson(1.0, size=(draws, y_a.size)).astype(np.float64)
    wb = rng.poisson(1.0, size=(draws, y_b.size)).astype(np.float64)
    wa[wa.sum(axis=1) == 0, 0] = 1.0
    wb[wb.sum(axis=1) == 0, 0] = 1.0
    diffs = sign * (value(y_a, a, wa) - value(y_b, b, wb))
    diffs = diffs[np.isfinite(diffs)]
    improvement = sign * (point_a - point_b)
    if diffs.size == 0:
        return Comparison(metric, "unpaired_bootstrap", y_a.size + y_b.size, point_a, point_b, improvement,
                          float("nan"), float("nan"), margin, 1.0, alpha, False)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = float((np.count_nonzero(diffs <= margin) + 1) / (diffs.size + 1))
    return Comparison(metric, "unpaired_bootstrap", y_a.size + y_b.size, point_a, point_b, improvement, float(lo),
                      float(hi), margin, p, alpha, p < alpha)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = _midrank(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
