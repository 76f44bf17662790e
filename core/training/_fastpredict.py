"""``Model``'s scoring below ``_SMALL_BATCH`` rows: LightGBM's C API on one thread, else ``Booster.predict``.

One row goes through LightGBM's single-row "fast config" (``_lgbprivate.SingleRow``), a small batch
through ``LGBM_BoosterPredictForMat`` without ``Booster.predict``'s Python wrapper (predictor object,
parameter string, size query: ~60 us per call). Both give ``Booster.predict``'s scores exactly (the
same trees and transform; ``tests/test_training_fastpredict.py``) for a fraction of its cost.

Both need LightGBM's private API. When it is unavailable or switched off (``LAKEOPS_LGB_PRIVATE=0``),
when a call through it fails, or when the first call of each kind in the process disagrees with
``Booster.predict`` (beyond 1e-12), the model scores through ``Booster.predict`` on one thread
instead, the same scores at the public API's cost.
"""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np

from core.training import _lgbprivate
from core.training._lgbprivate import PrivateApiError, SingleRow, predict_mat

__all__ = ["_SMALL_BATCH", "FastPredictor"]

_SMALL_BATCH = 2048  # rows; below this prediction runs on one thread (LAKE-FACTS: 1.2 ms vs 30 us)
_TOLERANCE = 1e-12  # the private paths' largest accepted difference from Booster.predict
_VERIFIED = {"one": False, "small": False}  # the first call of each kind in the process was checked


class FastPredictor:
    """One booster's single-thread scoring of one row (``one``) and of small batches (``small``).

    Args:
        booster: the model's booster (single output per iteration).
        ncol: its number of features.
        num_iteration: the iterations to use (``-1``: all).
    """

    __slots__ = ("_booster", "_lock", "_ncol", "_num_iteration", "_private", "_row")

    def __init__(self, booster: lgb.Booster, ncol: int, num_iteration: int) -> None:
        self._booster = booster
        self._ncol = ncol
        self._num_iteration = num_iteration
        self._lock = threading.Lock()  # the single-row config holds per-call buffers: one call at a time
        self._row: SingleRow | None = None  # made on the first one-row call
        self._private = _lgbprivate.enabled()

    @property
    def private(self) -> bool:
        """Whether this booster still scores through LightGBM's private API."""
        return self._private

    def public(self, X: np.ndarray) -> np.ndarray:
        """Score through the public ``Booster.predict`` on one thread (the fallback)."""
        return np.asarray(self._booster.predict(X, num_iteration=self._num_iteration, num_threads=1), dtype=np.float64)

    def one(self, X: np.ndarray) -> np.ndarray:
        """Score one float64 row (shape ``(1, ncol)``)."""
        if not X.flags.c_contiguous:
            X = np.ascontiguousarray(X)
        with self._lock:
            row = self._row
            if row is not None:
                try:
                    return row(X)
                except PrivateApiError as exc:
                    self._fail(exc)
            elif self._private:
                out = self._first_one(X)
                if out is not None:
                    return out
        return self.public(X)

    def small(self, X: np.ndarray) -> np.ndarray:
        """Score a float64 matrix of 2 to ``_SMALL_BATCH - 1`` rows on one thread."""
        if self._private:
            if not X.flags.c_contiguous:
                X = np.ascontiguousarray(X)
            try:
                out = predict_mat(self._booster, X, self._ncol, self._num_iteration)
            except PrivateApiError as exc:
                self._fail(exc)
            else:
                if _VERIFIED["small"] or self._agrees("small", X, out):
                    return out
        return self.public(X)

    def _first_one(self, X: np.ndarray) -> np.ndarray | None:
        # under the lock: make the single-row config, score, and check the first result in the process
        try:
            row = SingleRow(self._booster, self._ncol, self._num_iteration)
            out = row(X)
        except PrivateApiError as exc:
            self._fail(exc)
            return None
        if not (_VERIFIED["one"] or self._agrees("one", X, out)):
            return None
        self._row = row
        return out

    def _agrees(self, kind: str, X: np.ndarray, out: np.ndarray) -> bool:
        expected = self.public(X)
        if out.shape == expected.shape and np.allclose(out, expected, rtol=0.0, atol=_TOLERANCE, equal_nan=True):
            _VERIFIED[kind] = True
            return True
        diff = np.nanmax(np.abs(out - expected)) if out.shape == expected.shape else f"shape {out.shape}"
        self._fail(PrivateApiError(f"the {kind}-row path differs from Booster.predict ({diff})"))
        return False

    def _fail(self, exc: Exception) -> None:
        self._private = False
        self._row = None
        _lgbprivate.disable(str(exc))
