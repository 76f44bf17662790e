"""Reads: snapshots pinned to one version over Arrow's native filesystems, frames, lazy scans,
history, and the data files of a version for a cluster to read in parallel."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from core.catalog import spec_for
from core.errors import LakeUnavailableError, TableNotFoundError
from core.lake._common import _check_name, _failed
from core.lake._timetravel import LakeTimeTravel

__all__ = ["LakeReads"]


class LakeReads(LakeTimeTravel):
    """Snapshots, frames, scans, history and file listings of one version."""

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
        try:
            return dt.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(self._fs_path(name), self._fs))
        except (DeltaError, OSError) as exc:
            raise _failed(exc, name, "reading") from exc

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
            LakeError: the log or a data file it lists is damaged or missing.
        """
        ds = self.snapshot(name, version=version, as_of=as_of)
        try:
            table = ds.to_table(columns=list(columns) if columns else None, filter=filter)
        except OSError as exc:
            raise _failed(exc, name, "reading") from exc
        return pl.from_arrow(table)  # type: ignore[return-value]

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
        """Return a polars lazy scan of ``name`` (fast path for heavy internal aggregation).

        Only the table's existence is checked here: polars reads the log and the files when the
        scan is collected, so a missing version or a damaged log raises polars'/delta-rs's own
        error from ``collect`` (use ``read`` where a lakeops error matters more than speed).

        Raises:
            TableNotFoundError: no such table.
        """
        if not self.exists(name):
            raise TableNotFoundError(self._not_found(name))
        return pl.scan_delta(self.table_uri(name), version=version, storage_options=self.storage_options or None)

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the commit history of ``name``, newest first, with commit metadata.

        Raises:
            TableNotFoundError: no such table.
            LakeError: a commit of the log cannot be read.
        """
        dt = self._open(name)
        try:
            return list(dt.history(limit))
        except (DeltaError, OSError) as exc:
            raise _failed(exc, name, "history") from exc

    def file_count(self, name: str) -> int:
        """Return the number of live data files of ``name``."""
        dt = self._open(name)
        try:
            return len(dt.file_uris())
        except (DeltaError, OSError) as exc:
            raise _failed(exc, name, "listing the files") from exc

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

