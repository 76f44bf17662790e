"""Lake failures surface as lakeops errors naming the table, never as raw delta-rs errors, and a
failed operation loses nothing already stored.

Every failure is real: a table that does not exist, a commit file of the Delta log overwritten
with garbage or deleted, a data file deleted behind the log's back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import LakeError, TableNotFoundError
from core.lake import Lake

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("x", pa.float64())])
T = "events"
OTHER = "keep"


def _fill(lake: Lake, name: str, commits: int) -> None:
    for i in range(commits):
        lake.append(name, [{"id": i, "x": i / 2}], schema=SCHEMA)


def _commit(lake: Lake, name: str, version: int) -> Path:
    return Path(lake.uri) / name / "_delta_log" / f"{version:020d}.json"


def _data_files(lake: Lake, name: str) -> set[str]:
    return {p.name for p in (Path(lake.uri) / name).glob("*.parquet")}


def _ids(lake: Lake, name: str) -> list[int]:
    return sorted(lake.read(name)["id"].to_list())


def _ids_at(lake: Lake, name: str, version: int) -> list[int]:
    return sorted(lake.read(name, version=version)["id"].to_list())


@pytest.fixture
def two_tables(lake: Lake) -> Lake:
    """``events`` with 5 one-row commits (versions 1-5) and ``keep`` with 3."""
    _fill(lake, T, 5)
    _fill(lake, OTHER, 3)
    return lake


def _names_table(exc: pytest.ExceptionInfo[BaseException], name: str) -> None:
    assert f"'{name}'" in str(exc.value), str(exc.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda lake: lake.history("nope"),
        lambda lake: lake.file_count("nope"),
        lambda lake: lake.maintain(["nope"]),
        lambda lake: lake.compact("nope"),
        lambda lake: lake.small_files("nope"),
        lambda lake: lake.schema("nope"),
        lambda lake: lake.version("nope"),
        lambda lake: lake.read("nope"),
        lambda lake: lake.snapshot_files("nope"),
        lambda lake: lake.scan("nope"),
        lambda lake: lake.overwrite("nope", [{"id": 1}]),
    ],
    ids=["history", "file_count", "maintain", "compact", "small_files", "schema", "version", "read",
         "snapshot_files", "scan", "overwrite"],
)
def test_a_missing_table_is_table_not_found_naming_it(two_tables: Lake, call):
    with pytest.raises(TableNotFoundError) as exc:
        call(two_tables)
    _names_table(exc, "nope")
    assert "events" in str(exc.value)  # the tables that do exist are listed
    assert not (Path(two_tables.uri) / "nope").exists()  # asking did not create it
    assert _ids(two_tables, T) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "call",
    [
        lambda lake: lake.history(T),
        lambda lake: lake.file_count(T),
        lambda lake: lake.maintain([T]),
        lambda lake: lake.compact(T),
        lambda lake: lake.small_files(T),
        lambda lake: lake.read(T),
        lambda lake: lake.append(T, [{"id": 99, "x": 0.0}]),
        lambda lake: lake.overwrite(T, [{"id": 99, "x": 0.0}]),
    ],
    ids=["history", "file_count", "maintain", "compact", "small_files", "read", "append", "overwrite"],
)
def test_a_garbled_latest_commit_is_a_lake_error_and_loses_nothing(two_tables: Lake, call):
    lake = two_tables
    files = _data_files(lake, T)
    latest = _commit(lake, T, 5)
    original = latest.read_bytes()
    latest.write_text("{garbage")
    with pytest.raises(LakeError) as exc:
        call(lake)
    assert not isinstance(exc.value, TableNotFoundError)  # the table is there, its log is damaged
    _names_table(exc, T)
    assert _data_files(lake, T) == files  # no data file was written or removed
    assert sorted(p.name for p in latest.parent.glob("*.json")) == [f"{v:020d}.json" for v in range(6)]
    assert _ids(lake, OTHER) == [0, 1, 2]  # the other table does not notice
    latest.write_bytes(original)  # once the log is repaired every row is back
    assert _ids(lake, T) == [0, 1, 2, 3, 4]
    assert lake.version(T) == 5


def test_history_with_a_garbled_old_commit_is_a_lake_error_while_the_rows_stay_readable(two_tables: Lake):
    lake = two_tables
    lake.compact(T)  # checkpoints the log: the latest state no longer needs the old commit files
    lake.append(T, [{"id": 5, "x": 2.5}], schema=SCHEMA)
    _commit(lake, T, 2).write_text("{garbage")
    with pytest.raises(LakeError) as exc:
        lake.history(T)
    _names_table(exc, T)
    assert "history" in str(exc.value)
    assert [h["version"] for h in lake.history(T, limit=2)] == [7, 6]  # the newest commits still read
    assert _ids(lake, T) == [0, 1, 2, 3, 4, 5]
    assert lake.file_count(T) == 2


def test_a_version_whose_commit_was_deleted_is_table_not_found_saying_so(two_tables: Lake):
    lake = two_tables
    lake.compact(T)
    _commit(lake, T, 1).unlink()
    with pytest.raises(TableNotFoundError) as exc:
        lake.read(T, version=1)
    _names_table(exc, T)
    assert "no longer keeps version 1" in str(exc.value)
    assert _ids(lake, T) == [0, 1, 2, 3, 4]


def test_time_travel_with_a_garbled_first_commit_is_a_lake_error(two_tables: Lake):
    lake = two_tables
    lake.compact(T)
    _commit(lake, T, 0).write_text("{garbage")
    with pytest.raises(LakeError) as exc:
        lake.read(T, as_of=datetime.now(UTC) - timedelta(seconds=1))
    _names_table(exc, T)
    assert "time travel" in str(exc.value)
    assert _ids(lake, T) == [0, 1, 2, 3, 4]


def test_maintenance_with_a_deleted_data_file_names_the_table_and_step_and_removes_nothing(two_tables: Lake):
    lake = two_tables
    files = _data_files(lake, T)
    (gone,) = files - {Path(f).name for f in lake.snapshot(T, version=4).files}  # the row of version 5
    (Path(lake.uri) / T / gone).unlink()
    with pytest.raises(LakeError) as exc:
        lake.maintain([OTHER, T])
    _names_table(exc, T)
    assert "maintenance (compaction)" in str(exc.value)
    assert _data_files(lake, T) == files - {gone}  # the surviving files were neither rewritten nor vacuumed
    assert lake.version(T) == 5
    assert _ids(lake, OTHER) == [0, 1, 2]  # maintained before the failure, rows intact
    assert lake.file_count(OTHER) == 1
    with pytest.raises(LakeError) as exc:
        lake.compact(T)
    _names_table(exc, T)
    assert "compaction" in str(exc.value)
    with pytest.raises(LakeError) as exc:
        lake.read(T)
    _names_table(exc, T)
    assert "missing" in str(exc.value)
    assert _ids_at(lake, T, 4) == [0, 1, 2, 3]  # versions without the lost file still read
