"""LightGBM training and evaluation, deterministic for a seed: the only module that imports lightgbm.

Pure: frames in, a ``Model`` (text + signature + sha256) and metrics out; no lake I/O.

The ``Signature`` is a plain JSON-able dict that travels with the model text::

    {"task": "binary" | "regression", "target": str, "threshold": float,
     "time_column": str | None,
     "features": [{"name": str, "kind": "numeric" | "categorical", "dtype": str,
                   "levels": [str, ...]}],          # levels only for categorical features
     "passthrough": [{"name": str, "type": "string" | "integer" | "number" | "datetime" | "date",
                      "role": "id" | "event_time" | "segment"}],
     "feedback_key": str | None}                    # a pass-through field feedback may join by

Pass-through fields are columns a request may carry beside the features (an entity id, the
event's own time, a segment key): validated and logged with the prediction, never seen by the
model. By default the time column and the id-like columns left out of the features are
pass-through fields.

``Model.encode`` turns a frame into the float64 matrix LightGBM sees (categorical values become
their index in ``levels``; unknown or null values become NaN, i.e. missing). Training and
serving both go through it, so there is no training/serving skew.

Determinism: rows are put in a canonical order (by time, then by a content hash) before the
split, LightGBM runs with ``deterministic=True``, ``force_row_wise=True``, a fixed
``num_threads`` and the seed, so the same data, params and seed give the same model text and
therefore the same sha256.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import polars as pl
from lightgbm.basic import _ConfigAliases

from core.errors import DataValidationError, TrainingError

__all__ = [
    "DEFAULT_PARAMS",
    "DOMINANT_GAIN",
    "LEAKAGE_GAIN",
    "LEAKAGE_GAIN_SCORE",
    "LEAKAGE_SCORE",
    "DOMAIN_PARAMS",
    "DomainClassifierResult",
    "Model",
    "TrainResult",
    "compute_metrics",
    "detect_time_column",
    "domain_classifier",
    "id_like_columns",
    "infer_signature",
    "infer_task",
    "lgb_feature_names",
    "leakage",
    "split",
    "best_round",
    "iteration_losses",
    "train",
    "train_distributed",
    "truncate_model",
    "validate_params",
]

Task = Literal["binary", "regression"]

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "num_iterations": 200,
    "early_stopping_round": 20,
    "num_threads": 1,
}
"""Defaults under the user's params; ``objective``, ``metric``, ``seed`` and the determinism
switches are set by ``train`` itself."""

# lakeops' own training keys, accepted next to LightGBM's.
_OWN_KEYS = {"valid_fraction", "threshold"}
# Parameters that read/write files or start network training: refused, training is pure.
# fmt: off
_REFUSED = {
    "task", "config", "data", "valid", "input_model", "output_model", "output_result",
    "convert_model", "convert_model_language", "machine_list_filename", "machines",
    "num_machines", "local_listen_port", "time_out", "forcedsplits_filename",
    "forcedbins_filename", "parser_config_file", "save_binary", "snapshot_freq",
    "header", "label_column", "weight_column", "group_column", "ignore_column",
    "categorical_feature", "device_type", "gpu_platform_id", "gpu_device_id", "num_gpu",
    "pre_partition", "tree_learner",
}
# fmt: on
_FORCED = {"deterministic", "force_row_wise", "force_col_wise", "verbosity", "objective", "metric", "seed"}
_SMALL_BATCH = 2048  # rows; below this prediction runs on one thread (LAKE-FACTS: 1.2 ms vs 30 us)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _aliases() -> dict[str, str]:
    """Map every LightGBM parameter name and alias to its canonical name."""
    out: dict[str, str] = {}
    for canonical, names in _ConfigAliases._get_all_param_aliases().items():
        for n in [canonical, *names]:
            out.setdefault(n, canonical)
    return out


_ALIASES = _aliases()


def validate_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check user params against LightGBM's parameter names and return them canonicalised.

    Aliases become canonical names (``n_estimators`` -> ``num_iterations``); lakeops' own keys
    ``valid_fraction`` and ``threshold`` pass through.

    Raises:
        TrainingError: an unknown key (with close matches), a refused key (file/network/device
            parameters, or one lakeops sets itself), or a non-scalar value.
    """
    import difflib

    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if key in _OWN_KEYS:
            out[key] = value
            continue
        canonical = _ALIASES.get(key)
        if canonical is None:
            near = difflib.get_close_matches(key, [*_ALIASES, *_OWN_KEYS], n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; see LightGBM's parameter list"
            raise TrainingError(f"unknown training parameter {key!r}{hint}")
        if canonical in _REFUSED:
            raise TrainingError(
                f"training parameter {key!r} is not allowed (training is pure and in-process)"
            )
        if canonical in _FORCED and canonical != "seed":
            raise TrainingError(
                f"training parameter {key!r} is set by lakeops (task and determinism); remove it"
            )
        if canonical == "seed":
            raise TrainingError("pass the seed with --seed / seed=, not in the params")
        if not isinstance(value, (bool, int, float, str)) and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)
        ):
            raise TrainingError(f"training parameter {key!r} must be a number, string or list of numbers")
        if canonical in out:
            raise TrainingError(f"training parameter {canonical!r} is given twice (as {key!r} and an alias)")
        out[canonical] = list(value) if isinstance(value, tuple) else value
    frac = out.get("valid_fraction", 0.2)
    if not isinstance(frac, (int, float)) or not 0 < float(frac) < 1:
        raise TrainingError(f"valid_fraction must be between 0 and 1 (exclusive), got {frac!r}")
    return out


