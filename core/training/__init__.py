"""LightGBM training and evaluation, deterministic for a seed: the only module that imports lightgbm.

Pure: frames in, a ``Model`` (text + signature + sha256) and metrics out; no lake I/O.

The ``Signature`` (defined in the pure ``core.signature``, re-exported here) is a typed, immutable ``msgspec`` struct that travels with the
model text: the task, the target, the threshold, the time column, the features in matrix order
(``Feature``: name, kind, dtype, categorical levels), the pass-through fields (``PassThrough``),
the feedback key and the feature views (``FeatureViewRef``). Its stored JSON form (run artifact
``model/signature.json``, the registry's ``signature_json``) is unchanged::

    {"task": "binary" | "regression", "target": str, "threshold": float,
     "time_column": str | None,
     "features": [{"name": str, "kind": "numeric" | "categorical", "dtype": str,
                   "levels": [str, ...]}],          # levels only for categorical features
     "passthrough": [{"name": str, "type": "string" | "integer" | "number" | "datetime" | "date",
                      "role": "id" | "event_time" | "segment"}],
     "feedback_key": str | None,                    # a pass-through field feedback may join by
     "feature_views": [...]}                        # only for models trained on feature views

Read it with ``Signature.from_dict``/``from_json`` or ``as_signature`` once, where it comes in as
JSON; write it with ``Signature.to_dict``/``to_json``.

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

The package's modules: ``_params`` (defaults, ``validate_params``), ``_signature`` (``infer_signature``), ``_encoding`` (the
one encoder), ``_model`` (``Model``), ``_fastpredict`` (its one-row and small-batch scoring),
``_lgbprivate`` (the only user of LightGBM's private API), ``_compiled`` (a model's trees compiled
to machine code with lleaves, checked against LightGBM: serving's hot models), ``_split``, ``_metrics``, ``_leakage``,
``_fit`` (``train``), ``_distributed`` (``lightgbm.dask``) and ``_domain`` (the drift domain
classifier). Import from ``core.training``, not from the modules.
"""

from __future__ import annotations

# kept importable as before the split (not part of __all__): tests and core.compute use them
from core.errors import DataValidationError as DataValidationError
from core.errors import TrainingError as TrainingError
from core.signature import (
    Feature,
    FeatureViewRef,
    PassThrough,
    Signature,
    as_signature,
    feature_views_of,
)
from core.training._compiled import CompiledModel, CompileRefused, compile_model
from core.training._distributed import best_round, iteration_losses, train_distributed, truncate_model
from core.training._domain import DOMAIN_PARAMS, DomainClassifierResult, domain_classifier
from core.training._encoding import _encode as _encode
from core.training._encoding import _encode_expr as _encode_expr
from core.training._encoding import lgb_feature_names
from core.training._fit import TrainResult, train
from core.training._leakage import DOMINANT_GAIN, LEAKAGE_GAIN, LEAKAGE_GAIN_SCORE, LEAKAGE_SCORE, leakage
from core.training._metrics import compute_metrics
from core.training._model import Model
from core.training._params import DEFAULT_PARAMS, validate_params
from core.training._params import Task as Task
from core.training._signature import detect_time_column, id_like_columns, infer_signature, infer_task
from core.training._split import split

__all__ = [
    "CompileRefused",
    "CompiledModel",
    "compile_model",
    "DEFAULT_PARAMS",
    "DOMINANT_GAIN",
    "LEAKAGE_GAIN",
    "LEAKAGE_GAIN_SCORE",
    "LEAKAGE_SCORE",
    "DOMAIN_PARAMS",
    "DomainClassifierResult",
    "Feature",
    "FeatureViewRef",
    "PassThrough",
    "Signature",
    "as_signature",
    "feature_views_of",
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
