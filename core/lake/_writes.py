"""Writes: appends checked against the schema, one commit each, retried with jittered backoff
on a lost commit race; overwrites of non-catalog tables."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from deltalake import ColumnProperties, CommitProperties, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from core.catalog import spec_for
from core.errors import CommitConflictError, LakeError, LakeUnavailableError
from core.lake._common import (
    _APPEND_ATTEMPTS,
    _APPEND_COMMIT_RETRIES,
    _BACKOFF_BASE_S,
    _BACKOFF_CAP_S,
    _MAX_COMMIT_RETRIES,
    _io_error,
)
from core.lake._conform import _arrow, conform
from core.lake._tables import LakeTables

__all__ = ["LakeWrites", "TableParts"]

_STREAM_ROWS = 65_536  # rows per record batch handed to delta-rs


class TableParts:
    """The rows of one append, built a part at a time while delta-rs writes them.

    A prediction log flush holds hundreds of thousands of rows; as one Arrow table they (and
    delta-rs's per-partition copies of them) are fresh memory every flush, paid for in page
    faults. Parts of ~64k rows are built, written and freed in turn, so memory stays bounded
    and is reused. Iterable more than once (``rest`` makes a fresh iterator), so a write that
    loses its commit race can be retried.

    Args:
        first: the first part (its schema is the append's schema).
        rest: returns an iterator over the other parts, each with ``first``'s schema.
        num_rows: the rows in all parts.
    """

    def __init__(self, first: pa.Table, rest: Callable[[], Iterator[pa.Table]], num_rows: int) -> None:
        self.first = first
        self.rest = rest
        self.num_rows = num_rows

    @property
    def schema(self) -> pa.Schema:
        return self.first.schema

    def __iter__(self) -> Iterator[pa.Table]:
        yield self.first
        yield from self.rest()

    def read_all(self) -> pa.Table:
        """All parts as one table (for the rare paths that need the rows at once)."""
        return pa.concat_tables(list(self))


def _stream(table: pa.Table) -> pa.Table | pa.RecordBatchReader:
    """A large table as a stream of record batches of at most ``_STREAM_ROWS`` rows.

    delta-rs splits each batch it is given by partition value into fresh arrays: one batch of a
    prediction log flush (~700k rows) cost ~2x the write's own CPU in page faults (system time);
    64k-row batches reuse the same memory (bench/predlog_write.py).
    """
    if table.num_rows <= _STREAM_ROWS:
        return table
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=_STREAM_ROWS))


def _stream_parts(first: pa.Table, parts: TableParts, schema: pa.Schema, name: str) -> pa.RecordBatchReader:
    """``parts`` (``first`` already conformed) as one record batch stream, each later part
    conformed to ``schema`` as delta-rs asks for it."""

    def batches() -> Iterator[pa.RecordBatch]:
        yield from first.to_batches(max_chunksize=_STREAM_ROWS)
        it = iter(parts)
        next(it)  # the first part, conformed above
        for part in it:
            yield from conform(part, schema, table_name=name).to_batches(max_chunksize=_STREAM_ROWS)

    return pa.RecordBatchReader.from_batches(schema, batches())


class LakeWrites(LakeTables):
    """``append`` and ``overwrite``."""

    def append(
        self,
        name: str,
        data: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        schema: pa.Schema | None = None,
        partition_by: Sequence[str] = (),
        unique_columns: Sequence[str] = (),
        merge_schema: bool = False,
    ) -> int:
        """Append ``data`` to table ``name`` as one Delta commit and return the new version.

        The table is created on first append (catalog tables know their schema; others need
        ``schema``). Rows are checked and cast to the schema first; nothing is written if any
        column is wrong. A commit that loses a race is retried (by delta-rs, up to 100 times,
        without rewriting the data files).

        Args:
            name: table name.
            data: pyarrow table, polars/pandas frame, list of row dicts, or ``TableParts`` (a
                large append built and written a part at a time).
            metadata: commit metadata (actor, run id, job ...) kept in the Delta log.
            schema: schema for a non-catalog table's first append.
            partition_by: partition columns for a non-catalog table's first append.
            unique_columns: columns whose values rarely repeat (ids, timestamps, scores): written
                without Parquet dictionary encoding, which would be built and then dropped
                (about a quarter of a prediction log append's CPU).
            merge_schema: ``schema`` adds nullable columns or struct fields to the stored table
                (Delta schema evolution in the same commit, e.g. a model version's new features).

        Returns:
            The table version after the commit (the current version when ``data`` is empty).

        Raises:
            SchemaMismatchError: a column is unknown, missing, of the wrong type or null.
            CommitConflictError: the commit lost every retry.
        """
        spec = self._spec(name, schema, partition_by)
        parts = data if isinstance(data, TableParts) else None
        raw = _arrow(data.first if parts is not None else data)
        if raw.num_rows == 0 and raw.num_columns == 0:  # e.g. an empty list: nothing to check or write
            return self.version(name) if self.exists(name) else -1
        table = conform(raw, spec.schema, table_name=name)
        if table.num_rows == 0:
            return self.version(name) if self.exists(name) else -1
        meta = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}
        props = CommitProperties(custom_metadata=meta or None, max_commit_retries=_APPEND_COMMIT_RETRIES)
        plain = ColumnProperties(dictionary_enabled=False)
        # ZSTD level 1: delta-rs writes uncompressed Parquet by default; a prediction log flush is
        # ~7x smaller for about the same CPU (the compression's cost comes back as fewer bytes
        # through the page cache and to the object store; bench/predlog_write.py)
        writer = WriterProperties(compression="ZSTD", compression_level=1,
                                  column_properties={c: plain for c in unique_columns} or None)
        with self._lock:
            tlock = self._table_locks.setdefault(name, threading.Lock())
        with tlock:
            if name not in self._tables and not self.exists(name):
                self.create(name, spec.schema, spec.partition_by)
            last: Exception | None = None
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    dt = self._tables.get(name) or self._open(name)
                    write_deltalake(
                        dt,
                        _stream(table) if parts is None else _stream_parts(table, parts, spec.schema, name),
                        mode="append",
                        partition_by=list(spec.partition_by) or None,
                        commit_properties=props,
                        writer_properties=writer,
                        schema_mode="merge" if merge_schema else None,
                    )
                    self._tables[name] = dt
                    return dt.version()
                except CommitFailedError as exc:
                    last = exc
                    self._tables.pop(name, None)
                    time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)))  # noqa: S311
                except DeltaError as exc:
                    self._tables.pop(name, None)
                    raise _io_error(exc, f"append to {name!r} failed: {str(exc).splitlines()[0]}") from exc
                except OSError as exc:
                    self._tables.pop(name, None)
                    raise LakeUnavailableError(f"append to {name!r} failed: {exc}") from exc
            raise CommitConflictError(
                f"append to {name!r} lost the commit race {_APPEND_ATTEMPTS} times "
                f"({_APPEND_COMMIT_RETRIES} retries each): {last}"
            )

    def overwrite(self, name: str, data: Any, *, metadata: Mapping[str, Any] | None = None) -> int:
        """Replace the rows of a non-catalog table (``data/<name>`` with mode=replace) in one commit.

        The old rows stay reachable by time travel. Catalog tables are append-only and refuse this.
        """
        if spec_for(name) is not None:
            raise LakeError(f"table {name!r} is append-only")
        table = conform(_arrow(data), self.schema(name), table_name=name)
        meta = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}
        try:
            write_deltalake(
                self.table_uri(name),
                table,
                mode="overwrite",
                storage_options=self.storage_options,
                commit_properties=CommitProperties(custom_metadata=meta or None, max_commit_retries=_MAX_COMMIT_RETRIES),
            )
        except CommitFailedError as exc:
            raise CommitConflictError(f"overwrite of {name!r} lost the commit race: {exc}") from exc
        except DeltaError as exc:
            raise LakeError(f"overwrite of {name!r} failed: {str(exc).splitlines()[0]}") from exc
        except OSError as exc:
            raise LakeUnavailableError(f"overwrite of {name!r} failed: {exc}") from exc
        self._tables.pop(name, None)
        return self.version(name)
