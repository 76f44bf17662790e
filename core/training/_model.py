"""``Model``: a LightGBM model's text, signature and sha256, with encoding, scoring and explanations."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from core.errors import TrainingError
from core.signature import Signature, as_signature
from core.training._encoding import _encode, _encode_expr
from core.training._fastpredict import _SMALL_BATCH, FastPredictor
from core.training._lgbprivate import LightGBMError

__all__ = ["Model"]


class Model:
    """A trained LightGBM model: its text, its signature and the sha256 of the text.

    Example:
        >>> model = Model.from_text(text, signature)            # doctest: +SKIP
        >>> scores = model.predict(frame)                       # doctest: +SKIP
    """

    def __init__(self, text: str, signature: Signature | Mapping[str, Any], booster: lgb.Booster | None = None) -> None:
        self.text = text
        self.signature: Signature = as_signature(signature)
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        try:
            self._booster = booster or lgb.Booster(model_str=text)
        except LightGBMError as exc:
            raise TrainingError(
                f"the model text is not a LightGBM model: {str(exc).splitlines()[0]}"
            ) from None
        features = self.signature.features
        if self._booster.num_feature() != len(features):
            raise TrainingError(
                f"the model has {self._booster.num_feature()} features but its signature lists {len(features)}"
            )
        self._exprs = [_encode_expr(f) for f in features]
        self._ncol = len(features)
        self._single_output = self._booster.num_model_per_iteration() == 1
        best = int(self._booster.best_iteration or 0)
        self._num_iteration = best if best > 0 else -1
        self._fast = FastPredictor(self._booster, self._ncol, self._num_iteration)

    @classmethod
    def from_text(cls, text: str, signature: Signature | Mapping[str, Any]) -> Model:
        """Load a model from its LightGBM text and signature (a ``Signature`` or its stored dict; no pickle anywhere)."""
        return cls(text, signature)

    @property
    def feature_names(self) -> list[str]:
        """The feature names in signature (matrix column) order."""
        return self.signature.names

    @property
    def num_trees(self) -> int:
        """Number of boosting iterations kept in the model."""
        return int(self._booster.current_iteration())

    @property
    def fast_path(self) -> bool:
        """Whether one row and small batches score through LightGBM's C API (else ``Booster.predict``)."""
        return self._fast.private

    def prediction_text(self) -> str:
        """The model text with exactly the trees prediction uses (up to the best iteration)."""
        return str(self._booster.model_to_string(num_iteration=self._num_iteration))

    def dump(self) -> dict[str, Any]:
        """The trees prediction uses as LightGBM's JSON dump (``Booster.dump_model``)."""
        return dict(self._booster.dump_model(num_iteration=self._num_iteration))

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
                return self._fast.one(X)
            if 1 < X.shape[0] < _SMALL_BATCH:
                return self._fast.small(X)
        threads = 1 if X.shape[0] < _SMALL_BATCH else max(1, min(4, os.cpu_count() or 1))
        return np.asarray(self._booster.predict(X, num_threads=threads), dtype=np.float64)

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
