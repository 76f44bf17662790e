"""The signature: the task, the features (kinds and levels) and the pass-through fields of a dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from core.errors import TrainingError
from core.signature import Feature, PassThrough, PassThroughType, Role, Signature
from core.training._params import Task

__all__ = ["detect_time_column", "id_like_columns", "infer_signature", "infer_task"]


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


# Row numbers written by exports (R's rownames, pandas' index, SQL rowid): never a property of the row.
_ROW_INDEX_NAMES = frozenset({"rownames", "row.names", "row_names", "rowid", "row_id", "index", "level_0", "unnamed: 0", ""})


def id_like_columns(frame: pl.DataFrame, *, exclude: Sequence[str] = ()) -> list[str]:
    """Return the columns that look like ids, not properties of the row.

    A string column named ``id``/``*_id`` or with every value unique; an integer column named
    ``id``/``*_id`` or like an exported row number (``rownames``, ``index``, ``Unnamed: 0``, ...).
    An integer column is judged by its name only: an all-unique integer may be a measurement
    (a credit limit), and the rule must decide the same on a sample (the Dask engine's proxy).
    """
    out = []
    for name, dtype in frame.schema.items():
        if name in exclude:
            continue
        lower = name.lower()
        named = lower == "id" or lower.endswith("_id")
        if dtype in (pl.String, pl.Categorical):
            if named or (frame.height > 1 and frame[name].n_unique() == frame.height):
                out.append(name)
        elif dtype.is_integer() and (named or lower in _ROW_INDEX_NAMES):
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
) -> tuple[Signature, dict[str, str]]:
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
        excluded[c] = "id-like (an id or row-number name, or every value unique)"
    features: list[Feature] = []
    for name, dtype in frame.schema.items():
        if name == target or name in excluded:
            continue
        if dtype == pl.Boolean or dtype.is_numeric():
            features.append(Feature(name=name, kind="numeric", dtype=str(dtype)))
        elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            levels = sorted(frame[name].cast(pl.String).drop_nulls().unique().to_list())
            features.append(Feature(name=name, kind="categorical", dtype="String", levels=tuple(levels)))
        elif (dtype == pl.Date or isinstance(dtype, pl.Datetime)) and time_column is None:
            kind = "a date" if dtype == pl.Date else "a datetime"
            excluded[name] = (f"{kind}, not a feature; the holdout was drawn at random: --time-column {name} "
                              "would hold out the newest rows instead")
        else:
            excluded[name] = f"unsupported type {dtype}"
    if not features:
        raise TrainingError(f"no feature columns left after excluding {', '.join(excluded) or 'the target'}")
    reserved = [n for n in [target, *(f.name for f in features)] if n.startswith("__")]
    if reserved:
        raise TrainingError(
            f"column {reserved[0]!r}: names starting with '__' are lakeops' own (e.g. __prediction_id in the "
            "served-traffic dataset); rename it"
        )
    pt = _passthrough_fields(frame, features, excluded, time_column, passthrough, feedback_key)
    signature = Signature(task=task, target=target, threshold=float(threshold), time_column=time_column,
                          features=tuple(features), passthrough=pt, feedback_key=feedback_key)
    return signature, excluded


def _passthrough_type(name: str, dtype: pl.DataType) -> PassThroughType:
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
    frame: pl.DataFrame, features: list[Feature], excluded: Mapping[str, str], time_column: str | None,
    names: Sequence[str] | None, feedback_key: str | None,
) -> tuple[PassThrough, ...]:
    """The pass-through fields: named ones, or by default the time column and id-like columns."""
    feature_names = {f.name for f in features}
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
        role: Role = "event_time" if name == time_column else ("id" if str(excluded.get(name, "")).startswith("id-like") else "segment")
        out.append(PassThrough(name=name, type=_passthrough_type(name, frame.schema[name]), role=role))
    if feedback_key is not None and feedback_key not in {p.name for p in out}:
        raise TrainingError(f"feedback key {feedback_key!r} must be a pass-through field; pass-through: "
                            f"{', '.join(p.name for p in out) or 'none'}")
    if feedback_key is not None and next(p for p in out if p.name == feedback_key).type not in ("string", "integer"):
        raise TrainingError(f"feedback key {feedback_key!r} must be a string or integer column (an entity id)")
    return tuple(out)
