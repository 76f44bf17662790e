"""Feature view definitions: entity, event time and features as polars expressions; parsing, checks, content hash.

Pure: no lake I/O. A definition is data (TOML or Python), so it can be hashed, stored in the
``feature_views`` table and read back by every process::

    name = "churn_usage"            # letters, digits, '_' (the online table is online/<name>_v<N>)
    source = "churn_usage"          # the dataset whose rows are the events
    entity = "customer_id"          # the entity key column
    event_time = "event_at"         # when each row's values became known (a datetime column)
    missing = "default"             # online, an entity with no row: "error" (422) or "default"

    [[features]]
    name = "calls_30d"
    expr = "pl.col('calls')"        # a row-level polars expression over the source rows
    agg = "sum"                     # sum | mean | count | min | max; omitted: the latest value
    window = "30d"                  # with agg: the window (t - window, t]; s, m, h, d or w

A view may also declare **request-time fields** (values a request sends and each label row
carries, with their types) and **request features**: row-level expressions over those fields and
the view's own features, computed per row after the point-in-time lookup, by one function
(``request_values``) for training sets, batch scoring and the serving process alike::

    [request]                       # request-time fields and their types (Float64, Int64, Boolean, String)
    amount = "Float64"

    [[request_features]]
    name = "amount_per_call_30d"
    expr = "pl.col('amount') / (pl.col('calls_30d') + 1)"

A feature is either the **latest value** of its expression (the row with the greatest event
time at or before t) or a **windowed aggregate** over the entity's rows with event time in
``(t - window, t]``. Rows whose expression is null are skipped by aggregates; NaN propagates.
An entity with no row in the window (or none at all) gets the feature's ``default``: declared,
else 0 for ``count`` and ``sum`` and null otherwise; the same value serves an unknown entity
online under ``missing = "default"``, so offline and online agree for it too.

Expressions are parsed, never ``eval``-ed: only ``pl.col``/``pl.lit``/``pl.when`` and the
element-wise methods and operators in ``ALLOWED_METHODS`` are accepted, so a definition cannot run
code, read files or aggregate across rows (which would make a row's value depend on its
neighbours, and offline and online disagree).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from core.config import read_toml
from core.errors import FeatureViewError

__all__ = [
    "AGGREGATIONS",
    "ALLOWED_METHODS",
    "REQUEST_TYPES",
    "RequestPlan",
    "Feature",
    "FeatureView",
    "compile_expr",
    "format_window",
    "load_view",
    "load_views",
    "parse_view",
    "parse_window",
    "window_text",
]

AGGREGATIONS = ("sum", "mean", "count", "min", "max")
"""Windowed aggregations: ``sum`` and ``count`` of an empty window are 0 (unless a default is
declared), ``mean``/``min``/``max`` null."""

REQUEST_TYPES = ("Float64", "Int64", "Boolean", "String")
"""The types a request field may declare."""
_REQUEST_DTYPES: dict[str, pl.DataType] = {"Float64": pl.Float64(), "Int64": pl.Int64(), "Boolean": pl.Boolean(),
                                           "String": pl.String()}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_WINDOW = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000, "w": 604_800_000_000}

# pl.<name>: functions that build expressions, and dtypes for cast()
_PL_FUNCS = {"col", "lit", "when", "coalesce", "max_horizontal", "min_horizontal", "sum_horizontal",
             "mean_horizontal", "concat_str"}
_PL_DTYPES = {"Float64", "Float32", "Int64", "Int32", "Int16", "Int8", "UInt64", "UInt32", "UInt16", "UInt8",
              "Boolean", "String", "Utf8"}
ALLOWED_METHODS: dict[str, frozenset[str]] = {
    "": frozenset({
        "abs", "sqrt", "cbrt", "log", "log10", "log1p", "exp", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
        "sinh", "cosh", "tanh", "round", "floor", "ceil", "clip", "sign", "pow", "cast", "fill_null", "fill_nan",
        "is_null", "is_not_null", "is_nan", "is_not_nan", "is_finite", "is_infinite", "is_in", "is_between",
        "not_", "and_", "or_", "xor", "eq", "ne", "lt", "le", "gt", "ge", "add", "sub", "mul", "truediv",
        "floordiv", "mod", "neg", "replace", "replace_strict", "alias",
    }),
    "str": frozenset({
        "len_chars", "len_bytes", "to_lowercase", "to_uppercase", "strip_chars", "contains", "starts_with",
        "ends_with", "slice", "replace", "replace_all", "zfill", "head", "tail", "to_integer",
    }),
    "dt": frozenset({
        "year", "month", "day", "hour", "minute", "second", "weekday", "ordinal_day", "week", "quarter", "epoch",
    }),
}
"""Methods an expression may call, by namespace (``""`` for methods of the expression itself).
All are element-wise: a row's value depends on that row only."""
_WHEN_METHODS = {"then", "otherwise", "when"}
_BINOPS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
_CMPOPS: dict[type, Any] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


