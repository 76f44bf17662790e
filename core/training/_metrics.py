"""Evaluation metrics (binary and regression) and the rank helpers AUC needs."""

from __future__ import annotations

import numpy as np

from core.errors import TrainingError

__all__ = ["_auc_of", "_average_ranks", "compute_metrics"]


def compute_metrics(
    task: str, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Evaluation metrics of ``scores`` against ``y_true``.

    Binary: auc, log_loss, accuracy, precision, recall, f1, brier (labels at ``threshold``).
    Regression: rmse, mae, r2. Undefined values (AUC with one class, precision with no
    positive prediction) are reported as NaN and 0.0 respectively.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise TrainingError(f"y_true has {y.shape[0]} values but scores {s.shape[0]}")
    if y.size == 0:
        raise TrainingError("cannot compute metrics on zero rows")
    if task == "regression":
        err = s - y
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        ss_res = float(np.sum(err**2))
        return {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "r2": (1.0 - ss_res / ss_tot) if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0),
        }
    if task != "binary":
        raise TrainingError(f"unknown task {task!r}: use 'binary' or 'regression'")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos and n_neg:
        ranks = _average_ranks(s)
        auc = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    else:
        auc = float("nan")
    p = np.clip(s, 1e-15, 1 - 1e-15)
    pred = s >= threshold
    tp = int((pred & pos).sum())
    fp = int((pred & ~pos).sum())
    fn = int((~pred & pos).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "auc": auc,
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "accuracy": float(np.mean(pred == pos)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "brier": float(np.mean((s - y) ** 2)),
    }


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (what AUC's Mann-Whitney form needs)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, values.size))
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)
    return ranks



def _auc_of(values: np.ndarray, y: np.ndarray) -> float:
    """Rank AUC of ``values`` against 0/1 ``y``, oriented (max(auc, 1 - auc)); NaN ranks lowest."""
    v = np.where(np.isnan(values), -np.inf, values)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = _average_ranks(v)
    auc = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return max(auc, 1.0 - auc)
