"""Distributed training (``lightgbm.dask``) and the helpers the Dask engine keeps its best round with."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

from core.errors import TrainingError
from core.training._encoding import _feature_names
from core.training._fit import _METRICS
from core.training._lgbprivate import LightGBMError

__all__ = ["best_round", "iteration_losses", "train_distributed", "truncate_model"]


def train_distributed(
    client: Any,
    X_train: Any,
    y_train: Any,
    X_valid: Any,
    y_valid: Any,
    *,
    signature: Mapping[str, Any],
    params: Mapping[str, Any],
    seed: int = 0,
    timeout_s: float = 1800.0,
) -> tuple[str, dict[str, Any]]:
    """Train ``num_iterations`` rounds with ``lightgbm.dask`` on Dask arrays encoded by ``Model.encode``'s rules.

    LightGBM's data-parallel learner runs one LightGBM process per Dask worker holding training
    rows, connected on the workers' addresses (``machines`` from the Dask worker list, ports
    found free by ``lightgbm.dask``). The params are ``train``'s (the user's over
    ``DEFAULT_PARAMS``, then the task's objective and metrics, the seed and the determinism
    switches); ``num_threads`` is Dask's threads per worker; the network ``time_out`` is
    ``timeout_s`` (``[compute] timeout_s``).

    No early stopping here: LightGBM evaluates a validation set on each worker's share of it
    alone (measured: the master's logged holdout loss was 0.564 where the whole holdout's was
    0.576), so workers could stop at different rounds and wait on each other forever. The caller
    keeps the best round by the whole holdout's loss (``iteration_losses``, ``best_round``).

    Kept here, beside ``train``, because this module is LightGBM's only owner; the reading,
    split and encoding on the cluster are ``core.compute.train``.

    Returns:
        ``(model text of every round, effective params)``.

    Raises:
        TrainingError: LightGBM refused the data or params.
    """
    import lightgbm.dask as lgb_dask

    task = signature["task"]
    effective: dict[str, Any] = {**params}
    effective.update({"objective": task, "metric": _METRICS[task], "first_metric_only": True, "seed": int(seed),
                      "deterministic": True, "force_row_wise": True, "verbosity": -1})
    fit_params = {k: v for k, v in effective.items() if k not in ("num_threads", "early_stopping_round")}
    iterations = int(fit_params.pop("num_iterations", 100))
    # LightGBM's sockets wait this long (minutes) for a peer: a worker lost mid-training fails the
    # run instead of leaving the others waiting for LightGBM's default of two hours
    fit_params["time_out"] = max(1, math.ceil(timeout_s / 60))
    cats = [i for i, f in enumerate(signature["features"]) if f["kind"] == "categorical"]
    cls = lgb_dask.DaskLGBMClassifier if task == "binary" else lgb_dask.DaskLGBMRegressor
    estimator = cls(client=client, n_estimators=iterations, n_jobs=None, **fit_params)
    try:
        estimator.fit(X_train, y_train, feature_name=_feature_names(signature), categorical_feature=cats or "auto")
    except LightGBMError as exc:
        raise TrainingError(f"LightGBM could not train: {str(exc).splitlines()[0]}") from None
    effective["num_iterations"] = iterations
    return estimator.booster_.model_to_string(), effective


def iteration_losses(text: str, X: np.ndarray, y: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Per round, the *sums* of the task's additive metrics over these rows (to be added across partitions).

    Binary: ``binary_logloss`` (LightGBM's: probabilities clipped to [1e-15, 1 - 1e-15]); regression:
    ``l2`` (squared error) and ``l1`` (absolute error). Divided by the rows of all partitions they are
    LightGBM's curves over the whole set. Each tree is evaluated once (``start_iteration``).
    """
    booster = lgb.Booster(model_str=text)
    rounds = int(booster.current_iteration())
    names = ["binary_logloss"] if task == "binary" else ["l2", "l1"]
    out = {n: np.zeros(rounds) for n in names}
    if X.shape[0] == 0:
        return out
    raw = np.zeros(X.shape[0])
    for i in range(rounds):
        raw += booster.predict(X, start_iteration=i, num_iteration=1, raw_score=True, num_threads=1)
        if task == "binary":
            p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
            out["binary_logloss"][i] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum())
        else:
            err = raw - y
            out["l2"][i] = float((err * err).sum())
            out["l1"][i] = float(np.abs(err).sum())
    return out


def best_round(curve: Sequence[float], early_stopping_round: int) -> int:
    """The round (1-based) LightGBM's early stopping keeps on this validation curve (lower is better).

    The best round is the first reaching the minimum so far; training stops once
    ``early_stopping_round`` rounds pass without a strict improvement (0: never, the best of all).
    """
    best, best_value = 0, math.inf
    for i, v in enumerate(curve):
        if v < best_value:
            best, best_value = i, v
        elif early_stopping_round > 0 and i - best >= early_stopping_round:
            break
    return best + 1


def truncate_model(text: str, rounds: int) -> str:
    """The model text keeping its first ``rounds`` rounds."""
    return lgb.Booster(model_str=text).model_to_string(num_iteration=rounds)