class _Pl:
    """The ``pl`` name inside an expression: only the allowed functions and dtypes."""


class _Namespace:
    """``expr.str`` / ``expr.dt`` inside an expression (only the allowed methods)."""

    def __init__(self, ns: str, obj: Any) -> None:
        self.ns = ns
        self.obj = obj


def parse_window(text: str, *, where: str = "window") -> int:
    """Parse ``"30d"``-style windows (``s``, ``m``, ``h``, ``d``, ``w``) into microseconds.

    Raises:
        FeatureViewError: not a positive whole number followed by one unit.
    """
    m = _WINDOW.match(str(text))
    if not m or int(m.group(1)) <= 0:
        raise FeatureViewError(f"{where} {text!r} is not a window: write a positive whole number and a unit, e.g. '30d', '12h', '90m'")
    return int(m.group(1)) * _UNIT_US[m.group(2)]


def format_window(us: int) -> str:
    """The canonical text of a window in microseconds: the largest unit that divides it."""
    for unit in ("w", "d", "h", "m", "s"):
        if us % _UNIT_US[unit] == 0:
            return f"{us // _UNIT_US[unit]}{unit}"
    return f"{us // 1_000_000}s"


def compile_expr(text: str, *, where: str = "expression", columns: Mapping[str, pl.Expr] | None = None) -> pl.Expr:
    """Parse a polars expression written as text (``"pl.col('minutes') / pl.col('calls')"``) safely.

    The text is parsed with ``ast`` and rebuilt from an allow-list (see the module docstring);
    nothing is evaluated by Python. ``columns`` reads some columns through an expression (a
    request feature reads its inputs in their declared types).

    Raises:
        FeatureViewError: the text does not parse, uses something not allowed, or is not an
            expression with one output.
    """
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise FeatureViewError(f"{where} {text!r} does not parse: {exc.msg}") from None
    try:
        out = _build(tree.body, where, columns)
    except FeatureViewError:
        raise
    except (TypeError, ValueError, AttributeError, pl.exceptions.PolarsError) as exc:
        raise FeatureViewError(f"{where} {text!r} is not a valid polars expression: {str(exc).splitlines()[0]}") from None
    if not isinstance(out, pl.Expr):
        raise FeatureViewError(f"{where} {text!r} is not a polars expression (start from pl.col(...) or pl.lit(...))")
    if out.meta.has_multiple_outputs():
        raise FeatureViewError(f"{where} {text!r} has several outputs; a feature is one column")
    return out


