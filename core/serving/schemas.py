"""Request bodies derived from a model signature: decoding, validation and column-wise encoding.

A ``Codec`` is built once per served model version. It holds a msgspec decoder for exactly that
signature (a Struct per row with one typed field per feature, unknown fields forbidden), so type
errors, missing and extra features are found in C while decoding; the rest (unknown categorical
levels, non-finite numbers, row limits, ragged columns) is checked column by column. Encoding
follows ``core.training``'s contract exactly: numeric -> float64, categorical -> index in
``levels``, null (and, under the ``missing`` policy, an unknown level) -> NaN.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from typing import Any, Literal

import msgspec
import numpy as np
import pyarrow as pa

from core.catalog import FEATURES_COLUMN, PASSTHROUGH_COLUMN, TS, prediction_common_fields
from core.errors import DataValidationError
from core.serving.problems import ProblemError
from core.signature import Feature, PassThrough, Signature, as_signature

__all__ = ["Codec", "Decoded", "json_schema", "passthrough_type", "prediction_schema"]

_PATH = re.compile(r"at `\$(?:\[(?P<row>\d+)\](?:\.(?P<f1>[^`\[]+))?|\.columns(?:\.(?P<f2>[^`\[]+))?(?:\[(?P<row2>\d+)\])?)`")
_INF = (float("inf"), float("-inf"))
_FIELD = re.compile(r"field `(?P<field>[^`]+)`")
_NAN = float("nan")
_POS_INF = float("inf")
_NEG_INF = float("-inf")
_SMALL = 8  # rows up to which plain list scans beat a numpy call
_NUMBER, _CAST, _CATEGORY, _TENSOR = 0, 1, 2, 3  # how an Arrow column becomes a feature (Codec._arrow_plan)
_astuple = msgspec.structs.astuple


@dataclass(frozen=True)
class Decoded:
    """A validated request: the encoded feature matrix (rows x features, float64)."""

    X: np.ndarray
    rows: int
    unknown: dict[str, list[tuple[int, str]]] | None = None  # feature -> (row, unseen level)
    passthrough: dict[str, list[Any]] | None = None  # field -> values as logged (None: none sent)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_PT_PY: dict[str, Any] = {"string": str, "integer": int, "number": float, "datetime": datetime, "date": date}


def _micros(v: datetime | None) -> int | None:
    """A datetime as microseconds since the epoch (a naive one is taken as UTC)."""
    if v is None:
        return None
    return ((v if v.tzinfo else v.replace(tzinfo=UTC)) - _EPOCH) // _US


def _days(v: date | None) -> int | None:
    return None if v is None else (v - date(1970, 1, 1)).days


def _null_as_nan(lookup: Mapping[str, float]) -> Callable[[str | None], float | None]:
    """A level -> code lookup where null is NaN too (so None only means "unknown level")."""
    table: dict[str | None, float] = dict(lookup.items())
    table[None] = _NAN
    return table.get


def _numeric_type(feature: Feature) -> Any:
    return (bool | None) if feature.dtype == "Boolean" else (float | None)


class Codec:
    """Decoder, validator and encoder for one model signature.

    Args:
        signature: the model's signature dict (``core.training`` format).
        unknown_category: ``"error"`` or ``"missing"`` (see ``ServingConfig``).
        max_rows: the most rows one request may carry.
    """

    def __init__(
        self, signature: Signature | Mapping[str, Any], *, unknown_category: Literal["error", "missing"], max_rows: int
    ) -> None:
        signature = as_signature(signature)
        self.signature = signature
        self.features: list[Feature] = list(signature.features)
        self.names = signature.names
        self.categorical = [f.name for f in self.features if f.categorical]
        self.unknown_category = unknown_category
        self.max_rows = max_rows
        self._lookup: dict[str, dict[str, float]] = {
            f.name: {level: float(i) for i, level in enumerate(f.levels)}
            for f in self.features
            if f.categorical
        }
        kinds = [f.categorical for f in self.features]
        # the fast path's level -> code lookups: null -> NaN too, so None only means "unknown"
        self._cat_get = [
            (j, _null_as_nan(self._lookup[f.name])) for j, f in enumerate(self.features) if kinds[j]
        ]
        self._width = len(self.features)
        self._dictionaries: dict[str, tuple[Any, list[Any], np.ndarray, np.ndarray | None]] = {}  # Arrow dictionaries seen
        self._arrow_last: tuple[bytes | None, pa.Schema, Any] | None = None  # the last Arrow schema's plan (_arrow_plan)
        self.levels = {f.name: list(f.levels) for f in self.features if f.categorical}
        # pre-encoded for the prediction log's records (msgpack copies Raw bytes as they are)
        self.names_raw = msgspec.Raw(msgspec.msgpack.encode(self.names))
        self.levels_raw = msgspec.Raw(msgspec.msgpack.encode(self.levels))
        self._cat_idx = np.array([j for j, c in enumerate(kinds) if c], dtype=np.intp)
        self._num_idx = np.array([j for j, c in enumerate(kinds) if not c], dtype=np.intp)
        # Pass-through fields: optional, after the features (so a row's first values are the matrix's)
        self.passthrough: list[PassThrough] = list(signature.passthrough)
        self._pt: list[tuple[str, str]] = [(p.name, p.type) for p in self.passthrough]
        # Struct attributes f0, f1 ... named after the features and pass-through fields in JSON: a
        # column name need not be a Python identifier ("monthly-charges", "class").
        every = self.names + [name for name, _ in self._pt]
        self._attr = {name: f"f{j}" for j, name in enumerate(every)}
        plain = all(map(_encodable, every))
        rename = {a: name for name, a in self._attr.items()} if plain else None
        # msgspec refuses a quote, a backslash or a control character in an encoded field name:
        # such a signature's bodies are decoded generically and their keys renamed (``_convert``)
        self._back = None if plain else {a: name for name, a in self._attr.items()}
        row_fields: list[Any] = [
            (self._attr[f.name], (str | None) if f.categorical else _numeric_type(f)) for f in self.features
        ]
        col_fields: list[Any] = [(a, list[tp]) for a, tp in row_fields]  # type: ignore[valid-type]
        for name, kind in self._pt:
            row_fields.append((self._attr[name], _PT_PY[kind] | None, None))
            col_fields.append((self._attr[name], list[_PT_PY[kind] | None] | None, None))  # type: ignore[valid-type]
        self._Row = msgspec.defstruct("Row", row_fields, forbid_unknown_fields=True, gc=False, rename=rename)
        self._Cols = msgspec.defstruct("Columns", col_fields, forbid_unknown_fields=True, rename=rename)
        self._Body = msgspec.defstruct("ColumnarBody", [("columns", self._Cols)], forbid_unknown_fields=True)
        self._type = list[self._Row] | self._Body  # type: ignore[name-defined]
        self._decoder = msgspec.json.Decoder(self._type)

    def decode(self, body: bytes) -> Decoded:
        """Decode and validate a request body; return the encoded matrix.

        Raises:
            ProblemError: the body is not JSON (400).
            DataValidationError: the body does not fit the signature (422), with an ``errors``
                report naming the row and field.
        """
        try:
            obj = self._decoder.decode(body) if self._back is None else self._convert(body)
        except msgspec.ValidationError as exc:
            raise _validation_problem(str(exc), self._back) from None
        except msgspec.DecodeError as exc:
            raise ProblemError(400, "not-json", f"the request body is not valid JSON: {exc}") from None
        pt: dict[str, list[Any]] | None = None
        if isinstance(obj, list):
            n = len(obj)
            self._check_rows(n)
            flat = list(chain.from_iterable(map(_astuple, obj)))
            if self._pt:
                pt = self._take_passthrough(flat, n)
            X = self._fast_rows(flat, n)
            if X is not None:
                return Decoded(X, n, None, pt)
            columns = self._raw_columns(obj)  # as sent (``flat`` has codes now)
        else:
            columns = {name: getattr(obj.columns, self._attr[name]) for name in self.names}
            if self._pt:
                pt = self._columns_passthrough(obj.columns)
            lengths = {name: len(v) for name, v in columns.items()}
            n = Counter(lengths.values()).most_common(1)[0][0]  # the odd ones out are ragged
            ragged = [name for name, k in lengths.items() if k != n]
            if ragged:
                raise DataValidationError(
                    f"columns must all have {n} values; {', '.join(ragged)} differ",
                    report=[{"row": None, "field": c, "message": f"has {lengths[c]} values, expected {n}"} for c in ragged],
                )
            self._check_rows(n)
            if pt is not None:
                bad = [k for k, v in pt.items() if len(v) != n]
                if bad:
                    raise DataValidationError(
                        f"columns must all have {n} values; pass-through {', '.join(bad)} differ",
                        report=[{"row": None, "field": c, "message": f"has {len(pt[c])} values, expected {n}"} for c in bad],
                    )
            X = self._fast_columns(columns, n)
            if X is not None:
                return Decoded(X, n, None, pt)
        unknown: dict[str, list[tuple[int, str]]] = {}
        return Decoded(self._encode(columns, n, unknown), n, unknown or None, pt)

    def _convert(self, body: bytes) -> Any:
        """Decode a body whose field names msgspec cannot match itself: generically, then keys
        renamed to the struct's attributes (a key that is one already is marked unknown)."""
        raw = msgspec.json.decode(body)
        attr, back = self._attr, self._back or {}

        def renamed(obj: Any) -> Any:
            if not isinstance(obj, dict):
                return obj
            return {attr.get(k) or (f"~{k}" if k in back else k): v for k, v in obj.items()}

        if isinstance(raw, list):
            raw = [renamed(r) for r in raw]
        elif isinstance(raw, dict) and isinstance(raw.get("columns"), dict):
            raw = {**raw, "columns": renamed(raw["columns"])}
        return msgspec.convert(raw, self._type)

    def decode_arrow(self, body: bytes) -> Decoded:
        """Decode and validate an Arrow IPC stream body (``application/vnd.apache.arrow.stream``).

        One record batch or several, one column per feature: numbers (any integer, float or
        boolean type), categorical features as strings or, cheapest, dictionary-encoded strings
        (polars ``Categorical`` columns arrive so); pass-through fields optional. The same
        problems as JSON: a missing or unknown column, a wrong type, an unknown level (under
        ``unknown_category = "error"``) or a non-finite number is a 422 naming the field (and row).

        Raises:
            ProblemError: not an Arrow IPC stream (400), too many rows (413).
            DataValidationError: the table does not fit the signature (422).
        """
        import pyarrow.ipc as ipc

        try:
            batches = list(ipc.open_stream(body))
            table: Any = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError, IndexError) as exc:
            raise ProblemError(400, "not-arrow", f"the body is not an Arrow IPC stream: {exc}") from None
        n = table.num_rows
        self._check_rows(n)
        features, pts, block = self._arrow_plan(table.schema, _schema_message(body))
        X = np.empty((n, self._width), dtype=np.float64)
        unknown: dict[str, list[tuple[int, str]]] = {}
        if block is not None and n and isinstance(table, pa.RecordBatch):
            # the plain numeric columns in one call: Arrow casts them to a common type into a
            # row-major tensor, nulls as NaN (~2.5 us a column less than one by one)
            positions, indices, features = block
            X[:, positions] = np.asarray(table.select(indices).to_tensor(null_to_nan=True, row_major=True))
        for j, i, how in features:
            arr = _one_array(table.column(i))
            if how == _NUMBER or how == _TENSOR:
                # numpy converts to float64 as it fills the column; nulls become NaN (missing)
                X[:, j] = arr.to_numpy() if not arr.null_count else arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            elif how == _CAST:
                X[:, j] = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            else:
                X[:, j] = self._arrow_codes(self.names[j], arr, unknown)
        if np.isinf(X).any():
            report = [{"row": int(i), "field": self.names[k], "message": "value is not finite"}
                      for i, k in np.argwhere(np.isinf(X))[:20]]
            raise DataValidationError(f"row {report[0]['row']}, {report[0]['field']}: value is not finite", report=report)
        logged = {name: _arrow_logged(name, _one_array(table.column(i)), kind) for name, i, kind in pts}
        pt = {k: v for k, v in logged.items() if v.count(None) != n} or None
        return Decoded(X, n, unknown or None, pt)

    def _arrow_plan(self, schema: pa.Schema, key: bytes | None = None) -> tuple[
            list[tuple[int, int, int]], list[tuple[str, int, str]], tuple[Any, list[int], list[tuple[int, int, int]]] | None]:
        """Where each feature is in an Arrow body of ``schema`` and how to read it, checked once per schema.

        A client sends the same schema with every request: the names and types are checked (and
        the column positions found) when it changes, not per request (~40 us of a small body).
        ``key``, the body's schema message as sent, finds the last plan without comparing
        schemas (``Schema.equals`` costs ~6 us on a 16-column schema with field metadata).

        Returns:
            (feature, column, how) by feature; (pass-through field, column, kind); and, when
            two or more features are plain numbers, (their feature positions, their columns,
            the other features) for one ``to_tensor`` call and the rest column by column.

        Raises:
            DataValidationError: an unknown or missing column, a feature of the wrong type (422).
        """
        last = self._arrow_last
        if last is not None and ((key is not None and key == last[0]) or last[1].equals(schema)):
            return last[2]
        names = schema.names
        known = set(self.names) | {p for p, _ in self._pt}
        errors = [{"row": None, "field": c, "message": "unknown field: neither a feature nor a pass-through field"}
                  for c in names if c not in known]
        errors += [{"row": None, "field": f, "message": f"missing feature {f!r}"} for f in self.names if f not in names]
        if errors:
            raise DataValidationError(f"{errors[0]['field']}: {errors[0]['message']}", report=errors[:20])
        at = {c: i for i, c in enumerate(names)}
        features = []
        for j, f in enumerate(self.features):
            name = f.name
            t = schema.field(at[name]).type
            if f.categorical:
                if not (pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
                    raise DataValidationError(f"{name}: a categorical feature takes strings, got Arrow type {t}",
                                              report=[{"row": None, "field": name, "message": f"expected strings, got {t}"}])
                features.append((j, at[name], _CATEGORY))
            elif pa.types.is_integer(t) or pa.types.is_float32(t) or pa.types.is_float64(t):
                features.append((j, at[name], _TENSOR))
            elif pa.types.is_floating(t):
                features.append((j, at[name], _NUMBER))
            elif pa.types.is_boolean(t) or pa.types.is_null(t):
                features.append((j, at[name], _CAST))
            else:
                raise DataValidationError(f"{name}: a numeric feature takes numbers, got Arrow type {t}",
                                          report=[{"row": None, "field": name, "message": f"expected a number, got {t}"}])
        tensor = [(j, i) for j, i, how in features if how == _TENSOR]
        block = None
        if len(tensor) >= 2:
            js = [j for j, _ in tensor]
            contiguous = js == list(range(js[0], js[0] + len(js)))
            block = (slice(js[0], js[0] + len(js)) if contiguous else np.array(js), [i for _, i in tensor],
                     [f for f in features if f[2] != _TENSOR])
        plan = (features, [(name, at[name], kind) for name, kind in self._pt if name in at], block)
        self._arrow_last = (key, schema, plan)
        return plan

    def _arrow_codes(self, name: str, arr: pa.Array, unknown: dict[str, list[tuple[int, str]]]) -> np.ndarray:
        """A categorical Arrow column as level codes (NaN: null, or an unseen level scored as missing)."""
        lookup = self._lookup[name]
        if pa.types.is_dictionary(arr.type):
            cached = self._dictionaries.get(name)
            if cached is not None and cached[0].equals(arr.dictionary):  # a client sends the same levels each time
                _, values, mapped, new = cached
            else:
                values = arr.dictionary.to_pylist()
                if not all(v is None or isinstance(v, str) for v in values):
                    raise DataValidationError(f"{name}: a categorical feature takes strings",
                                              report=[{"row": None, "field": name, "message": "expected strings"}])
                mapped = np.array([lookup.get(v, _NAN) if v is not None else _NAN for v in values] + [_NAN])
                # a dictionary may hold levels no row uses (polars sends its whole category set): a
                # boolean mask by dictionary index finds the rows of unseen levels in one gather
                # (np.isin cost ~70 us per column per request here)
                unseen = np.array([v is not None and v not in lookup for v in values] + [False])
                new = unseen if unseen.any() else None
                self._dictionaries[name] = (arr.dictionary, values, mapped, new)
            indices = arr.indices
            if indices.null_count:
                idx = np.where(indices.is_null().to_numpy(zero_copy_only=False), len(values),
                               indices.to_numpy(zero_copy_only=False))
                idx = np.nan_to_num(idx, nan=len(values)).astype(np.int64)
            else:
                idx = indices.to_numpy()
            codes = mapped[idx]
            if new is not None:
                hit = np.flatnonzero(new[idx])
                if hit.size:
                    unknown[name] = list(zip(hit.tolist(), map(values.__getitem__, idx[hit].tolist()), strict=True))
        elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            raw = arr.to_pylist()
            codes = np.array(list(map(_null_as_nan(lookup), raw)), dtype=object)
            miss = [i for i, c in enumerate(codes) if c is None]
            if miss:
                unknown[name] = [(i, raw[i]) for i in miss]
                codes[miss] = _NAN
            codes = codes.astype(np.float64)
        else:
            raise DataValidationError(f"{name}: a categorical feature takes strings, got Arrow type {arr.type}",
                                      report=[{"row": None, "field": name, "message": f"expected strings, got {arr.type}"}])
        if name in unknown and self.unknown_category == "error":
            levels = ", ".join(lookup)
            report = [{"row": i, "field": name, "message": f"unknown level {v!r}; known: {levels}"} for i, v in unknown[name][:20]]
            raise DataValidationError(f"row {report[0]['row']}, {name}: {report[0]['message']}", report=report)
        return codes

    def _raw_columns(self, rows: list[Any]) -> dict[str, list[Any]]:
        """The feature columns of decoded rows, as sent."""
        cols = list(zip(*[_astuple(r)[: self._width] for r in rows], strict=True))
        return {name: list(col) for name, col in zip(self.names, cols, strict=True)}

    def _take_passthrough(self, flat: list[Any], n: int) -> dict[str, list[Any]] | None:
        """Cut the pass-through values out of a row-major ``flat`` list (left: the features only)."""
        width, total = self._width, self._width + len(self._pt)
        out: dict[str, list[Any]] = {}
        for k, (name, kind) in enumerate(self._pt):
            values = flat[width + k :: total]
            if values.count(None) != n:
                out[name] = _as_logged(values, kind)
        for k in range(len(self._pt) - 1, -1, -1):
            del flat[width + k :: total]
        return out or None

    def _columns_passthrough(self, cols: Any) -> dict[str, list[Any]] | None:
        out = {}
        for name, kind in self._pt:
            values = getattr(cols, self._attr[name])
            if values is not None and values.count(None) != len(values):
                out[name] = _as_logged(values, kind)
        return out or None

    def _fast_rows(self, flat: list[Any], n: int) -> np.ndarray | None:
        """The matrix of clean rows in a few C-level passes, or None when a value needs a look.

        ``flat`` is every row's feature values, row-major; it is changed in place.

        All values go into one flat list (row-major), each categorical slice is mapped to its
        codes with ``map(dict.get)``, and ``array('d')`` converts the lot; it refuses a None,
        which is a null number or an unknown level: those requests take ``_encode``, which
        finds and reports them. Infinite numbers are refused there too.
        """
        width = self._width
        for j, get in self._cat_get:
            flat[j::width] = map(get, flat[j::width])
        try:
            X = np.frombuffer(array("d", flat), dtype=np.float64).reshape(n, width)
        except TypeError:
            return None
        if n <= _SMALL:  # a few list scans cost less than numpy's per-call overhead
            return None if _POS_INF in flat or _NEG_INF in flat else X
        return None if np.isinf(X).any() else X

    def _fast_columns(self, columns: dict[str, list[Any]], n: int) -> np.ndarray | None:
        """``_fast_rows`` for a columnar body (column-major flat list, one transpose)."""
        flat: list[Any] = []
        for name in self.names:
            flat += columns[name]
        width = self._width
        for j, get in self._cat_get:
            flat[j * n : (j + 1) * n] = map(get, flat[j * n : (j + 1) * n])
        try:
            XT = np.frombuffer(array("d", flat), dtype=np.float64).reshape(width, n)
        except TypeError:
            return None
        return None if np.isinf(XT).any() else np.ascontiguousarray(XT.T)

    def _check_rows(self, n: int) -> None:
        if n == 0:
            raise DataValidationError(
                f"the request has no rows; send 1 to {self.max_rows:,} rows",
                report=[{"row": None, "field": None, "message": "empty list of rows"}],
            )
        if n > self.max_rows:
            raise ProblemError(
                413, "too-many-rows", f"the request has {n:,} rows; the limit is {self.max_rows:,} per request"
            )

    def _encode(
        self, columns: dict[str, list[Any]], n: int, unknown_out: dict[str, list[tuple[int, str]]]
    ) -> np.ndarray:
        # One numpy conversion for the whole matrix: per-feature numpy calls cost more than the
        # work itself for small requests. Categorical levels go through ``map(dict.get)`` (C
        # speed); null and unknown both come out as None (-> NaN), and unknown levels are found
        # by comparing None counts, so the per-value Python work is only done when there are any.
        if n == 1:
            return self._encode_one(columns, unknown_out)
        cols: list[list[Any]] = []
        errors: list[dict[str, Any]] = []
        for f in self.features:
            name = f.name
            values = columns[name]
            if f.categorical:
                lookup = self._lookup[name]
                mapped = list(map(lookup.get, values))
                if None in mapped and mapped.count(None) != values.count(None):  # unknown levels
                    bad = [i for i, v in enumerate(values) if v is not None and v not in lookup]
                    unknown_out[name] = [(i, values[i]) for i in bad]
                    if self.unknown_category == "error":
                        levels = ", ".join(lookup)
                        errors += [
                            {"row": i, "field": name, "message": f"unknown level {values[i]!r}; known: {levels}"}
                            for i in bad[:20]
                        ]
                cols.append(mapped)
            else:
                cols.append(values)
        X = np.array(cols, dtype=np.float64)  # features x rows; None -> NaN (missing)
        if self._num_idx.size and not errors:
            inf = np.isinf(X)
            if inf.any():
                for j, i in np.argwhere(inf)[:20]:
                    errors.append({"row": int(i), "field": self.names[j], "message": "value is not finite"})
        if errors:
            errors.sort(key=lambda e: e["row"])
            first = errors[0]
            raise DataValidationError(
                f"{len(errors)} invalid value(s); first: row {first['row']}, {first['field']}: {first['message']}",
                report=errors[:20],
            )
        return np.ascontiguousarray(X.T)

    def _encode_one(self, columns: dict[str, list[Any]], unknown_out: dict[str, list[tuple[int, str]]]) -> np.ndarray:
        """The one-row case in plain Python: a handful of numpy calls would cost more."""
        nan = float("nan")
        row: list[Any] = []
        errors: list[dict[str, Any]] = []
        for f in self.features:
            name = f.name
            v = columns[name][0]
            if v is None:
                row.append(nan)
            elif f.categorical:
                code = self._lookup[name].get(v)
                if code is None:
                    unknown_out[name] = [(0, v)]
                    if self.unknown_category == "error":
                        levels = ", ".join(self._lookup[name])
                        errors.append({"row": 0, "field": name, "message": f"unknown level {v!r}; known: {levels}"})
                    code = nan
                row.append(code)
            else:
                if v in _INF:
                    errors.append({"row": 0, "field": name, "message": "value is not finite"})
                row.append(v)
        if errors:
            raise DataValidationError(
                f"{len(errors)} invalid value(s); first: row 0, {errors[0]['field']}: {errors[0]['message']}",
                report=errors,
            )
        return np.array([row], dtype=np.float64)


def _schema_message(body: bytes) -> bytes | None:
    """The schema message at the start of an Arrow IPC stream, as sent (a cache key), or None.

    A stream opens with its schema: a continuation marker (0xFFFFFFFF), the metadata's length
    (int32, little-endian), then that many bytes of flatbuffer; the same bytes are the same schema.
    """
    if len(body) < 8 or body[:4] != b"\xff\xff\xff\xff":
        return None
    return body[: 8 + int.from_bytes(body[4:8], "little")]


def _one_array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.Array):  # a record batch's column
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _arrow_logged(name: str, arr: pa.Array, kind: str) -> list[Any]:
    """A pass-through Arrow column as the WAL logs it (checked against its declared type)."""
    t = arr.type
    try:
        if kind == "datetime":
            if not pa.types.is_timestamp(t):
                raise TypeError(t)
            if t.tz is None:
                arr = arr.cast(pa.timestamp(t.unit, tz="UTC"))
            return arr.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        if kind == "date":
            if not pa.types.is_date(t):
                raise TypeError(t)
            return arr.cast(pa.date32()).cast(pa.int32()).to_pylist()
        if kind == "string":
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)):
                raise TypeError(t)
            return arr.cast(pa.string()).to_pylist()
        if kind == "integer":
            if not pa.types.is_integer(t):
                raise TypeError(t)
            return arr.to_pylist()
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise TypeError(t)
        return arr.cast(pa.float64()).to_pylist()
    except (TypeError, pa.ArrowInvalid):
        raise DataValidationError(f"{name}: a pass-through field of type {kind}, got Arrow type {t}",
                                  report=[{"row": None, "field": name, "message": f"expected {kind}, got {t}"}]) from None


