"""The lake: the only module that touches ``deltalake``.

A lake is a root URI (a local folder, or ``s3://bucket/prefix``) holding one Delta table per
catalog entry (``runs``, ``metrics`` ...) plus per-dataset ``data/<name>`` and per-model
``predictions/<model>`` tables, and an ``artifacts/`` area for model files.

Guarantees (see docs/architecture.md and LAKE-FACTS):
    * appends are validated against the table schema and cast before writing (deltalake would
      silently cast lossy values), one Delta commit per call, retried on a lost commit race;
    * reads are snapshots: a ``pyarrow.dataset`` pinned to one version;
    * time travel by version and by timestamp (a time before the table existed is an error,
      not silently version 0);
    * maintenance = compaction + checkpoint + log cleanup + vacuum (retention >= 24 h) + removal
      of crashed writers' staging files;
    * an ``s3://`` root opened for writing is probed for conditional-write support first.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in small_files
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import ColumnProperties, CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as _DeltaTableNotFound

from core.catalog import TableSpec, spec_for
from core.errors import (
    CommitConflictError,
    LakeError,
    LakeUnavailableError,
    SchemaMismatchError,
    TableNotFoundError,
    UnsafeStoreError,
)

__all__ = ["Lake", "MaintenanceReport", "conform", "resolve"]

_MAX_COMMIT_RETRIES = 100  # delta-rs retries the commit (not the data write) this many times
# Appends: a few delta-rs retries, then reload the table and back off with full jitter. With
# delta-rs's own 100 retries a writer that fell behind walked the log one version at a time
# while others kept committing (one append waited for 200 other commits; 8 writers: p95 1.5-3 s,
# max 8-18 s, 10-17 commits/s); with 10 retries, reload and jittered backoff: p95 1.0-1.4 s,
# max 4.7-5.8 s, 27-32 commits/s. The price: a lost attempt leaves its data file behind
# (about 1 in 8 appends at that contention), removed by the maintenance vacuum.
_APPEND_COMMIT_RETRIES = 10
_APPEND_ATTEMPTS = 30
_BACKOFF_BASE_S = 0.02
_BACKOFF_CAP_S = 1.0
_STAGING_MAX_AGE = timedelta(days=1)
_MIN_RETENTION_HOURS = 24
_SMALL_FILE_BYTES = 8 << 20


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance pass did to one table."""

    table: str
    files_before: int
    files_after: int
    compacted: dict[str, Any] = field(default_factory=dict)
    vacuumed: int = 0
    staging_removed: int = 0
    version: int = -1


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


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