def _build(node: ast.AST, where: str, cols: Mapping[str, pl.Expr] | None = None) -> Any:  # noqa: C901 - one branch per allowed node kind
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (bool, int, float, str)):
            return node.value
        raise FeatureViewError(f"{where}: constant {node.value!r} is not allowed")
    if isinstance(node, ast.Name):
        if node.id == "pl":
            return _Pl()
        raise FeatureViewError(f"{where}: name {node.id!r} is not allowed; refer to columns as pl.col('{node.id}')")
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_build(e, where, cols) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_build(k, where, cols): _build(v, where, cols) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    if isinstance(node, ast.Attribute):
        base = _build(node.value, where, cols)
        name = node.attr
        if isinstance(base, _Pl):
            if name in _PL_FUNCS or name in _PL_DTYPES:
                return getattr(pl, name)
            raise FeatureViewError(f"{where}: pl.{name} is not allowed; use pl.col, pl.lit, pl.when or a dtype")
        if type(base).__name__ in ("When", "Then", "ChainedWhen", "ChainedThen") and name in _WHEN_METHODS:
            return getattr(base, name)
        if isinstance(base, pl.Expr):
            if name in ALLOWED_METHODS and name:
                return _Namespace(name, getattr(base, name))
            if name in ALLOWED_METHODS[""]:
                return getattr(base, name)
            raise FeatureViewError(
                f"{where}: .{name}() is not allowed (features are element-wise; windowed aggregates are "
                "declared with agg and window)"
            )
        if isinstance(base, _Namespace):
            if name in ALLOWED_METHODS[base.ns]:
                return getattr(base.obj, name)
            raise FeatureViewError(f"{where}: .{base.ns}.{name}() is not allowed")
        raise FeatureViewError(f"{where}: attribute .{name} is not allowed here")
    if isinstance(node, ast.Call):
        func = _build(node.func, where, cols)
        if not callable(func) or isinstance(func, (_Pl, _Namespace)):
            raise FeatureViewError(f"{where}: only allowed functions and methods can be called")
        args = [_build(a, where, cols) for a in node.args]
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise FeatureViewError(f"{where}: *args and **kwargs are not allowed")
        kwargs = {k.arg: _build(k.value, where, cols) for k in node.keywords if k.arg is not None}
        if cols is not None and func is pl.col and len(args) == 1 and not kwargs and isinstance(args[0], str) and args[0] in cols:
            return cols[args[0]]  # ``compile_expr(columns=...)``: this column read through an expression
        for value in [*args, *kwargs.values()]:
            if callable(value) and not isinstance(value, (pl.Expr, type)) and not _is_dtype(value):
                raise FeatureViewError(f"{where}: a function cannot be passed as an argument")
        return func(*args, **kwargs)
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise FeatureViewError(f"{where}: operator {type(node.op).__name__} is not allowed")
        left, right = _build(node.left, where, cols), _build(node.right, where, cols)
        if not isinstance(left, pl.Expr) and not isinstance(right, pl.Expr):
            # Python would compute it here, eagerly (9 ** 9 ** 9 never ends): write the number
            raise FeatureViewError(f"{where}: arithmetic between constants is not allowed; write the value")
        return op(left, right)
    if isinstance(node, ast.UnaryOp):
        operand = _build(node.operand, where, cols)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Invert):
            return ~operand
        raise FeatureViewError(f"{where}: 'not' is not allowed; use ~ for a boolean expression")
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise FeatureViewError(f"{where}: chained comparisons are not allowed; use (a < b) & (b < c)")
        op = _CMPOPS.get(type(node.ops[0]))
        if op is None:
            raise FeatureViewError(f"{where}: comparison {type(node.ops[0]).__name__} is not allowed")
        return op(_build(node.left, where, cols), _build(node.comparators[0], where, cols))
    raise FeatureViewError(f"{where}: {type(node).__name__} is not allowed in a feature expression")


def _is_dtype(value: Any) -> bool:
    return isinstance(value, pl.DataType) or (isinstance(value, type) and issubclass(value, pl.DataType))