def _as_logged(values: list[Any], kind: str) -> list[Any]:
    """Pass-through values as the WAL logs them (times as microseconds, dates as days)."""
    if kind == "datetime":
        return [_micros(v) for v in values]
    if kind == "date":
        return [_days(v) for v in values]
    return values


def _encodable(name: str) -> bool:
    """Whether msgspec takes ``name`` as a field's name in JSON (no quote, backslash or control character)."""
    return not any(c in '"\\' or c < " " for c in name)


def _validation_problem(message: str, back: Mapping[str, str] | None = None) -> DataValidationError:
    """Turn a msgspec validation message into a DataValidationError naming row and field.

    ``back``: struct attribute -> field name, when the message names attributes (``Codec._convert``).
    """
    m = _PATH.search(message)
    row: int | None = None
    field: str | None = None
    if m:
        r = m.group("row") or m.group("row2")
        row = int(r) if r is not None else None
        field = m.group("f1") or m.group("f2")
    fm = _FIELD.search(message)
    if fm and ("missing required field" in message or "unknown field" in message):
        field = fm.group("field")
    if back is not None and field is not None:
        field = back.get(field) or (field[1:] if field.startswith("~") else field)
    text = message.split(" - at ")[0]
    if "missing required field" in message:
        text = f"missing feature {field!r}"
    elif "unknown field" in message:
        text = f"unknown field {field!r}: neither a feature nor a pass-through field of the model's signature"
    where = (f"row {row}, " if row is not None else "") + (f"{field}: " if field else "")
    return DataValidationError(f"{where}{text}", report=[{"row": row, "field": field, "message": text}])


