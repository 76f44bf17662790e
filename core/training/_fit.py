"""``train``: LightGBM with early stopping on the deterministic split, its metrics and leakage report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import polars as pl

from core.errors import TrainingError
from core.training._encoding import _encode, _encode_expr, _feature_names
from core.training._leakage import leakage
from core.training._lgbprivate import LightGBMError
from core.training._metrics import compute_metrics
from core.training._model import Model
from core.training._params import DEFAULT_PARAMS, Task, validate_params
from core.training._signature import infer_signature
from core.training._split import split

__all__ = ["_METRICS", "TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced.

    Attributes:
        model: the model (best iteration only).
        metrics: final metrics on the validation set.
        train_metrics: final metrics on the training set.
        history: per-iteration curves, e.g. ``{"train.auc": [...], "valid.binary_logloss": [...]}``.
        best_iteration: the iteration kept (early stopping), 1-based.
        params: the effective LightGBM parameters (user params over defaults, plus forced ones).
        excluded: columns left out of the features, with the reason.
        rows: ``{"train": n, "valid": n, "dropped_null_target": n}``.
        split: how the split was made (``{"method": "time"|"stratified"|"hash", ...}``).
        leakage: features that alone explain the target (``leakage``).
    """

    model: Model
    metrics: dict[str, float]
    train_metrics: dict[str, float]
    history: dict[str, list[float]]
    best_iteration: int
    params: dict[str, Any]
    excluded: dict[str, str]
    rows: dict[str, int]
    split: dict[str, Any] = field(default_factory=dict)
    leakage: dict[str, Any] = field(default_factory=dict)


_METRICS: dict[str, list[str]] = {"binary": ["binary_logloss", "auc"], "regression": ["l2", "l1"]}


def train(
    frame: pl.DataFrame,
    target: str,
    *,
    task: Task | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    time_column: str | None = None,
    exclude: Sequence[str] = (),
    passthrough: Sequence[str] | None = None,
    feedback_key: str | None = None,
    valid: pl.DataFrame | None = None,
) -> TrainResult:
    """Train a LightGBM model on ``frame`` with early stopping on a deterministic split.

    Args:
        frame: the dataset (features, target and optionally a time column).
        target: the target column (0/1 or boolean for binary, numeric for regression).
        task: ``binary`` or ``regression``; inferred from the target when None.
        params: LightGBM params (checked by ``validate_params``) plus ``valid_fraction`` and
            ``threshold``.
        seed: the seed of the split and of LightGBM.
        time_column: split by this column (it is not a feature); None for a stratified split.
        exclude: further columns to leave out of the features.
        passthrough: columns requests may carry beside the features (see ``infer_signature``).
        feedback_key: a pass-through field that feedback labels may join by.
        valid: an explicit validation set (the retrain's holdout of the newest labelled traffic);
            then ``frame`` is all training rows and nothing is split.

    Raises:
        TrainingError: bad target, params or too little data.
    """
    user = validate_params(params)
    valid_fraction = float(user.pop("valid_fraction", 0.2))
    threshold = float(user.pop("threshold", 0.5))
    if time_column is not None and time_column not in frame.columns:
        raise TrainingError(f"time column {time_column!r} is not in the dataset")
    if target not in frame.columns:
        raise TrainingError(
            f"target {target!r} is not a column of the dataset; columns: {', '.join(frame.columns)}"
        )
    clean = frame.filter(pl.col(target).is_not_null())
    signature, excluded = infer_signature(
        clean, target, task=task, time_column=time_column, exclude=exclude, threshold=threshold,
        passthrough=passthrough, feedback_key=feedback_key,
    )
    task_ = signature["task"]
    if valid is None:
        train_df, valid_df = split(
            clean, target, time_column=time_column, seed=seed, valid_fraction=valid_fraction
        )
    else:
        train_df, valid_df = clean, valid.filter(pl.col(target).is_not_null())
        if valid_df.height == 0 or train_df.height == 0:
            raise TrainingError(f"an explicit split needs rows on both sides (train {train_df.height}, valid {valid_df.height})")
    if task_ == "binary":
        for part, name in ((train_df, "training"), (valid_df, "validation")):
            if part[target].n_unique() < 2:
                raise TrainingError(
                    f"the {name} set has a single class of {target!r}; more rows or another split are needed"
                )
    effective: dict[str, Any] = {**DEFAULT_PARAMS, **user}
    effective.update(
        {
            "objective": task_,
            "metric": _METRICS[task_],
            "first_metric_only": True,
            "seed": int(seed),
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
    )
    exprs = [_encode_expr(f) for f in signature["features"]]
    all_names = [f["name"] for f in signature["features"]]
    X_train, X_valid = _encode(exprs, all_names, train_df), _encode(exprs, all_names, valid_df)
    y_train = train_df[target].cast(pl.Float64).to_numpy()
    y_valid = valid_df[target].cast(pl.Float64).to_numpy()
    cats = [i for i, f in enumerate(signature["features"]) if f["kind"] == "categorical"]
    names = _feature_names(signature)
    history: dict[str, dict[str, list[float]]] = {}
    rounds = int(effective.pop("early_stopping_round", 0) or 0)
    try:
        dtrain = lgb.Dataset(
            X_train, y_train, feature_name=names, categorical_feature=cats or "auto", free_raw_data=True
        )
        dvalid = lgb.Dataset(X_valid, y_valid, reference=dtrain)
        callbacks = [lgb.record_evaluation(history)]
        if rounds > 0:
            callbacks.append(lgb.early_stopping(rounds, first_metric_only=True, verbose=False))
        booster = lgb.train(
            effective,
            dtrain,
            valid_sets=[dtrain, dvalid],
            valid_names=["train", "valid"],
            callbacks=callbacks,
        )
        best = int(booster.best_iteration or booster.current_iteration())
        text = booster.model_to_string(num_iteration=best)
    except LightGBMError as exc:
        raise TrainingError(f"LightGBM could not train: {str(exc).splitlines()[0]}") from None
    effective["early_stopping_round"] = rounds
    model = Model(text, signature)
    curves = {
        f"{part}.{metric}": [float(v) for v in values]
        for part, d in history.items()
        for metric, values in d.items()
    }
    method = "explicit" if valid is not None else ("time" if time_column else ("stratified" if clean[target].n_unique() <= 20 else "hash"))
    return TrainResult(
        model=model,
        metrics=compute_metrics(task_, y_valid, model.predict_matrix(X_valid), threshold),
        train_metrics=compute_metrics(task_, y_train, model.predict_matrix(X_train), threshold),
        history=curves,
        best_iteration=best,
        params=effective,
        excluded=excluded,
        rows={
            "train": train_df.height,
            "valid": valid_df.height,
            "dropped_null_target": frame.height - clean.height,
        },
        split={
            "method": method,
            "time_column": time_column,
            "valid_fraction": valid_fraction,
            "seed": int(seed),
        },
        leakage=leakage(train_df, signature, model.importance()),
    )