class Lake:
    """A lake root holding Delta tables; safe to share between threads of one process.

    Args:
        uri: a local folder or ``s3://bucket/prefix``.
        storage_options: object-store options (``AWS_ENDPOINT_URL``, keys, region, ``AWS_ALLOW_HTTP``).
        create: create the local folder when missing.
        check_writes: for ``s3://`` roots, refuse stores that ignore conditional writes.

    Example:
        >>> lake = Lake("/tmp/lake")                                    # doctest: +SKIP
        >>> lake.append("feedback", [{"prediction_id": "p1", "label": 1.0, "at": now}])  # doctest: +SKIP
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        storage_options: Mapping[str, str] | None = None,
        *,
        create: bool = True,
        check_writes: bool = True,
    ) -> None:
        raw = str(uri)
        if raw.startswith("file://"):
            raw = raw[len("file://") :]
        self.storage_options: dict[str, str] = {str(k): str(v) for k, v in (storage_options or {}).items()}
        self._lock = threading.Lock()
        self._tables: dict[str, DeltaTable] = {}
        self._table_locks: dict[str, threading.Lock] = {}
        self._boto: Any = None
        self._lake_id: str | None = None
        if _is_s3(raw):
            self.uri = raw.rstrip("/")
            self._open_s3(check_writes)
        else:
            path = Path(raw).expanduser().resolve()
            if path.exists() and not path.is_dir():
                raise LakeUnavailableError(f"lake path {path} is a file, not a folder: pass a folder")
            if not path.exists():
                if not create:
                    raise LakeUnavailableError(f"lake folder {path} does not exist")
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise LakeUnavailableError(f"cannot create lake folder {path}: {exc.strerror}") from exc
            self.uri = str(path)
            self._fs: pafs.FileSystem = pafs.LocalFileSystem()
            self._fs_root = self.uri

    @classmethod
    def from_settings(cls, settings: Any, *, create: bool = True, check_writes: bool = True) -> Lake:
        """Open the lake that ``settings`` (a ``core.config.Settings``) names."""
        return cls(settings.lake_uri, settings.storage_options, create=create, check_writes=check_writes)

    # ------------------------------------------------------------------ object store
    def _open_s3(self, check_writes: bool) -> None:
        parsed = urlparse(self.uri)
        opts = self.storage_options
        endpoint = opts.get("AWS_ENDPOINT_URL", "")
        scheme = urlparse(endpoint).scheme if endpoint else "https"
        self._fs = pafs.S3FileSystem(
            access_key=opts.get("AWS_ACCESS_KEY_ID"),
            secret_key=opts.get("AWS_SECRET_ACCESS_KEY"),
            region=opts.get("AWS_REGION", "us-east-1"),
            endpoint_override=urlparse(endpoint).netloc if endpoint else None,
            scheme=scheme or "https",
            connect_timeout=5,
            request_timeout=10,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        )
        self._bucket = parsed.netloc
        self._prefix = parsed.path.strip("/")
        self._fs_root = f"{self._bucket}/{self._prefix}".rstrip("/")
        try:
            info = self._fs.get_file_info(self._bucket)
        except OSError as exc:
            raise LakeUnavailableError(
                f"cannot reach the object store for {self.uri}: {str(exc).splitlines()[0]}"
            ) from exc
        if info.type == pafs.FileType.NotFound:
            raise LakeUnavailableError(f"bucket {self._bucket!r} of lake {self.uri} does not exist")
        if check_writes:
            self._probe_conditional_writes()

    def _s3_client(self) -> Any:
        if self._boto is None:  # boto3 clients are thread-safe; creating one costs ~50 ms
            self._boto = self._new_s3_client()
        return self._boto

    def _new_s3_client(self) -> Any:
        import boto3  # only s3:// lakes need it
        from botocore.config import Config

        opts = self.storage_options
        return boto3.client(
            "s3",
            endpoint_url=opts.get("AWS_ENDPOINT_URL"),
            aws_access_key_id=opts.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=opts.get("AWS_SECRET_ACCESS_KEY"),
            region_name=opts.get("AWS_REGION", "us-east-1"),
            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}),
        )

    def _probe_conditional_writes(self) -> None:
        """Refuse a store that ignores ``If-None-Match: *`` (LAKE-FACTS: it loses commits)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from core.ids import new_id

        client = self._s3_client()
        key = "/".join(p for p in (self._prefix, "_lakeops", f"probe-{new_id()}") if p)
        try:
            client.put_object(Bucket=self._bucket, Key=key, Body=b"1", IfNoneMatch="*")
            try:
                client.put_object(Bucket=self._bucket, Key=key, Body=b"2", IfNoneMatch="*")
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status in (409, 412):
                    return
                raise
            raise UnsafeStoreError(
                f"the object store behind {self.uri} ignores conditional writes (If-None-Match): "
                "concurrent Delta commits would be silently lost; use a store that supports them"
            )
        except (BotoCoreError, ClientError) as exc:
            raise LakeUnavailableError(f"cannot write to {self.uri}: {str(exc).splitlines()[0]}") from exc
        finally:
            try:
                client.delete_object(Bucket=self._bucket, Key=key)
            except (BotoCoreError, ClientError):
                pass

    # ------------------------------------------------------------------ paths and files
    @property
    def is_local(self) -> bool:
        """True for a local folder lake."""
        return not _is_s3(self.uri)

    def table_uri(self, name: str) -> str:
        """Return the URI of table ``name`` (``"runs"``, ``"data/churn"``, ``"predictions/churn"``)."""
        _check_name(name)
        return f"{self.uri}/{name}"

    def _fs_path(self, rel: str) -> str:
        return f"{self._fs_root}/{rel}" if self._fs_root else rel

    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` under the lake root atomically; return its URI."""
        target = self._fs_path(rel)
        parent = target.rsplit("/", 1)[0]
        if not self.is_local:
            # One PUT (atomic on S3): pyarrow's multipart upload fails on some S3-compatible
            # stores (moto: "CompleteMultipartUpload got error embedded in a 200 OK response").
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self._s3_client().put_object(Bucket=self._bucket, Key=target.split("/", 1)[1], Body=data)
            except (BotoCoreError, ClientError) as exc:
                raise LakeError(f"cannot write {rel} in lake {self.uri}: {exc}") from exc
            return f"{self.uri}/{rel}"
        try:
            self._fs.create_dir(parent, recursive=True)
            tmp = f"{target}.tmp-{os.getpid()}-{threading.get_ident()}"
            with self._fs.open_output_stream(tmp) as out:
                out.write(data)
            Path(tmp).replace(target)
        except OSError as exc:
            raise LakeError(f"cannot write {rel} in lake {self.uri}: {exc}") from exc
        return f"{self.uri}/{rel}"

    @property
    def lake_id(self) -> str:
        """This lake's identity: a random id created once, with the lake, at ``_lakeops/lake_id``.

        Things kept outside the lake that belong to it (the prediction service's write-ahead
        log) carry it, so they are never replayed into another lake. Creating it is
        create-if-absent (a hard link locally, a conditional PUT on S3): racing first users
        agree on one id.

        Raises:
            LakeError: the id cannot be read or written.
        """
        if self._lake_id is None:
            self._lake_id = self._read_or_create_id()
        return self._lake_id

    def _read_or_create_id(self) -> str:
        import uuid

        rel = "_lakeops/lake_id"
        try:
            return self.get_bytes(rel).decode("utf-8").strip()
        except FileNotFoundError:
            pass
        fresh = uuid.uuid4().hex
        if self.is_local:
            target = Path(self._fs_path(rel))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f"lake_id.tmp-{os.getpid()}-{threading.get_ident()}")
                tmp.write_text(fresh, encoding="utf-8")
                try:
                    os.link(tmp, target)  # atomic create-if-absent: a racing creator's id wins
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink(missing_ok=True)
            except OSError as exc:
                raise LakeError(f"cannot create the lake id in {self.uri}: {exc}") from exc
        else:
            from botocore.exceptions import BotoCoreError, ClientError

            key = self._fs_path(rel).split("/", 1)[1]
            try:
                self._s3_client().put_object(Bucket=self._bucket, Key=key, Body=fresh.encode(), IfNoneMatch="*")
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (409, 412):
                    raise LakeError(f"cannot create the lake id in {self.uri}: {exc}") from exc
            except BotoCoreError as exc:
                raise LakeError(f"cannot create the lake id in {self.uri}: {exc}") from exc
        return self.get_bytes(rel).decode("utf-8").strip()

    def get_bytes(self, rel: str) -> bytes:
        """Read the file at ``rel`` under the lake root.

        Raises:
            FileNotFoundError: when there is no such file.
        """
        try:
            with self._fs.open_input_stream(self._fs_path(rel)) as src:
                return bytes(src.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                raise FileNotFoundError(f"{rel} is not in lake {self.uri}") from exc
            raise LakeError(f"cannot read {rel} in lake {self.uri}: {exc}") from exc

    def list_files(self, rel: str) -> list[str]:
        """Return the paths (relative to the root) of files under ``rel``, recursively."""
        sel = pafs.FileSelector(self._fs_path(rel), allow_not_found=True, recursive=True)
        root = f"{self._fs_root}/"
        return sorted(
            i.path[len(root) :] for i in self._fs.get_file_info(sel) if i.type == pafs.FileType.File
        )

    # ------------------------------------------------------------------ catalog
    def tables(self) -> list[str]:
        """Return the names of every Delta table in the lake, sorted."""
        found: list[str] = []
        sel = pafs.FileSelector(self._fs_root, allow_not_found=True, recursive=False)
        try:
            top = [i for i in self._fs.get_file_info(sel) if i.type == pafs.FileType.Directory]
        except OSError as exc:
            raise LakeUnavailableError(f"cannot list lake {self.uri}: {exc}") from exc
        for d in top:
            name = d.base_name
            if name.startswith(("_", ".")) or name == "artifacts":
                continue
            if self._has_log(d.path):
                found.append(name)
                continue
            sub = pafs.FileSelector(d.path, allow_not_found=True, recursive=False)
            for s in self._fs.get_file_info(sub):
                if s.type == pafs.FileType.Directory and self._has_log(s.path):
                    found.append(f"{name}/{s.base_name}")
        return sorted(found)

    def _has_log(self, fs_path: str) -> bool:
        return self._fs.get_file_info(f"{fs_path}/_delta_log").type == pafs.FileType.Directory

    def exists(self, name: str) -> bool:
        """True when table ``name`` has at least one commit."""
        try:
            return DeltaTable.is_deltatable(self.table_uri(name), storage_options=self.storage_options)
        except (DeltaError, OSError) as exc:
            raise LakeUnavailableError(f"cannot reach lake {self.uri}: {exc}") from exc

    def schema(self, name: str) -> pa.Schema:
        """Return the Arrow schema of table ``name`` as stored."""
        return pa.schema(self._open(name).schema())

    def create(self, name: str, schema: pa.Schema, partition_by: Sequence[str] = ()) -> None:
        """Create table ``name`` if absent (create-if-absent is atomic: racing creators are fine)."""
        if self.exists(name):
            return
        try:
            DeltaTable.create(
                self.table_uri(name),
                schema,
                mode="ignore",
                partition_by=list(partition_by) or None,
                storage_options=self.storage_options,
                # A creator that loses the race must fail, not retry: a retried CREATE lands as
                # version 1 with a second protocol+metaData action (measured with 4 processes).
                commit_properties=CommitProperties(max_commit_retries=0),
            )
        except DeltaError as exc:
            if not self.exists(name):
                raise _io_error(exc, f"cannot create table {name!r}: {exc}") from exc

    def _spec(self, name: str, schema: pa.Schema | None, partition_by: Sequence[str]) -> TableSpec:
        spec = spec_for(name)
        if spec is not None:
            return spec
        if schema is None:
            if self.exists(name):
                return TableSpec(name, self.schema(name), tuple(partition_by))
            raise TableNotFoundError(
                f"table {name!r} does not exist; create it with a schema first (Lake.create)"
            )
        return TableSpec(name, schema, tuple(partition_by))

    # ------------------------------------------------------------------ writes
    def _open(self, name: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.table_uri(name), version=version, storage_options=self.storage_options)
        except _DeltaTableNotFound:
            raise TableNotFoundError(self._not_found(name)) from None
        except DeltaError as exc:
            msg = str(exc)
            if version is not None and ("version" in msg.lower() or "not found" in msg.lower()):
                latest = self.version(name)
                raise TableNotFoundError(
                    f"table {name!r} has versions 0-{latest}; asked for {version}"
                ) from None
            raise LakeError(f"cannot open table {name!r}: {msg.splitlines()[0]}") from exc
        except OSError as exc:
            raise LakeUnavailableError(f"cannot reach lake {self.uri}: {exc}") from exc

    def _not_found(self, name: str) -> str:
        known = ", ".join(self.tables()) or "none yet"
        return f"table {name!r} does not exist in lake {self.uri} (tables: {known})"

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
            data: pyarrow table, polars/pandas frame or list of row dicts.
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
        raw = _arrow(data)
        if raw.num_rows == 0 and raw.num_columns == 0:  # e.g. an empty list: nothing to check or write
            return self.version(name) if self.exists(name) else -1
        table = conform(raw, spec.schema, table_name=name)
        if table.num_rows == 0:
            return self.version(name) if self.exists(name) else -1
        meta = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}
        props = CommitProperties(custom_metadata=meta or None, max_commit_retries=_APPEND_COMMIT_RETRIES)
        plain = ColumnProperties(dictionary_enabled=False)
        writer = WriterProperties(column_properties={c: plain for c in unique_columns}) if unique_columns else None
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
                        table,
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
        self._tables.pop(name, None)
        return self.version(name)

    # ------------------------------------------------------------------ reads
    def version(self, name: str) -> int:
        """Return the latest version of table ``name``."""
        return self._open(name).version()

    def _at(self, name: str, version: int | None, as_of: datetime | str | None) -> DeltaTable:
        if version is not None and as_of is not None:
            raise LakeError("pass either version or as_of, not both")
        if version is not None:
            if version < 0:
                raise TableNotFoundError(f"table {name!r}: version must be >= 0, got {version}")
            return self._open(name, version=version)
        dt = self._open(name)
        if as_of is not None:
            when = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            oldest, first = self._first_commit(name)
            if first is not None and when < first:
                if oldest == 0:
                    raise TableNotFoundError(
                        f"table {name!r} did not exist at {when.isoformat()}; "
                        f"its first commit is at {first.isoformat()}"
                    )
                raise TableNotFoundError(
                    f"table {name!r} keeps no version from {when.isoformat()}: its oldest "
                    f"version still in the log is {oldest}, from {first.isoformat()}"
                )
            try:
                dt.load_as_version(when)
            except DeltaError as exc:
                raise TableNotFoundError(
                    f"table {name!r} has no version at {when.isoformat()}: {str(exc).splitlines()[0]}"
                ) from None
        return dt

    def _first_commit(self, name: str) -> tuple[int, datetime | None]:
        """The oldest version still in the log and its commit time.

        Reads one log file instead of ``DeltaTable.history()``, which reads every commit (slow
        after thousands of commits) and holds the GIL while it waits on an object store.
        """
        sel = pafs.FileSelector(self._fs_path(f"{name}/_delta_log"), allow_not_found=True)
        logs = [i for i in self._fs.get_file_info(sel) if len(i.base_name) == 25 and i.base_name.endswith(".json")]
        if not logs:
            return 0, None
        info = min(logs, key=lambda i: i.base_name)
        with self._fs.open_input_stream(info.path) as src:
            for line in bytes(src.read()).decode("utf-8").splitlines():
                action = json.loads(line) if line.strip() else {}
                stamp = action.get("commitInfo", {}).get("timestamp")
                if stamp is not None:
                    return int(info.base_name[:20]), datetime.fromtimestamp(stamp / 1000, tz=UTC)
        return int(info.base_name[:20]), info.mtime

    def snapshot(
        self, name: str, *, version: int | None = None, as_of: datetime | str | None = None
    ) -> pads.Dataset:
        """Return a pyarrow dataset pinned to one version of ``name`` (latest by default).

        Its files are read through Arrow's native local or S3 filesystem, never a filesystem
        implemented in Python, so a scan never needs the GIL for I/O (see ``_dataset``).
        """
        return self._dataset(name, self._at(name, version, as_of))

    def snapshot_version(self, name: str, *, version: int | None = None, as_of: datetime | str | None = None) -> tuple[pads.Dataset, int]:
        """Like ``snapshot`` but also return the version the dataset is pinned to."""
        dt = self._at(name, version, as_of)
        return self._dataset(name, dt), dt.version()

    def _dataset(self, name: str, dt: DeltaTable) -> pads.Dataset:
        """The pinned dataset of ``dt`` over Arrow's native filesystem rooted at the table.

        deltalake's default is a ``PyFileSystem`` whose every file open calls back into Python:
        with DuckDB's scanner holding the GIL while it waits on Arrow's I/O threads, that once
        deadlocked a query and the timer meant to interrupt it (issue 21). The native
        filesystems do I/O without the GIL, and they pickle, so the SQL worker can be handed
        the datasets. File paths in the log are relative to the table root (partition folders
        included, already decoded).
        """
        return dt.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(self._fs_path(name), self._fs))

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        as_of: datetime | str | None = None,
        columns: Sequence[str] | None = None,
        filter: pads.Expression | None = None,  # noqa: A002 - mirrors pyarrow's name
    ) -> pl.DataFrame:
        """Read (a version of) table ``name`` into a polars frame.

        Raises:
            TableNotFoundError: no such table, version, or time before the table existed.
        """
        ds = self.snapshot(name, version=version, as_of=as_of)
        return pl.from_arrow(ds.to_table(columns=list(columns) if columns else None, filter=filter))  # type: ignore[return-value]

    def read_or_empty(self, name: str, *, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Read a catalog table, or return an empty frame of its schema when it has no rows yet."""
        if not self.exists(name):
            spec = spec_for(name)
            if spec is None:
                raise TableNotFoundError(self._not_found(name))
            empty = pl.from_arrow(spec.schema.empty_table())
            assert isinstance(empty, pl.DataFrame)
            return empty.select(columns) if columns else empty
        return self.read(name, columns=columns)

    def scan(self, name: str, *, version: int | None = None) -> pl.LazyFrame:
        """Return a polars lazy scan of ``name`` (fast path for heavy internal aggregation)."""
        if not self.exists(name):
            raise TableNotFoundError(self._not_found(name))
        return pl.scan_delta(self.table_uri(name), version=version, storage_options=self.storage_options or None)

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the commit history of ``name``, newest first, with commit metadata."""
        return list(self._open(name).history(limit))

    def file_count(self, name: str) -> int:
        """Return the number of live data files of ``name``."""
        return len(self._open(name).file_uris())

    def snapshot_files(
        self, name: str, *, version: int | None = None, filter: pads.Expression | None = None  # noqa: A002
    ) -> tuple[int, pa.Schema, list[Any]]:
        """The data files of one version of ``name``, from its Delta log: what a cluster reads in parallel.

        Never a listing of the folder (which would also see uncommitted, removed and crashed
        writers' files). ``filter`` prunes files by their partition values and column min/max
        statistics, as a snapshot scan would. Each file is a pyarrow ``ParquetFileFragment``
        over Arrow's native filesystem rooted at the table: it pickles (with the store's
        options), so a worker process reads it with ``fragment.to_table(schema=schema)``
        (partition columns filled in from the log).

        Returns:
            ``(version, schema, fragments)``.

        Raises:
            TableNotFoundError: no such table or version.
        """
        dt = self._at(name, version, None)
        ds = self._dataset(name, dt)
        fragments = list(ds.get_fragments(filter=filter) if filter is not None else ds.get_fragments())
        return dt.version(), ds.schema, fragments

    def latest_version_hint(self, name: str) -> int:
        """Return the highest committed version of ``name`` from one listing of its ``_delta_log``.

        No log replay, so it is cheap enough for polling loops that only need to notice a new
        commit (``core.registry.champion_version``); -1 when the table does not exist yet.
        Read the data itself through ``read``/``scan``/``snapshot`` as usual.
        """
        _check_name(name)
        sel = pafs.FileSelector(self._fs_path(f"{name}/_delta_log"), allow_not_found=True, recursive=False)
        try:
            infos = self._fs.get_file_info(sel)
        except OSError as exc:
            raise LakeUnavailableError(f"cannot list the log of {name!r} in lake {self.uri}: {exc}") from exc
        stems = (i.base_name[:-5] for i in infos if i.base_name.endswith(".json"))
        return max((int(s) for s in stems if s.isdigit()), default=-1)

    # ------------------------------------------------------------------ maintenance
    def small_files(self, name: str, *, below_bytes: int = _SMALL_FILE_BYTES) -> int:
        """Return how many live data files of ``name`` are smaller than ``below_bytes``."""
        sizes = pa.table(self._open(name).get_add_actions(flatten=True)).column("size_bytes")
        return int(pa.compute.sum(pa.compute.less(sizes, below_bytes)).as_py() or 0)

    def compact(self, name: str, *, min_small_files: int = 0) -> dict[str, Any]:
        """Merge the small files of ``name`` and checkpoint its log; no vacuum, so it is safe while
        other processes append (the compaction commit only removes files it rewrote).

        Reading cost grows with live files (LAKE-FACTS: 8.2 s at 10,000 files, 74 ms after
        compaction), and so does each append's commit; the ``compact`` job runs this on tables
        with many small files between the nightly maintenance passes.

        Args:
            name: the table.
            min_small_files: do nothing unless at least this many live files are small
                (under 8 MB).

        Returns:
            delta-rs's compaction metrics (``numFilesRemoved``, ``numFilesAdded`` ...), or ``{}``
            when the table had too few small files.
        """
        if min_small_files and self.small_files(name) < min_small_files:
            return {}
        dt = self._open(name)
        try:
            metrics = dict(dt.optimize.compact(commit_properties=CommitProperties(max_commit_retries=_MAX_COMMIT_RETRIES)))
            self._open(name).create_checkpoint()
        except DeltaError as exc:
            raise LakeError(f"compaction of {name!r} failed: {str(exc).splitlines()[0]}") from exc
        self._tables.pop(name, None)
        return metrics

    def maintain(
        self,
        names: Iterable[str] | None = None,
        *,
        retention_hours: int = 168,
        keep_versions: Mapping[str, Sequence[int]] | None = None,
    ) -> list[MaintenanceReport]:
        """Compact, checkpoint, clean the log, vacuum and drop stale staging files.

        Args:
            names: tables to maintain (default: every table).
            retention_hours: vacuum keeps files removed less than this long ago; at least 24
                (vacuum at 0 while a writer runs corrupts tables, per LAKE-FACTS).
            keep_versions: per table, versions whose files vacuum must keep (training snapshots).

        Returns:
            One report per table.
        """
        if retention_hours < _MIN_RETENTION_HOURS:
            raise LakeError(
                f"retention_hours={retention_hours} is unsafe with concurrent writers; use >= {_MIN_RETENTION_HOURS}"
            )
        reports = []
        for name in list(names) if names is not None else self.tables():
            dt = self._open(name)
            before = len(dt.file_uris())
            compacted = dict(dt.optimize.compact(commit_properties=CommitProperties(max_commit_retries=_MAX_COMMIT_RETRIES)))
            dt = self._open(name)
            dt.create_checkpoint()
            dt.cleanup_metadata()
            keep = list((keep_versions or {}).get(name, ()))
            vacuumed = dt.vacuum(
                retention_hours=retention_hours,
                dry_run=False,
                enforce_retention_duration=retention_hours >= 168,
                full=True,
                keep_versions=keep or None,
            )
            staging = self._remove_staging(name)
            dt = self._open(name)
            self._tables.pop(name, None)
            reports.append(
                MaintenanceReport(name, before, len(dt.file_uris()), compacted, len(vacuumed), staging, dt.version())
            )
        return reports

    def _remove_staging(self, name: str) -> int:
        """Delete ``*.parquet#N`` / ``_delta_log/*.json#N`` files older than a day (crashed writers)."""
        root = self._fs_path(name)
        sel = pafs.FileSelector(root, allow_not_found=True, recursive=True)
        cutoff = datetime.now(UTC) - _STAGING_MAX_AGE
        removed = 0
        for info in self._fs.get_file_info(sel):
            base = info.base_name
            if info.type != pafs.FileType.File or "#" not in base:
                continue
            mtime = info.mtime
            if mtime is not None and mtime.replace(tzinfo=mtime.tzinfo or UTC) < cutoff:
                self._fs.delete_file(info.path)
                removed += 1
        return removed


_default: Lake | None = None
_default_lock = threading.Lock()


def resolve(lake: Lake | None = None) -> Lake:
    """Return ``lake``, or the default lake of the current settings (opened once per process).

    Every public ``core`` function takes ``lake: Lake | None = None`` and calls this, so
    ``core.datasets.load("churn")`` works from a notebook with no setup.
    """
    global _default
    if lake is not None:
        return lake
    from core.config import load_settings

    with _default_lock:
        settings = load_settings()
        if _default is None or _default.uri != _uri_key(settings.lake_uri):
            _default = Lake.from_settings(settings)
        return _default


_IO_SIGNS = (
    "os {", "not a directory", "no such file", "no space left", "read-only file system", "permission denied",
    "error sending request", "connection refused", "connection reset", "timed out", "dns error",
    "already shut down", "broken pipe",
)


def _io_error(exc: Exception, message: str) -> LakeError:
    """A delta-rs error as ``LakeUnavailableError`` when it is the storage failing (I/O, network,
    a full disk), else ``LakeError``: callers retry the first and report the second."""
    text = str(exc).lower()
    if any(sign in text for sign in _IO_SIGNS):
        return LakeUnavailableError(message)
    return LakeError(message)


def _uri_key(uri: str) -> str:
    return uri.rstrip("/") if _is_s3(uri) else str(Path(uri.removeprefix("file://")).expanduser().resolve())


def _check_name(name: str) -> None:
    parts = name.split("/")
    ok = 1 <= len(parts) <= 2 and all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts)
    if not ok:
        raise TableNotFoundError(
            f"table name {name!r} is invalid: use letters, digits, '_' or '-', optionally 'group/name'"
        )