_PT_JSON: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "integer": {"type": ["integer", "null"]},
    "number": {"type": ["number", "null"]},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
    "date": {"type": ["string", "null"], "format": "date"},
}


def json_schema(signature: Signature | Mapping[str, Any], max_rows: int) -> dict[str, Any]:
    """Return the JSON schema of a predict body for ``signature`` (rows or columns form).

    A model with feature views takes the features they provide from the service's online values:
    its body carries the remaining features plus each view's entity key, required when the view's
    ``missing`` policy is ``"error"`` (``core.serving.online``).
    """
    signature = as_signature(signature)
    keys = list(dict.fromkeys(v.entity for v in signature.feature_views if v.missing == "error"))  # "default": optional
    filled = signature.view_features  # the views provide these: the body leaves them out
    props: dict[str, Any] = {}
    for f in signature.features:
        if f.name in filled:
            continue
        if f.categorical:
            props[f.name] = {"type": ["string", "null"], "enum": [*f.levels, None]}
        elif f.dtype == "Boolean":
            props[f.name] = {"type": ["boolean", "null"]}
        else:
            props[f.name] = {"type": ["number", "null"]}
    names = [*props, *keys]
    for pt in signature.passthrough:  # optional: logged, never scored
        props[pt.name] = {**_PT_JSON[pt.type], "description": f"pass-through ({pt.role}): logged, not scored"}
    row = {"type": "object", "properties": props, "required": names, "additionalProperties": False}
    columns = {
        "type": "object",
        "properties": {
            "columns": {
                "type": "object",
                "properties": {k: {"type": "array", "items": v, "minItems": 1, "maxItems": max_rows} for k, v in props.items()},
                "required": names,
                "additionalProperties": False,
            }
        },
        "required": ["columns"],
        "additionalProperties": False,
    }
    return {"oneOf": [{"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}, columns]}


_PT_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "number": pa.float64(), "integer": pa.int64(), "datetime": TS, "date": pa.date32(),
}


def passthrough_type(kind: str) -> pa.DataType:
    """The Arrow type a pass-through field of ``kind`` is logged as."""
    return _PT_TYPES[kind]


def prediction_schema(
    features: Sequence[Feature], passthrough: Sequence[PassThrough] = ()
) -> pa.Schema:
    """The ``predictions/<model>`` schema: the common columns, the ``features`` struct (one field
    per feature: float64, or string for a categorical one) and, when the model declares any,
    the ``passthrough`` struct."""
    feats = pa.struct(
        [pa.field(f.name, pa.string() if f.categorical else pa.float64()) for f in features]
    )
    fields = [*prediction_common_fields(), pa.field(FEATURES_COLUMN, feats)]
    if passthrough:
        fields.append(
            pa.field(PASSTHROUGH_COLUMN, pa.struct([pa.field(p.name, passthrough_type(p.type)) for p in passthrough]))
        )
    return pa.schema(fields)
