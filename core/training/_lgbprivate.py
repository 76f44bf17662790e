"""Every use of LightGBM's private Python API, fenced in one module, each with a public fallback.

lakeops reaches past LightGBM's public API in three places, all here:

* **parameter aliases** (``lightgbm.basic._ConfigAliases``): the table ``validate_params`` checks
  user keys against. Fallback: the table of ``_aliases_snapshot`` (LightGBM 4.7's).
* **one-row and small-batch scoring** (``lightgbm.basic._LIB``, the C API through ctypes, and
  ``Booster._handle``): ``SingleRow`` (``LGBM_BoosterPredictForMatSingleRowFast*``) and
  ``predict_mat`` (``LGBM_BoosterPredictForMat`` without ``Booster.predict``'s Python wrapper).
  Fallback: ``Booster.predict`` (``_fastpredict`` switches to it).
* **the error class** ``lightgbm.basic.LightGBMError`` (not exported at the top level).
  Fallback: ``Exception``.

The private API is used only when it has the shape this module was written for (``probe``: the C
functions, ``Booster._handle`` and the C API constants as ``c_api.h`` defines them, LightGBM 4),
and only while ``LAKEOPS_LGB_PRIVATE`` is not ``0``/``false``/``off``/``no`` (read when a
``Model`` is made, so a process or a test can switch it off). A call that fails or disagrees with
``Booster.predict`` switches it off for the whole process (``disable``), with one warning.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any

import lightgbm as lgb
import numpy as np

from core.training._aliases_snapshot import PARAM_ALIASES

__all__ = [
    "ENV",
    "LightGBMError",
    "PrivateApiError",
    "SingleRow",
    "disable",
    "disabled_reason",
    "enabled",
    "param_aliases",
    "predict_mat",
    "probe",
]

_log = logging.getLogger("lakeops.training")

ENV = "LAKEOPS_LGB_PRIVATE"
"""Set to ``0`` (or ``false``/``off``/``no``) to use LightGBM's public API only."""

LightGBMError: type[Exception] = getattr(getattr(lgb, "basic", None), "LightGBMError", Exception)

# c_api.h's values (stable C ABI); LightGBM's private Python copies must agree with them
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_IS_ROW_MAJOR = 1  # C_API_IS_ROW_MAJOR
_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL
_FUNCTIONS = (
    "LGBM_BoosterPredictForMatSingleRowFastInit",
    "LGBM_BoosterPredictForMatSingleRowFast",
    "LGBM_BoosterPredictForMat",
    "LGBM_FastConfigFree",
    "LGBM_GetLastError",
)
_CONSTANTS = {
    "_C_API_DTYPE_FLOAT64": _DTYPE_FLOAT64,
    "_C_API_IS_ROW_MAJOR": _IS_ROW_MAJOR,
    "_C_API_PREDICT_NORMAL": _PREDICT_NORMAL,
}


class PrivateApiError(RuntimeError):
    """LightGBM's private API is missing, has another shape, or a call through it failed."""


def probe(module: Any) -> str | None:
    """Why ``module`` (``lightgbm``) does not offer the private API this module uses; None when it does."""
    version = str(getattr(module, "__version__", ""))
    if not version.startswith("4."):
        return f"LightGBM {version or '(no version)'} is not 4.x"
    basic = getattr(module, "basic", None)
    lib = getattr(basic, "_LIB", None)
    if lib is None:
        return "lightgbm.basic._LIB is missing"
    missing = [f for f in _FUNCTIONS if not callable(getattr(lib, f, None))]
    if missing:
        return f"the C API lacks {', '.join(missing)}"
    for name, value in _CONSTANTS.items():
        if getattr(basic, name, value) != value:
            return f"lightgbm.basic.{name} is {getattr(basic, name)!r}, c_api.h says {value}"
    return None


_PROBLEM: str | None = probe(lgb)


def enabled() -> bool:
    """Whether the private scoring paths may be used (the probe passed, not switched off, no failure)."""
    return _PROBLEM is None and os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def disabled_reason() -> str | None:
    """Why the private API is not used in this process (None: it is, unless ``LAKEOPS_LGB_PRIVATE`` says no)."""
    return _PROBLEM


def disable(reason: str) -> None:
    """Stop using the private API in this process (models made from now score through ``Booster.predict``)."""
    global _PROBLEM
    if _PROBLEM is None:
        _PROBLEM = reason
        _log.warning("LightGBM's private API is off, scoring through Booster.predict: %s", reason)


# ---------------------------------------------------------------------------- parameter aliases
def _alias_table(private: bool) -> dict[str, Any]:
    if private:
        # typed dict[str, list[str]] by LightGBM, but private: checked as an unknown value
        table: object = lgb.basic._ConfigAliases._get_all_param_aliases()
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and not isinstance(v, str) and all(isinstance(n, str) for n in v)
            for k, v in table.items()
        ):
            raise TypeError("not a dict of parameter name -> aliases")
        return table
    return dict(PARAM_ALIASES)


