"""Maintenance: compaction (safe beside writers), and the full pass of compaction, checkpoint,
log cleanup, vacuum (retention >= 24 h) and removal of crashed writers' staging files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in small_files
import pyarrow.fs as pafs
from deltalake import CommitProperties
from deltalake.exceptions import DeltaError

from core.errors import LakeError
from core.lake._common import (
    _MAX_COMMIT_RETRIES,
    _MIN_RETENTION_HOURS,
    _SMALL_FILE_BYTES,
    _STAGING_MAX_AGE,
    MaintenanceReport,
    _failed,
)
from core.lake._tables import LakeTables

__all__ = ["LakeMaintenance"]


class LakeMaintenance(LakeTables):
    """``small_files``, ``compact``, ``maintain``."""

    def small_files(self, name: str, *, below_bytes: int = _SMALL_FILE_BYTES) -> int:
        """Return how many live data files of ``name`` are smaller than ``below_bytes``."""
        dt = self._open(name)
        try:
            sizes = pa.table(dt.get_add_actions(flatten=True)).column("size_bytes")
        except (DeltaError, OSError) as exc:
            raise _failed(exc, name, "listing the files") from exc
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

        Raises:
            TableNotFoundError: no such table.
            CommitConflictError: the compaction commit kept losing races.
            LakeError: a file the log lists is missing or the log is damaged (nothing is removed).
        """
        if min_small_files and self.small_files(name) < min_small_files:
            return {}
        dt = self._open(name)
        try:
            metrics = dict(dt.optimize.compact(commit_properties=CommitProperties(max_commit_retries=_MAX_COMMIT_RETRIES)))
            self._open(name).create_checkpoint()
        except (DeltaError, OSError) as exc:
            self._tables.pop(name, None)
            raise _failed(exc, name, "compaction") from exc
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

        Raises:
            TableNotFoundError: a named table does not exist.
            LakeError: a step failed on a table (the message names the table and the step); the
                tables before it were maintained, the ones after it were not.
        """
        if retention_hours < _MIN_RETENTION_HOURS:
            raise LakeError(
                f"retention_hours={retention_hours} is unsafe with concurrent writers; use >= {_MIN_RETENTION_HOURS}"
            )
        reports = []
        for name in list(names) if names is not None else self.tables():
            try:
                reports.append(self._maintain_one(name, retention_hours, list((keep_versions or {}).get(name, ()))))
            finally:
                self._tables.pop(name, None)
        return reports

    def _maintain_one(self, name: str, retention_hours: int, keep: list[int]) -> MaintenanceReport:
        dt = self._open(name)
        step = "listing the files"
        try:
            before = len(dt.file_uris())
            step = "compaction"
            compacted = dict(dt.optimize.compact(commit_properties=CommitProperties(max_commit_retries=_MAX_COMMIT_RETRIES)))
            dt = self._open(name)
            step = "checkpoint"
            dt.create_checkpoint()
            step = "log cleanup"
            dt.cleanup_metadata()
            step = "vacuum"
            vacuumed = dt.vacuum(
                retention_hours=retention_hours,
                dry_run=False,
                enforce_retention_duration=retention_hours >= 168,
                full=True,
                keep_versions=keep or None,
            )
            step = "removing staging files"
            staging = self._remove_staging(name)
            dt = self._open(name)
            return MaintenanceReport(name, before, len(dt.file_uris()), compacted, len(vacuumed), staging, dt.version())
        except (DeltaError, OSError) as exc:
            raise _failed(exc, name, f"maintenance ({step})") from exc

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
