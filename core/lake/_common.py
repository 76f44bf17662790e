"""What every part of the lake shares: commit and retention constants, the maintenance report,
table-name checks and the mapping of delta-rs errors to lakeops errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from deltalake.exceptions import CommitFailedError
from deltalake.exceptions import TableNotFoundError as _DeltaTableNotFound

from core.errors import CommitConflictError, LakeError, LakeUnavailableError, TableNotFoundError

__all__ = ["MaintenanceReport"]

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


def _failed(exc: Exception, name: str, what: str) -> LakeError:
    """The lakeops error for ``what`` (``"history"``, ``"maintenance (vacuum)"`` ...) of table
    ``name`` failing with a delta-rs or storage error ``exc``: a lost commit race is
    ``CommitConflictError``, a table delta-rs cannot find ``TableNotFoundError``, a data file the
    log lists but the store no longer has ``LakeError`` (retrying will not bring it back), other
    storage failures ``LakeUnavailableError``, the rest (a damaged log) ``LakeError``."""
    detail = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = f"{what} of table {name!r} failed: {detail}"
    if isinstance(exc, CommitFailedError):
        return CommitConflictError(message)
    if isinstance(exc, _DeltaTableNotFound):
        return TableNotFoundError(message)
    if isinstance(exc, FileNotFoundError):
        return LakeError(f"{what} of table {name!r} failed: a file its log lists is missing ({detail})")
    if isinstance(exc, OSError):
        return LakeUnavailableError(message)
    return _io_error(exc, message)


def _uri_key(uri: str) -> str:
    return uri.rstrip("/") if _is_s3(uri) else str(Path(uri.removeprefix("file://")).expanduser().resolve())


def _check_name(name: str) -> None:
    parts = name.split("/")
    ok = 1 <= len(parts) <= 2 and all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts)
    if not ok:
        raise TableNotFoundError(
            f"table name {name!r} is invalid: use letters, digits, '_' or '-', optionally 'group/name'"
        )

