"""Time travel: pin a table to a version or to a time, refusing a time before the table existed
(deltalake would silently give version 0) or older than the log still keeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from core.errors import LakeError, TableNotFoundError
from core.lake._common import _failed
from core.lake._tables import LakeTables

__all__ = ["LakeTimeTravel"]


class LakeTimeTravel(LakeTables):
    """``_at``: the ``DeltaTable`` of a version or a time."""

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
        try:
            logs = [i for i in self._fs.get_file_info(sel) if len(i.base_name) == 25 and i.base_name.endswith(".json")]
            if not logs:
                return 0, None
            info = min(logs, key=lambda i: i.base_name)
            with self._fs.open_input_stream(info.path) as src:
                for line in bytes(src.read()).decode("utf-8").splitlines():
                    action = json.loads(line) if line.strip() else {}
                    stamp = action.get("commitInfo", {}).get("timestamp") if isinstance(action, dict) else None
                    if stamp is not None:
                        return int(info.base_name[:20]), datetime.fromtimestamp(stamp / 1000, tz=UTC)
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            raise _failed(exc, name, "time travel (reading its oldest commit)") from exc
        return int(info.base_name[:20]), info.mtime
