"""The tables of a lake: listing, existence, schema, creation and opening one (with delta-rs's
"not found" turned into ``TableNotFoundError`` naming the known tables)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError
from deltalake.exceptions import TableNotFoundError as _DeltaTableNotFound

from core.catalog import TableSpec, spec_for
from core.errors import LakeError, LakeUnavailableError, TableNotFoundError
from core.lake._common import _io_error
from core.lake._store import LakeStore

__all__ = ["LakeTables"]


class LakeTables(LakeStore):
    """Which tables exist, their schemas, creating and opening them."""

    def tables(self) -> list[str]:
        """Return the names of every Delta table in the lake, sorted."""
        found: list[str] = []
        sel = pafs.FileSelector(self._fs_root, allow_not_found=True, recursive=False)
        try:
            top = [i for i in self._fs.get_file_info(sel) if i.type == pafs.FileType.Directory]
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
        except OSError as exc:
            raise LakeUnavailableError(f"cannot list lake {self.uri}: {exc}") from exc
        return sorted(found)

    def _has_log(self, fs_path: str) -> bool:
        return self._fs.get_file_info(f"{fs_path}/_delta_log").type == pafs.FileType.Directory

    def exists(self, name: str) -> bool:
        """True when table ``name`` has at least one commit."""
        try:
            return DeltaTable.is_deltatable(self.table_uri(name), storage_options=self.storage_options)
        except (DeltaError, OSError) as exc:
            raise LakeUnavailableError(f"cannot check table {name!r} in lake {self.uri}: {exc}") from exc

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

    def _open(self, name: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.table_uri(name), version=version, storage_options=self.storage_options)
        except _DeltaTableNotFound:
            raise TableNotFoundError(self._not_found(name)) from None
        except DeltaError as exc:
            msg = str(exc)
            if version is not None and ("version" in msg.lower() or "not found" in msg.lower()):
                latest = self.version(name)
                if 0 <= version <= latest:
                    raise TableNotFoundError(
                        f"table {name!r} no longer keeps version {version} (its log was cleaned up or damaged); "
                        f"the latest is {latest}"
                    ) from None
                raise TableNotFoundError(
                    f"table {name!r} has versions 0-{latest}; asked for {version}"
                ) from None
            raise LakeError(f"cannot open table {name!r}: {msg.splitlines()[0]}") from exc
        except OSError as exc:
            raise LakeUnavailableError(f"cannot reach lake {self.uri}: {exc}") from exc

    def _not_found(self, name: str) -> str:
        known = ", ".join(self.tables()) or "none yet"
        return f"table {name!r} does not exist in lake {self.uri} (tables: {known})"

    def version(self, name: str) -> int:
        """Return the latest version of table ``name``."""
        return self._open(name).version()
