"""The drift domain classifier: can LightGBM tell current rows from reference rows (cross-validated AUC)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from core.errors import TrainingError
from core.training._encoding import _SAFE_NAME
from core.training._lgbprivate import LightGBMError
from core.training._metrics import compute_metrics

__all__ = ["DOMAIN_PARAMS", "DomainClassifierResult", "domain_classifier"]


DOMAIN_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "num_iterations": 50,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
"""The domain classifier's LightGBM parameters: small on purpose (it only has to notice a
difference, and runs on every drift check)."""


@dataclass(frozen=True)
class DomainClassifierResult:
    """A domain classifier's verdict material: cross-validated AUC and the features that separate the sets.

    Attributes:
        auc: ROC AUC of the out-of-fold scores (every row scored by a model that did not see
            it); 0.5 means the sets are indistinguishable. NaN when a side had too few rows.
        fold_aucs: AUC within each fold.
        importance: ``[(feature, share of total gain)]``, summed over folds, largest first.
        n_ref: reference rows used (after sampling).
        n_cur: current rows used (after sampling).
        folds: number of folds.
    """

    auc: float
    fold_aucs: list[float]
    importance: list[tuple[str, float]]
    n_ref: int
    n_cur: int
    folds: int


def _domain_matrix(reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str],
                   categorical: Sequence[str]) -> np.ndarray:
    both = pl.concat([reference.select(features), current.select(features)], how="vertical_relaxed")
    exprs = []
    for name in features:
        if name in categorical:
            # codes over the union of both sides' levels: a level new in the window is a value
            # of its own, not "missing"
            exprs.append(pl.col(name).cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Float64)
                         .fill_null(float("nan")).alias(name))
        else:
            exprs.append(pl.col(name).cast(pl.Float64).fill_null(float("nan")).alias(name))
    return np.ascontiguousarray(both.select(exprs).to_numpy(), dtype=np.float64)


def domain_classifier(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    features: Sequence[str],
    categorical: Sequence[str] = (),
    sample: int = 10_000,
    folds: int = 5,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    current_rows: int | None = None,
) -> DomainClassifierResult:
    """Train a LightGBM classifier to tell ``current`` rows from ``reference`` rows; report its CV AUC.

    Each side is sampled (seeded, without replacement) to at most ``sample`` rows; rows are
    split into ``folds`` stratified folds; each fold is scored by a model trained on the others
    (``DOMAIN_PARAMS``), and the AUC of all out-of-fold scores together is the result. If the
    features' joint distribution changed (even with every marginal the same), the classifier
    separates the sets and the AUC rises above 0.5.

    Args:
        reference: reference rows (at least ``features``).
        current: current rows.
        features: the columns to compare.
        categorical: which of them are categorical.
        sample: rows per side at most.
        folds: cross-validation folds (>= 2).
        seed: the seed of the sampling, the folds and LightGBM.
        params: LightGBM parameters over ``DOMAIN_PARAMS``.
        current_rows: when ``current`` is already the seeded sample of a window of this many rows
            (drawn on a cluster with this function's generator), the draw is replayed so the
            folds are the ones the whole window would get.

    Raises:
        TrainingError: no feature, fewer than 2 folds, or LightGBM failed.
    """
    if not features:
        raise TrainingError("the domain classifier needs at least one feature")
    if folds < 2:
        raise TrainingError(f"the domain classifier needs at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    ref = reference if reference.height <= sample else reference[np.sort(rng.choice(reference.height, sample, replace=False))]
    cur = current if current.height <= sample else current[np.sort(rng.choice(current.height, sample, replace=False))]
    if current.height <= sample and current_rows is not None and current_rows > sample:
        rng.choice(current_rows, sample, replace=False)  # ``current`` is this very draw, made by a cluster
    n_ref, n_cur = ref.height, cur.height
    names = list(features)
    if min(n_ref, n_cur) < folds:
        return DomainClassifierResult(math.nan, [], [], n_ref, n_cur, folds)
    X = _domain_matrix(ref, cur, names, categorical)
    y = np.concatenate((np.zeros(n_ref), np.ones(n_cur)))
    fold = np.empty(y.size, dtype=np.int64)
    for cls_rows in (np.arange(n_ref), np.arange(n_ref, n_ref + n_cur)):
        fold[rng.permutation(cls_rows)] = np.arange(cls_rows.size) % folds
    effective = {**DOMAIN_PARAMS, **(params or {}), "seed": int(seed)}
    cats = [i for i, n in enumerate(names) if n in categorical]
    lgb_names = names if all(_SAFE_NAME.match(n) for n in names) else [f"f{i}" for i in range(len(names))]
    oof = np.empty(y.size)
    gain = np.zeros(len(names))
    fold_aucs = []
    try:
        for k in range(folds):
            test = fold == k
            data = lgb.Dataset(X[~test], y[~test], feature_name=lgb_names, categorical_feature=cats or "auto",
                               free_raw_data=True, params={"verbosity": -1})
            booster = lgb.train(effective, data)
            oof[test] = booster.predict(X[test], num_threads=1)
            gain += booster.feature_importance(importance_type="gain")
            fold_aucs.append(compute_metrics("binary", y[test], oof[test])["auc"])
    except LightGBMError as exc:
        raise TrainingError(f"the domain classifier could not train: {str(exc).splitlines()[0]}") from None
    total = float(gain.sum())
    shares = gain / total if total > 0 else gain
    importance = sorted(((n, float(v)) for n, v in zip(names, shares, strict=True)), key=lambda t: (-t[1], t[0]))
    auc = compute_metrics("binary", y, oof)["auc"]
    return DomainClassifierResult(float(auc), [float(a) for a in fold_aucs], importance, n_ref, n_cur, folds)