# ---------------------------------------------------------------------------- signature
def detect_time_column(frame: pl.DataFrame, preferred: str | None = None) -> str | None:
    """Return the time column: ``preferred`` when present, else the only UTC datetime column.

    With several UTC datetime columns and no preference, the first one is taken.
    """
    if preferred and preferred in frame.columns:
        return preferred
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime) and dtype.time_zone in ("UTC", "Etc/UTC"):
            return name
    return None


def id_like_columns(frame: pl.DataFrame, *, exclude: Sequence[str] = ()) -> list[str]:
    """Return string columns that look like ids: named ``id``/``*_id`` or all values unique."""
    out = []
    for name, dtype in frame.schema.items():
        if name in exclude or dtype not in (pl.String, pl.Categorical):
            continue
        col = frame[name]
        if (
            name.lower() == "id"
            or name.lower().endswith("_id")
            or (frame.height > 1 and col.n_unique() == frame.height)
        ):
            out.append(name)
    return out


def infer_task(frame: pl.DataFrame, target: str) -> Task:
    """``binary`` for a boolean or 0/1 target, ``regression`` for any other numeric target.

    Raises:
        TrainingError: the target is missing, not numeric, or has a single class.
    """
    if target not in frame.columns:
        raise TrainingError(
            f"target {target!r} is not a column of the dataset; columns: {', '.join(frame.columns)}"
        )
    col = frame[target].drop_nulls()
    if col.len() == 0:
        raise TrainingError(f"target {target!r} has no non-null values")
    dtype = col.dtype
    if dtype == pl.Boolean:
        values = set(col.cast(pl.Int64).unique().to_list())
    elif dtype.is_numeric():
        values = set(col.unique().to_list())
    else:
        raise TrainingError(
            f"target {target!r} has type {dtype}; lakeops trains on a numeric target "
            "(0/1 for classification): encode it first"
        )
    if len(values) < 2:
        raise TrainingError(
            f"target {target!r} has a single value ({next(iter(values))!r}); need two classes or more values"
        )
    if values <= {0, 1}:
        return "binary"
    return "regression"


