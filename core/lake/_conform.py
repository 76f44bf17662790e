"""Rows in, a table of the stored schema out: accept tables, frames and row dicts, and check and
cast them to a table's schema (naming the column and the problem) before anything is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from core.errors import SchemaMismatchError

__all__ = ["conform"]


def _arrow(data: Any) -> pa.Table:
    """Accept a pyarrow Table/RecordBatch, a polars or pandas frame, or a list of row dicts."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pl.DataFrame):
        return data.to_arrow()
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return _from_rows(list(data))
    if hasattr(data, "__arrow_c_stream__") or type(data).__module__.startswith("pandas"):
        return pa.table(data)
    raise SchemaMismatchError(f"cannot append a {type(data).__name__}: pass a table, frame or rows")


def _from_rows(rows: list[Any]) -> pa.Table:
    """Build a table from row dicts over the union of their keys (a key missing in a row is null).

    ``pa.Table.from_pylist`` takes its columns from the first row only and would silently drop a
    key that appears in later rows.
    """
    if rows and not all(isinstance(r, Mapping) for r in rows):
        raise SchemaMismatchError("rows must be mappings of column name to value")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for k in keys:
        values = [r.get(k) for r in rows]
        try:
            columns[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise SchemaMismatchError(f"column {k!r}: values of mixed or unsupported types ({exc})") from None
    return pa.table(columns) if columns else pa.table({})


def conform(table: pa.Table, schema: pa.Schema, *, table_name: str = "table") -> pa.Table:
    """Check and cast ``table`` to ``schema``, naming the column and problem on failure.

    Missing nullable columns are filled with nulls; extra columns, impossible or lossy casts and
    nulls in NOT NULL columns are refused. Naive timestamps are taken as UTC.

    Raises:
        SchemaMismatchError: with the table, column and problem.
    """
    names = set(table.column_names)
    extra = [c for c in table.column_names if schema.get_field_index(c) < 0]
    if extra:
        raise SchemaMismatchError(
            f"{table_name}: unknown column(s) {', '.join(map(repr, extra))}; "
            f"the table has {', '.join(schema.names)}"
        )
    columns = []
    for f in schema:
        if f.name not in names:
            if not f.nullable:
                raise SchemaMismatchError(f"{table_name}: column {f.name!r} is required (NOT NULL)")
            columns.append(pa.nulls(table.num_rows, type=f.type))
            continue
        col = table.column(f.name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if not col.type.equals(f.type):
            if pa.types.is_timestamp(col.type) and pa.types.is_timestamp(f.type) and col.type.tz is None:
                col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))
            if pa.types.is_null(col.type):
                col = pa.nulls(len(col), type=f.type)
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    f"{table_name}: column {f.name!r} has type {col.type}, which cannot be stored "
                    f"as {f.type} without loss ({str(exc).splitlines()[0]})"
                ) from None
        if not f.nullable and col.null_count:
            raise SchemaMismatchError(
                f"{table_name}: column {f.name!r} is NOT NULL but {col.null_count} row(s) are null"
            )
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)
