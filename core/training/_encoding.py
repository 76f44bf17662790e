"""The one encoder of training and serving: a frame to the float64 matrix LightGBM sees, and LightGBM's feature names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from core.errors import DataValidationError

__all__ = ["_SAFE_NAME", "_encode", "_encode_expr", "_feature_names", "lgb_feature_names"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


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



def lgb_feature_names(signature: Mapping[str, Any]) -> list[str]:
    """The feature names LightGBM is given (the signature's, or ``f0..fk`` when one is not a plain identifier)."""
    return _feature_names(signature)


def _feature_names(signature: Mapping[str, Any]) -> list[str]:
    names = [f["name"] for f in signature["features"]]
    if all(_SAFE_NAME.match(n) for n in names):
        return names
    return [f"f{i}" for i in range(len(names))]