def infer_signature(
    frame: pl.DataFrame,
    target: str,
    *,
    task: Task | None = None,
    time_column: str | None = None,
    exclude: Sequence[str] = (),
    threshold: float = 0.5,
    passthrough: Sequence[str] | None = None,
    feedback_key: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Build the signature of a model trained on ``frame`` and say which columns were left out.

    Numeric and boolean columns become numeric features; string columns categorical ones with
    their sorted levels; the target, the time column, id-like columns, other datetimes and
    ``exclude`` are left out. ``passthrough`` names the columns requests may carry beside the
    features (None: the time column and the id-like columns); ``feedback_key`` one of them that
    feedback may join by.

    Returns:
        ``(signature, excluded)`` where ``excluded`` maps each left-out column to the reason.

    Raises:
        TrainingError: unknown target, wrong target type for the task, or no feature left.
    """
    inferred = infer_task(frame, target)
    task = task or inferred
    if task == "binary" and inferred != "binary":
        raise TrainingError(
            f"target {target!r} is not 0/1 or boolean; a binary task needs two classes 0 and 1"
        )
    excluded: dict[str, str] = {}
    if time_column:
        excluded[time_column] = "time column"
    for c in exclude:
        excluded.setdefault(c, "excluded by request")
    for c in id_like_columns(frame, exclude=[target, *excluded]):
        excluded[c] = "id-like (named *_id or every value unique)"
    features: list[dict[str, Any]] = []
    for name, dtype in frame.schema.items():
        if name == target or name in excluded:
            continue
        if dtype == pl.Boolean or dtype.is_numeric():
            features.append({"name": name, "kind": "numeric", "dtype": str(dtype)})
        elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            levels = sorted(frame[name].cast(pl.String).drop_nulls().unique().to_list())
            features.append({"name": name, "kind": "categorical", "dtype": "String", "levels": levels})
        else:
            excluded[name] = f"unsupported type {dtype}"
    if not features:
        raise TrainingError(f"no feature columns left after excluding {', '.join(excluded) or 'the target'}")
    reserved = [n for n in [target, *(f["name"] for f in features)] if n.startswith("__")]
    if reserved:
        raise TrainingError(
            f"column {reserved[0]!r}: names starting with '__' are lakeops' own (e.g. __prediction_id in the "
            "served-traffic dataset); rename it"
        )
    pt = _passthrough_fields(frame, features, excluded, time_column, passthrough, feedback_key)
    signature = {
        "task": task,
        "target": target,
        "threshold": float(threshold),
        "time_column": time_column,
        "features": features,
        "passthrough": pt,
        "feedback_key": feedback_key,
    }
    return signature, excluded


def _passthrough_type(name: str, dtype: pl.DataType) -> str:
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Date:
        return "date"
    if dtype.is_integer():
        return "integer"
    if dtype.is_numeric() or dtype == pl.Boolean:
        return "number"
    raise TrainingError(f"pass-through column {name!r} has type {dtype}; use a string, number, date or datetime column")


def _passthrough_fields(
    frame: pl.DataFrame, features: list[dict[str, Any]], excluded: Mapping[str, str], time_column: str | None,
    names: Sequence[str] | None, feedback_key: str | None,
) -> list[dict[str, Any]]:
    """The pass-through fields: named ones, or by default the time column and id-like columns."""
    feature_names = {f["name"] for f in features}
    if names is None:
        names = [c for c, why in excluded.items() if c == time_column or why.startswith("id-like")]
        if feedback_key and feedback_key not in names:
            names = [*names, feedback_key]
    out = []
    for name in names:
        if name not in frame.columns:
            raise TrainingError(f"pass-through column {name!r} is not a column of the dataset")
        if name in feature_names:
            raise TrainingError(
                f"pass-through column {name!r} is a feature (it is logged with the features already); "
                f"exclude it from the features to make it a pass-through field"
            )
        if name.startswith("__"):
            raise TrainingError(f"pass-through column {name!r}: names starting with '__' are lakeops' own; rename it")
        role = "event_time" if name == time_column else ("id" if str(excluded.get(name, "")).startswith("id-like") else "segment")
        out.append({"name": name, "type": _passthrough_type(name, frame.schema[name]), "role": role})
    if feedback_key is not None and feedback_key not in {p["name"] for p in out}:
        raise TrainingError(f"feedback key {feedback_key!r} must be a pass-through field; pass-through: "
                            f"{', '.join(p['name'] for p in out) or 'none'}")
    if feedback_key is not None and next(p for p in out if p["name"] == feedback_key)["type"] not in ("string", "integer"):
        raise TrainingError(f"feedback key {feedback_key!r} must be a string or integer column (an entity id)")
    return out


# ---------------------------------------------------------------------------- model
class Model:
    """A trained LightGBM model: its text, its signature and the sha256 of the text.

    Example:
        >>> model = Model.from_text(text, signature)            # doctest: +SKIP
        >>> scores = model.predict(frame)                       # doctest: +SKIP
    """

    def __init__(self, text: str, signature: Mapping[str, Any], booster: lgb.Booster | None = None) -> None:
        self.text = text
        self.signature: dict[str, Any] = dict(signature)
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        try:
            self._booster = booster or lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise TrainingError(
                f"the model text is not a LightGBM model: {str(exc).splitlines()[0]}"
            ) from None
        features = self.signature.get("features") or []
        if self._booster.num_feature() != len(features):
            raise TrainingError(
                f"the model has {self._booster.num_feature()} features but its signature lists {len(features)}"
            )
        self._exprs = [_encode_expr(f) for f in features]
        self._ncol = len(features)
        self._fast: ctypes.c_void_p | None = None  # LightGBM's single-row "fast config", made lazily
        self._fast_lock = threading.Lock()
        self._single_output = self._booster.num_model_per_iteration() == 1
        best = int(self._booster.best_iteration or 0)
        self._num_iteration = best if best > 0 else -1

    def __del__(self) -> None:
        fast = getattr(self, "_fast", None)
        if fast is not None and fast.value:
            try:
                lgb.basic._LIB.LGBM_FastConfigFree(fast)
            except Exception:  # noqa: BLE001,S110 - interpreter shutdown: nothing left to free
                pass

    @classmethod
    def from_text(cls, text: str, signature: Mapping[str, Any]) -> Model:
        """Load a model from its LightGBM text and signature (no pickle anywhere)."""
        return cls(text, signature)

    @property
    def feature_names(self) -> list[str]:
        """The feature names in signature (matrix column) order."""
        return [f["name"] for f in self.signature["features"]]

    @property
    def num_trees(self) -> int:
        """Number of boosting iterations kept in the model."""
        return int(self._booster.current_iteration())

    def encode(self, frame: pl.DataFrame) -> np.ndarray:
        """Return the float64 matrix (rows x features, signature order) LightGBM is fed.

        Raises:
            DataValidationError: a feature column is missing or not convertible to its kind.
        """
        return _encode(self._exprs, self.feature_names, frame)

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Score an encoded matrix: P(class 1) for binary, the value for regression."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.shape[1] == self._ncol and self._single_output:
            if X.shape[0] == 1:
                return self._predict_one(X)
            if 1 < X.shape[0] < _SMALL_BATCH:
                return self._predict_small(X)
        threads = 1 if X.shape[0] < _SMALL_BATCH else max(1, min(4, os.cpu_count() or 1))
        return np.asarray(self._booster.predict(X, num_threads=threads), dtype=np.float64)

    def _predict_one(self, X: np.ndarray) -> np.ndarray:
        # One row through LightGBM's C "single row fast" API: the same trees and transform as
        # ``Booster.predict`` (identical scores, see tests) for ~1/4 of the Python wrapper's cost.
        # The fast config holds per-call buffers and is not thread-safe: one call at a time.
        if not X.flags.c_contiguous:
            X = np.ascontiguousarray(X)
        with self._fast_lock:
            if self._fast is None:
                self._fast_init()
            _check(self._fast_call(self._fast, ctypes.c_void_p(X.ctypes.data), self._fast_len_ref, self._fast_out_ref))
            return np.array(self._fast_out, dtype=np.float64)

    def _predict_small(self, X: np.ndarray) -> np.ndarray:
        # What ``Booster.predict`` does for a float64 row-major matrix on one thread, minus its
        # Python wrapper (predictor object, parameter string, size query: ~60 us per call).
        if not X.flags.c_contiguous:
            X = np.ascontiguousarray(X)
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        got = ctypes.c_int64(0)
        _check(
            lgb.basic._LIB.LGBM_BoosterPredictForMat(
                self._booster._handle,
                ctypes.c_void_p(X.ctypes.data),
                ctypes.c_int(lgb.basic._C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n),
                ctypes.c_int32(self._ncol),
                ctypes.c_int(lgb.basic._C_API_IS_ROW_MAJOR),
                ctypes.c_int(lgb.basic._C_API_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(self._num_iteration),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(got),
                ctypes.c_void_p(out.ctypes.data),
            )
        )
        if got.value != n:
            raise TrainingError(f"LightGBM returned {got.value} scores for {n} rows")
        return out

    def _fast_init(self) -> None:
        lib = lgb.basic._LIB
        handle = ctypes.c_void_p()
        _check(
            lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                self._booster._handle,
                ctypes.c_int(lgb.basic._C_API_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(self._num_iteration),
                ctypes.c_int(lgb.basic._C_API_DTYPE_FLOAT64),
                ctypes.c_int32(self._ncol),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(handle),
            )
        )
        call = lib.LGBM_BoosterPredictForMatSingleRowFast
        self._fast_out = (ctypes.c_double * 1)()
        self._fast_len = ctypes.c_int64(0)
        self._fast_out_ref = ctypes.byref(self._fast_out)
        self._fast_len_ref = ctypes.byref(self._fast_len)
        self._fast_call = call
        self._fast = handle

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Encode ``frame`` and score it."""
        return self.predict_matrix(self.encode(frame))

    def contributions(self, frame: pl.DataFrame | np.ndarray) -> np.ndarray:
        """Per-row feature contributions to the raw score (LightGBM ``pred_contrib``, TreeSHAP).

        Returns an ``(n, k + 1)`` array: one column per feature in signature order, then the
        model's expected value; each row adds up to the row's raw score (log-odds for a binary
        model), see ``raw_scores``.
        """
        X = self.encode(frame) if isinstance(frame, pl.DataFrame) else np.asarray(frame, dtype=np.float64)
        if X.shape[0] == 0:
            return np.empty((0, self._ncol + 1))
        out = self._booster.predict(X, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64).reshape(X.shape[0], self._ncol + 1)

    def raw_scores(self, frame: pl.DataFrame | np.ndarray) -> np.ndarray:
        """Raw scores before the link function (log-odds for binary, the value for regression)."""
        X = self.encode(frame) if isinstance(frame, pl.DataFrame) else np.asarray(frame, dtype=np.float64)
        if X.shape[0] == 0:
            return np.empty(0)
        return np.asarray(self._booster.predict(X, raw_score=True, num_threads=1), dtype=np.float64)

    def importance(self) -> pl.DataFrame:
        """Feature importance: ``feature``, ``gain``, ``split`` (sorted by gain, descending)."""
        gain = self._booster.feature_importance(importance_type="gain")
        splits = self._booster.feature_importance(importance_type="split")
        return pl.DataFrame(
            {"feature": self.feature_names, "gain": gain.astype(np.float64), "split": splits.astype(np.int64)}
        ).sort(["gain", "feature"], descending=[True, False])


def _check(code: int) -> None:
    if code != 0:
        raise TrainingError(f"LightGBM single-row predict failed: {lgb.basic._LIB.LGBM_GetLastError().decode()}")


def _encode(exprs: list[pl.Expr], names: list[str], frame: pl.DataFrame) -> np.ndarray:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataValidationError(
            f"missing feature column(s) {', '.join(missing)}; the model needs {', '.join(names)}"
        )
    try:
        out = frame.select(exprs).to_numpy()
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise DataValidationError(f"cannot encode features: {str(exc).splitlines()[0]}") from None
    return np.ascontiguousarray(out, dtype=np.float64).reshape(frame.height, len(names))


def _encode_expr(feature: Mapping[str, Any]) -> pl.Expr:
    name = feature["name"]
    if feature["kind"] == "categorical":
        levels = list(feature.get("levels") or [])
        return (
            pl.col(name)
            .cast(pl.String)
            .replace_strict(levels, list(range(len(levels))), default=None, return_dtype=pl.Float64)
            .fill_null(float("nan"))
        )
    return pl.col(name).cast(pl.Float64).fill_null(float("nan"))


# ---------------------------------------------------------------------------- split
def split(
    frame: pl.DataFrame,
    target: str,
    *,
    time_column: str | None = None,
    seed: int = 0,
    valid_fraction: float = 0.2,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into (train, valid) deterministically, independent of the row order.

    With a time column the latest ``valid_fraction`` of rows (by time, ties broken by a content
    hash) is the validation set. Otherwise the split is stratified by the target when it has
    few distinct values (classification), else a seeded hash split; each part is ordered by
    the content hash, so the same rows give the same frames whatever order they were read in.
    """
    if not 0 < valid_fraction < 1:
        raise TrainingError(f"valid_fraction must be between 0 and 1 (exclusive), got {valid_fraction}")
    if frame.height < 2:
        raise TrainingError(f"cannot split {frame.height} row(s) into train and valid sets")
    h = frame.hash_rows(seed=seed).alias("__h")
    work = frame.with_columns(h)
    n = frame.height
    if time_column:
        work = work.sort([time_column, "__h"])
        n_valid = min(n - 1, max(1, math.ceil(n * valid_fraction)))
        train, valid = work.head(n - n_valid), work.tail(n_valid)
    else:
        group = target if frame[target].n_unique() <= 20 else None
        if group is None:
            rank = pl.col("__h").rank("ordinal")
            size = pl.len()
        else:
            rank = pl.col("__h").rank("ordinal").over(group)
            size = pl.len().over(group)
        work = work.with_columns(
            (rank <= (size.cast(pl.Float64) * valid_fraction).round(0).clip(lower_bound=1)).alias("__valid")
        ).sort("__h")
        train = work.filter(~pl.col("__valid")).drop("__valid")
        valid = work.filter(pl.col("__valid")).drop("__valid")
        if train.height == 0:
            raise TrainingError(f"too few rows ({n}) to keep a training set")
    return train.drop("__h"), valid.drop("__h")


# ---------------------------------------------------------------------------- metrics
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


# ---------------------------------------------------------------------------- leakage
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
    flagged, warnings = [], []
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


# ---------------------------------------------------------------------------- train
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


def lgb_feature_names(signature: Mapping[str, Any]) -> list[str]:
    """The feature names LightGBM is given (the signature's, or ``f0..fk`` when one is not a plain identifier)."""
    return _feature_names(signature)


def _feature_names(signature: Mapping[str, Any]) -> list[str]:
    names = [f["name"] for f in signature["features"]]
    if all(_SAFE_NAME.match(n) for n in names):
        return names
    return [f"f{i}" for i in range(len(names))]


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
    except lgb.basic.LightGBMError as exc:
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


# ---------------------------------------------------------------------------- distributed training
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
    except lgb.basic.LightGBMError as exc:
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


# ---------------------------------------------------------------------------- domain classifier
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
    except lgb.basic.LightGBMError as exc:
        raise TrainingError(f"the domain classifier could not train: {str(exc).splitlines()[0]}") from None
    total = float(gain.sum())
    shares = gain / total if total > 0 else gain
    importance = sorted(((n, float(v)) for n, v in zip(names, shares, strict=True)), key=lambda t: (-t[1], t[0]))
    auc = compute_metrics("binary", y, oof)["auc"]
    return DomainClassifierResult(float(auc), [float(a) for a in fold_aucs], importance, n_ref, n_cur, folds)