def param_aliases(private: bool | None = None) -> dict[str, str]:
    """Map every LightGBM parameter name and alias to its canonical name.

    From LightGBM's own table (private); from ``_aliases_snapshot`` when ``private`` is False, or
    when it is None and the private table is missing, has another shape or ``LAKEOPS_LGB_PRIVATE`` is off.
    """
    use_private = enabled() if private is None else private
    try:
        table = _alias_table(use_private)
    except (AttributeError, TypeError, ValueError, LightGBMError) as exc:
        if private:
            raise
        _log.warning("LightGBM's parameter table is unavailable (%s); using lakeops' copy of 4.7's", exc)
        table = _alias_table(False)
    out: dict[str, str] = {}
    for canonical, names in table.items():
        for n in [canonical, *names]:
            out.setdefault(n, canonical)
    return out


# ---------------------------------------------------------------------------- scoring
def _lib() -> ctypes.CDLL:
    """``lightgbm.basic._LIB``, the ctypes handle on LightGBM's C library (basic imports it from
    ``lightgbm.libpath`` without re-exporting it, so it is read as the untyped attribute it is)."""
    lib = getattr(lgb.basic, "_LIB", None)
    if lib is None:
        raise AttributeError("lightgbm.basic._LIB is missing")
    return lib


def _check(code: int) -> None:
    if code != 0:
        raise PrivateApiError(f"LightGBM's C API failed: {_lib().LGBM_GetLastError().decode()}")


def _handle(booster: lgb.Booster) -> ctypes.c_void_p:
    handle = getattr(booster, "_handle", None)
    if not isinstance(handle, ctypes.c_void_p) or not handle.value:
        raise PrivateApiError(f"Booster._handle is {type(handle).__name__}, not a live ctypes.c_void_p")
    return handle


_PRIVATE_FAILURES = (AttributeError, TypeError, ValueError, ctypes.ArgumentError, OSError)


class SingleRow:
    """LightGBM's single-row "fast config" for one booster: one float64 row in, one score out, one thread.

    Holds per-call buffers and is not thread-safe: one call at a time (the caller locks).

    Raises:
        PrivateApiError: the C API refused the config, or is not the shape this module expects.
    """

    __slots__ = ("_booster", "_call", "_config", "_len", "_len_ref", "_out", "_out_ref")

    def __init__(self, booster: lgb.Booster, ncol: int, num_iteration: int) -> None:
        self._config: ctypes.c_void_p | None = None
        try:
            lib = _lib()
            config = ctypes.c_void_p()
            _check(
                lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    _handle(booster),
                    ctypes.c_int(_PREDICT_NORMAL),
                    ctypes.c_int(0),
                    ctypes.c_int(num_iteration),
                    ctypes.c_int(_DTYPE_FLOAT64),
                    ctypes.c_int32(ncol),
                    ctypes.c_char_p(b"num_threads=1"),
                    ctypes.byref(config),
                )
            )
            self._call = lib.LGBM_BoosterPredictForMatSingleRowFast
        except _PRIVATE_FAILURES as exc:
            raise PrivateApiError(f"single-row fast config: {type(exc).__name__}: {exc}") from None
        self._booster = booster  # the config points into the booster: keep it alive as long
        self._config = config
        self._out = (ctypes.c_double * 1)()
        self._len = ctypes.c_int64(0)
        self._out_ref = ctypes.byref(self._out)
        self._len_ref = ctypes.byref(self._len)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Score one C-contiguous float64 row (shape ``(1, ncol)``)."""
        try:
            code = self._call(self._config, ctypes.c_void_p(X.ctypes.data), self._len_ref, self._out_ref)
        except _PRIVATE_FAILURES as exc:
            raise PrivateApiError(f"single-row predict: {type(exc).__name__}: {exc}") from None
        if code:  # inline, not _check: this is the hottest call of serving
            _check(code)
        return np.array(self._out, dtype=np.float64)

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            try:
                _lib().LGBM_FastConfigFree(config)
            except Exception:  # noqa: BLE001,S110 - interpreter shutdown: nothing left to free
                pass


def predict_mat(booster: lgb.Booster, X: np.ndarray, ncol: int, num_iteration: int) -> np.ndarray:
    """Score a C-contiguous float64 matrix on one thread: ``Booster.predict`` minus its Python wrapper.

    Raises:
        PrivateApiError: the C API failed or is not the shape this module expects.
    """
    n = X.shape[0]
    out = np.empty(n, dtype=np.float64)
    got = ctypes.c_int64(0)
    try:
        _check(
            _lib().LGBM_BoosterPredictForMat(
                _handle(booster),
                ctypes.c_void_p(X.ctypes.data),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n),
                ctypes.c_int32(ncol),
                ctypes.c_int(_IS_ROW_MAJOR),
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(num_iteration),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(got),
                ctypes.c_void_p(out.ctypes.data),
            )
        )
    except _PRIVATE_FAILURES as exc:
        raise PrivateApiError(f"matrix predict: {type(exc).__name__}: {exc}") from None
    if got.value != n:
        raise PrivateApiError(f"LightGBM returned {got.value} scores for {n} rows")
    return out