@dataclass(frozen=True)
class Feature:
    """One feature of a view.

    Attributes:
        name: the feature's column name (letters, digits, ``_``).
        expr: a row-level polars expression over the source rows, as text.
        agg: ``sum``, ``mean``, ``count``, ``min`` or ``max`` over ``window``; None for the
            latest value.
        window: the window of an aggregate (``"30d"``); None for the latest value.
        default: the value for an empty window or an entity with no row before the time, and
            for an unknown entity online under ``missing = "default"``. None: 0 for ``count`` and
            ``sum``, else null.
        description: one line for people.
    """

    name: str
    expr: str = ""
    agg: str | None = None
    window: str | None = None
    default: Any = None
    description: str = ""

    @property
    def window_us(self) -> int | None:
        """The window in microseconds (None for a latest-value feature)."""
        return parse_window(self.window) if self.window else None

    @property
    def fill(self) -> Any:
        """The value of an empty window / an entity with no row (see ``default``)."""
        if self.default is not None:
            return self.default
        return 0 if self.agg in ("count", "sum") else None

    def compiled(self) -> pl.Expr:
        """The expression, parsed (``pl.lit(1)`` for a ``count`` without one)."""
        if not self.expr:
            return pl.lit(1, dtype=pl.Int64)
        return compile_expr(self.expr, where=f"feature {self.name!r}: expression")

    def canonical(self) -> dict[str, Any]:
        """The hashed form: name, expression (as parsed, re-printed), agg, window, default."""
        expr = ast.unparse(ast.parse(self.expr.strip(), mode="eval")) if self.expr else ""
        window_us = self.window_us
        return {"name": self.name, "expr": expr, "agg": self.agg,
                "window": format_window(window_us) if window_us is not None else None, "default": self.default}


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned set of features over one source dataset.

    Attributes:
        name: the view's name (letters, digits, ``_``).
        source: the dataset whose rows are the events.
        entity: the entity key column (in the source, and in label datasets and requests).
        event_time: the source's event-time column (when a row's values became known).
        features: the features, in order.
        missing: online, an entity without a row: ``"error"`` (a 422 problem naming the entity
            field) or ``"default"`` (each feature's ``fill``).
        description: one line for people.
        version: set when read from the lake (None for a definition not registered yet).
        request_fields: ``(name, type)`` of the values a request sends (and each label row
            carries): ``Float64``, ``Int64``, ``Boolean`` or ``String``.
        request_features: row-level expressions over the request fields and this view's
            ``features``, computed per row after the lookup (``request_values``); never
            materialised (they depend on the request).
    """

    name: str
    source: str
    entity: str
    event_time: str
    features: tuple[Feature, ...]
    missing: Literal["error", "default"] = "error"
    description: str = ""
    version: int | None = field(default=None, compare=False)
    request_fields: tuple[tuple[str, str], ...] = ()
    request_features: tuple[Feature, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.request_fields, Mapping):  # the Python API's {"amount": "Float64"}
            object.__setattr__(self, "request_fields", tuple(self.request_fields.items()))
        for key in ("features", "request_fields", "request_features"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(tuple(x) if key == "request_fields" else x for x in getattr(self, key)))
        self.check()

    def check(self) -> None:
        """Check the definition on its own (names, aggs, windows, expressions parse).

        Raises:
            FeatureViewError: naming the field and the problem.
        """
        if not _NAME.match(self.name or ""):
            raise FeatureViewError(f"feature view name {self.name!r}: use letters, digits and '_' (starting with a letter)")
        for key in ("source", "entity", "event_time"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise FeatureViewError(f"feature view {self.name!r}: {key} is required (a column or dataset name)")
        if self.entity == self.event_time:
            raise FeatureViewError(f"feature view {self.name!r}: entity and event_time must be different columns")
        if self.missing not in ("error", "default"):
            raise FeatureViewError(f"feature view {self.name!r}: missing must be 'error' or 'default', got {self.missing!r}")
        if not self.features:
            raise FeatureViewError(f"feature view {self.name!r} has no features")
        seen: set[str] = set()
        for f in self.features:
            self._check_name(f, seen)
            seen.add(f.name)
            _check_feature(f, f"feature view {self.name!r}, feature {f.name!r}")
        self._check_request(seen)

    def _check_request(self, seen: set[str]) -> None:
        """The request fields and request features (names, types, expressions over known inputs)."""
        fields: dict[str, str] = {}
        for name, dtype in self.request_fields:
            where = f"feature view {self.name!r}: request field {name!r}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise FeatureViewError(f"{where}: use letters, digits and '_' (starting with a letter)")
            if dtype not in REQUEST_TYPES:
                raise FeatureViewError(f"{where}: type {dtype!r} is not one of {', '.join(REQUEST_TYPES)}")
            if name in fields or name in seen or name in (self.entity, self.event_time):
                raise FeatureViewError(f"{where}: named like another field, a feature or the entity/event-time column")
            fields[name] = dtype
        if self.request_features and not fields:
            raise FeatureViewError(f"feature view {self.name!r}: request features need request fields ([request] name = \"Float64\")")
        for f in self.request_features:
            where = f"feature view {self.name!r}, request feature {f.name!r}"
            if not isinstance(f.name, str) or not _NAME.match(f.name) or f.name.startswith("__"):
                raise FeatureViewError(f"feature view {self.name!r}: request feature name {f.name!r}: use letters, digits and '_'")
            if f.name in seen or f.name in fields or f.name in (self.entity, self.event_time):
                raise FeatureViewError(f"{where}: named like another feature, a request field or the entity/event-time column")
            seen.add(f.name)
            if f.agg is not None or f.window or f.default is not None:
                raise FeatureViewError(f"{where}: a request feature is one row's expression: no agg, window or default")
            if not f.expr:
                raise FeatureViewError(f"{where}: expr is required")
            expr = compile_expr(f.expr, where=f"{where}: expression")
            if not expr.meta.root_names():
                raise FeatureViewError(f"{where}: the expression reads no request field or feature (a constant is not a feature)")
            unknown = [c for c in expr.meta.root_names() if c not in fields and c not in self.feature_names]
            if unknown:
                raise FeatureViewError(
                    f"{where}: {unknown[0]!r} is neither a request field ({', '.join(fields)}) nor a feature of the view "
                    f"({', '.join(self.feature_names)})"
                )

    @property
    def all_feature_names(self) -> list[str]:
        """The features a training set or a request gets from this view: ``features`` then ``request_features``."""
        return [*self.feature_names, *(f.name for f in self.request_features)]

    @property
    def request_inputs(self) -> list[str]:
        """The request fields and the view features the request features read (request fields first)."""
        used = {c for f in self.request_features for c in f.compiled().meta.root_names()}
        return [n for n, _ in self.request_fields if n in used] + [n for n in self.feature_names if n in used]


    def _check_name(self, f: Feature, seen: set[str]) -> None:
        where = f"feature view {self.name!r}, feature {f.name!r}"
        if isinstance(f.name, str) and f.name.startswith("__"):
            raise FeatureViewError(f"{where}: names starting with '__' are lakeops' own")
        if not isinstance(f.name, str) or not _NAME.match(f.name):
            raise FeatureViewError(f"feature view {self.name!r}: feature name {f.name!r}: use letters, digits and '_'")
        if f.name in seen:
            raise FeatureViewError(f"feature view {self.name!r}: feature {f.name!r} is defined twice")
        if f.name in (self.entity, self.event_time):
            raise FeatureViewError(f"{where}: a feature cannot be named like the entity or event-time column")

    @property
    def feature_names(self) -> list[str]:
        """The feature names, in order."""
        return [f.name for f in self.features]

    @property
    def max_window_us(self) -> int:
        """The longest window in microseconds (0 for a view of latest values only)."""
        return max((f.window_us or 0 for f in self.features), default=0)

    @property
    def has_latest(self) -> bool:
        """Whether any feature is a latest value (then two rows of one entity at one time are ambiguous)."""
        return any(f.agg is None for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data (what ``parse_view`` reads)."""
        def plain(fs: Sequence[Feature]) -> list[dict[str, Any]]:
            return [{k: v for k, v in {"name": f.name, "expr": f.expr, "agg": f.agg, "window": f.window,
                                       "default": f.default, "description": f.description}.items() if v not in (None, "")}
                    for f in fs]

        out: dict[str, Any] = {
            "name": self.name, "source": self.source, "entity": self.entity, "event_time": self.event_time,
            "missing": self.missing, "description": self.description, "features": plain(self.features),
        }
        if self.request_fields or self.request_features:
            out["request"] = dict(self.request_fields)
            out["request_features"] = plain(self.request_features)
        return out

    def content_hash(self) -> str:
        """sha256 of the canonical definition (descriptions left out): the same definition, the same hash."""
        doc: dict[str, Any] = {"name": self.name, "source": self.source, "entity": self.entity, "event_time": self.event_time,
                               "missing": self.missing, "features": [f.canonical() for f in self.features]}
        if self.request_fields or self.request_features:  # absent for views without: their hashes are unchanged
            doc["request"] = sorted(self.request_fields)
            doc["request_features"] = [f.canonical() for f in self.request_features]
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()

    def with_version(self, version: int) -> FeatureView:
        """This definition as registered version ``version``."""
        return replace(self, version=version)

    def output_schema(self, source_schema: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
        """Each feature's dtype given the source's schema (a dry run on an empty frame).

        Raises:
            FeatureViewError: a missing column (named), a type error, or a value type a model
                cannot take.
        """
        cols = dict(source_schema)
        for key in ("entity", "event_time"):
            if getattr(self, key) not in cols:
                raise FeatureViewError(
                    f"feature view {self.name!r}: {key} column {getattr(self, key)!r} is not a column of dataset "
                    f"{self.source!r}; columns: {', '.join(cols)}"
                )
        tcol = cols[self.event_time]
        if not isinstance(tcol, (pl.Datetime, pl.Date)):
            raise FeatureViewError(
                f"feature view {self.name!r}: event_time column {self.event_time!r} has type {tcol}; it must be a datetime"
            )
        empty = pl.DataFrame(schema=cols)
        out: dict[str, pl.DataType] = {}
        for f in self.features:
            where = f"feature view {self.name!r}, feature {f.name!r}"
            expr = f.compiled()
            missing = [c for c in expr.meta.root_names() if c not in cols]
            if missing:
                raise FeatureViewError(
                    f"{where}: column {missing[0]!r} is not a column of dataset {self.source!r}; columns: {', '.join(cols)}"
                )
            try:
                dtype = empty.select(expr.alias(f.name)).schema[f.name]
            except pl.exceptions.PolarsError as exc:
                raise FeatureViewError(f"{where}: {str(exc).splitlines()[0]}") from None
            out[f.name] = _output_dtype(f, dtype, where)
        if self.request_features:
            out.update(self.request_schema(out))
        return out

    def request_schema(self, feature_schema: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
        """Each request feature's dtype, given the view features' dtypes (a dry run on an empty frame).

        Raises:
            FeatureViewError: a type error or a value type a model cannot take (named).
        """
        empty = pl.DataFrame(schema={**{n: _REQUEST_DTYPES[t] for n, t in self.request_fields},
                                     **{n: feature_schema[n] for n in self.feature_names}})
        out: dict[str, pl.DataType] = {}
        for f in self.request_features:
            where = f"feature view {self.name!r}, request feature {f.name!r}"
            try:
                dtype = empty.select(f.compiled().alias(f.name)).schema[f.name]
            except pl.exceptions.PolarsError as exc:
                raise FeatureViewError(f"{where}: {str(exc).splitlines()[0]}") from None
            out[f.name] = _output_dtype(f, dtype, where)
        return out

    def request_values(self, inputs: Mapping[str, pl.Series], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
        """The request features for rows whose request fields and view features are ``inputs``
        (``request_plan(schema).values(inputs)``: see ``RequestPlan``).

        Raises:
            FeatureViewError: an input is missing (named), or the expressions fail on the values.
        """
        return self.request_plan(schema).values(inputs)

    def request_plan(self, schema: Mapping[str, pl.DataType]) -> RequestPlan:
        """The request features compiled once (the serving process keeps it per model version).

        Args:
            schema: the view's output dtypes (``output_schema``: features and request features).
        """
        types = {**{n: _REQUEST_DTYPES[t] for n, t in self.request_fields}, **{n: schema[n] for n in self.feature_names}}
        numeric = tuple(n for n in self.request_inputs if types[n] != pl.String)
        strings = tuple(n for n in self.request_inputs if types[n] == pl.String)
        read = {n: pl.col(n).cast(types[n], strict=False) for n in numeric if types[n] != pl.Float64}
        outputs = tuple(
            compile_expr(f.expr, where=f"request feature {f.name!r}", columns=read).cast(schema[f.name]).alias(f.name)
            for f in self.request_features
        )
        return RequestPlan(self.name, tuple(f.name for f in self.request_features), numeric, strings, outputs)


@dataclass(frozen=True)
class RequestPlan:
    """A view's request features, compiled: the inputs' one form, and the expressions.

    The one code path of training sets, batch scoring, ``check-skew`` and the serving process:
    numeric (and boolean) inputs are one float64 block (NaN as null), read by the expressions in
    the declared type of the request field or the view feature's type; strings stay strings. Rows
    read from a label dataset and rows decoded from a request (a float64 matrix) thus give the
    same values bit for bit; the serving codec hands its matrix columns over without a copy per
    column (``values_block``).
    """

    view: str
    names: tuple[str, ...]
    numeric: tuple[str, ...]
    strings: tuple[str, ...]
    outputs: tuple[pl.Expr, ...]

    def values(self, inputs: Mapping[str, pl.Series]) -> pl.DataFrame:
        """The request features (one column each) for rows whose inputs are ``inputs`` (equal lengths).

        Raises:
            FeatureViewError: an input is missing (named), or the expressions fail on the values.
        """
        for name in (*self.numeric, *self.strings):
            if name not in inputs:
                raise FeatureViewError(f"feature view {self.view!r}: request field {name!r} is missing; its request "
                                       f"features ({', '.join(self.names)}) are computed from it")
        n = len(next(iter(inputs.values()))) if inputs else 0
        block = np.empty((n, len(self.numeric)), dtype=np.float64)
        for j, name in enumerate(self.numeric):
            block[:, j] = inputs[name].cast(pl.Float64, strict=False).to_numpy()
        return self.values_block(block, {name: inputs[name] for name in self.strings})

    def values_block(self, block: np.ndarray, strings: Mapping[str, pl.Series]) -> pl.DataFrame:
        """``values`` from the numeric inputs as a float64 block (columns in ``numeric`` order; NaN
        or null: missing) and the string inputs as series."""
        try:
            cols = [strings[n].cast(pl.String).alias(n) for n in self.strings]
            if self.numeric:
                frame = pl.DataFrame(block, schema=list(self.numeric), orient="row", nan_to_null=True).hstack(cols)
            else:
                frame = pl.DataFrame(cols)
            return frame.select_seq(self.outputs)  # one thread: a 1-row request pays a third of select()
        except pl.exceptions.PolarsError as exc:
            raise FeatureViewError(f"feature view {self.view!r}: cannot compute its request features: "
                                   f"{str(exc).splitlines()[0]}") from None


def _check_feature(f: Feature, where: str) -> None:
    """One feature's agg, window, expression and default, on their own."""
    if f.agg is not None and f.agg not in AGGREGATIONS:
        raise FeatureViewError(f"{where}: agg {f.agg!r} is not one of {', '.join(AGGREGATIONS)}")
    if f.agg is None and f.window:
        raise FeatureViewError(f"{where}: a window needs an agg ({', '.join(AGGREGATIONS)})")
    if f.agg is not None and not f.window:
        raise FeatureViewError(f"{where}: agg {f.agg!r} needs a window, e.g. window = \"30d\"")
    if f.window:
        parse_window(f.window, where=f"{where}: window")
    if not f.expr and f.agg != "count":
        raise FeatureViewError(f"{where}: expr is required (only a count may omit it)")
    if f.expr:
        compile_expr(f.expr, where=f"{where}: expression")
    if f.default is not None and not isinstance(f.default, (bool, int, float, str)):
        raise FeatureViewError(f"{where}: default must be a number or a string, got {f.default!r}")
    if isinstance(f.default, float) and not math.isfinite(f.default):
        raise FeatureViewError(f"{where}: default must be finite")


def _output_dtype(f: Feature, dtype: pl.DataType, where: str) -> pl.DataType:
    """The dtype a feature's values have (what the training set and the online table store)."""
    if f.agg == "count":
        return pl.Int64()
    numeric = dtype.is_numeric() or dtype == pl.Boolean
    if f.agg is None:
        if numeric:
            return pl.Float64() if dtype.is_float() else (pl.Boolean() if dtype == pl.Boolean else pl.Int64())
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            return pl.String()
        raise FeatureViewError(f"{where}: values of type {dtype} cannot be a feature; use a number, boolean or string")
    if not numeric:
        raise FeatureViewError(f"{where}: agg {f.agg!r} needs numeric values, the expression gives {dtype}")
    if f.agg == "mean" or dtype.is_float():
        return pl.Float64()
    return pl.Int64()


def parse_view(doc: Mapping[str, Any], *, where: str = "feature view") -> FeatureView:
    """Build a ``FeatureView`` from plain data (a TOML document or ``FeatureView.to_dict()``).

    ``features`` is a list of tables (``[[features]]``) or a table of tables by name
    (``[features.calls_30d]``).

    Raises:
        FeatureViewError: an unknown or missing key, or a bad value (named).
    """
    known = {"name", "source", "entity", "event_time", "missing", "description", "features", "request", "request_features"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise FeatureViewError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(known))}")
    feats = _parse_features(doc.get("features"), "features", where, required=True)
    request_feats = _parse_features(doc.get("request_features"), "request_features", where, required=False)
    request = doc.get("request") or {}
    if not isinstance(request, Mapping) or not all(isinstance(t, str) for t in request.values()):
        raise FeatureViewError(f"{where}: request must be a table of field = type ([request] amount = \"Float64\")")
    for key in ("name", "source", "entity", "event_time"):
        if key not in doc:
            raise FeatureViewError(f"{where}: {key} is required")
    return FeatureView(
        name=doc["name"], source=doc["source"], entity=doc["entity"], event_time=doc["event_time"],
        features=tuple(feats), missing=doc.get("missing", "error"), description=str(doc.get("description") or ""),
        request_fields=tuple((str(k), v) for k, v in request.items()), request_features=tuple(request_feats),
    )


def _parse_features(raw: Any, key: str, where: str, *, required: bool) -> list[Feature]:
    if raw is None and not required:
        return []
    if isinstance(raw, Mapping):
        raw = [{"name": k, **(v if isinstance(v, Mapping) else {"expr": v})} for k, v in raw.items()]
    if not isinstance(raw, Sequence) or isinstance(raw, str) or (required and not raw):
        raise FeatureViewError(f"{where}: {key} must be a non-empty list of tables ([[{key}]] name = ..., expr = ...)")
    fkeys = {"name", "expr", "agg", "window", "default", "description"}
    feats = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise FeatureViewError(f"{where}: {key}[{i}] must be a table with name and expr")
        bad = sorted(set(item) - fkeys)
        if bad:
            raise FeatureViewError(f"{where}: {key}[{i}] ({item.get('name')!r}): unknown key {bad[0]!r}; keys: {', '.join(sorted(fkeys))}")
        if "name" not in item:
            raise FeatureViewError(f"{where}: {key}[{i}] has no name")
        for k in ("expr", "agg", "window", "description"):
            if item.get(k) is not None and not isinstance(item[k], str):
                raise FeatureViewError(f"{where}: feature {item['name']!r}: {k} must be a string")
        feats.append(Feature(
            name=item["name"], expr=str(item.get("expr") or ""), agg=item.get("agg"), window=item.get("window"),
            default=item.get("default"), description=str(item.get("description") or ""),
        ))
    return feats


def load_view(path: str | Path) -> FeatureView:
    """Read a feature view definition from a TOML file.

    Raises:
        FeatureViewError: unreadable file, bad TOML, or a bad definition (each named).
    """
    p = Path(path)
    doc = read_toml(p, what="feature view file", error=FeatureViewError)
    return parse_view(doc, where=f"feature view file {p.name}")


def load_views(path: str | Path) -> list[FeatureView]:
    """Read feature view definitions from a TOML file (one view) or a Python file (every view it defines).

    A Python file is run (``runpy``, as ``python FILE`` would run it: it is the user's own
    code, like a ``conftest.py``) and every ``FeatureView`` among its top-level names, or inside a
    top-level list or tuple, is taken, in the order defined::

        from core.features import Feature, FeatureView

        usage = FeatureView(
            name="churn_usage", source="churn_usage", entity="customer_id", event_time="event_at",
            features=(Feature("calls_30d", "pl.col('calls')", agg="sum", window="30d"),),
        )

    Expressions stay text, as in TOML: they are parsed from the allow-list, hashed and stored,
    so every process rebuilds the same expression.

    Raises:
        FeatureViewError: unreadable file, bad TOML, a Python file that fails or defines no view,
            two views of one name, or a bad definition (each named, one line).
    """
    p = Path(path)
    if p.suffix != ".py":
        return [load_view(p)]
    import runpy

    if not p.is_file():
        raise FeatureViewError(f"cannot read feature view file {p}: no such file")
    try:
        names = runpy.run_path(str(p), run_name="lakeops_feature_views")
    except FeatureViewError as exc:
        raise FeatureViewError(f"feature view file {p.name}: {exc}") from None
    except SyntaxError as exc:
        raise FeatureViewError(f"feature view file {p.name} is not valid Python: {exc.msg} (line {exc.lineno})") from None
    except Exception as exc:  # noqa: BLE001 - the user's file: any failure is named, in one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FeatureViewError(f"feature view file {p.name} failed: {type(exc).__name__}: {first}") from None
    found: list[FeatureView] = []
    for value in names.values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in items if isinstance(v, FeatureView) and all(v is not f for f in found)]
    if not found:
        raise FeatureViewError(f"feature view file {p.name} defines no FeatureView (from core.features import FeatureView)")
    seen: set[str] = set()
    for v in found:
        if v.name in seen:
            raise FeatureViewError(f"feature view file {p.name} defines view {v.name!r} twice")
        seen.add(v.name)
    return found


def window_text(us: int) -> str:
    """A span in microseconds for people (``30 days, 0:00:00``)."""
    return str(timedelta(microseconds=us))
