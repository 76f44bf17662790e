"""The lake contract, on a local folder and on S3 (moto on 127.0.0.1): see ``any_lake``."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from core.errors import (
    LakeError,
    LakeUnavailableError,
    SchemaMismatchError,
    TableNotFoundError,
    UnsafeStoreError,
)
from core.ids import utcnow
from core.lake import Lake

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("n", pa.int64()),
        pa.field("x", pa.float64()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ]
)


def _rows(start: int, count: int) -> list[dict]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {"id": f"r{i}", "n": i, "x": i / 2, "at": t0 + timedelta(seconds=i)}
        for i in range(start, start + count)
    ]


def _feedback(n: int, start: int = 0) -> list[dict]:
    return [
        {"prediction_id": f"p{i}", "label": float(i % 2), "at": utcnow()} for i in range(start, start + n)
    ]


def test_append_then_read_returns_the_rows_and_versions_count_up(any_lake: Lake):
    assert any_lake.append("feedback", _feedback(3)) == 1  # version 0 is the empty table
    assert any_lake.append("feedback", _feedback(2, start=3)) == 2
    out = any_lake.read("feedback").sort("prediction_id")
    assert out["prediction_id"].to_list() == [f"p{i}" for i in range(5)]
    assert out.schema["at"] == pl.Datetime("us", "UTC")
    assert out["model"].null_count() == 5  # a missing nullable column is filled with nulls
    assert any_lake.version("feedback") == 2
    assert any_lake.scan("feedback").select(pl.len()).collect().item() == 5


def test_empty_append_writes_nothing(any_lake: Lake):
    assert any_lake.append("feedback", []) == -1
    assert not any_lake.exists("feedback")
    assert any_lake.read_or_empty("feedback").columns == ["prediction_id", "model", "label", "at", "source", "key", "key_value"]
    any_lake.append("feedback", _feedback(1))
    assert (
        any_lake.append(
            "feedback", pl.DataFrame(schema={"prediction_id": pl.String, "at": pl.Datetime("us", "UTC")})
        )
        == 1
    )


def test_accepts_polars_pyarrow_and_row_dicts(any_lake: Lake):
    any_lake.append("data/t", _rows(0, 2), schema=SCHEMA)
    any_lake.append("data/t", pl.DataFrame(_rows(2, 2)))
    any_lake.append("data/t", pa.Table.from_pylist(_rows(4, 2)))
    assert sorted(any_lake.read("data/t")["n"].to_list()) == list(range(6))


@pytest.mark.parametrize(
    ("rows", "column", "problem"),
    [
        ([{"id": "a", "bogus": 1}], "bogus", "unknown column"),
        ([{"id": "a", "n": 1.5}], "n", "without loss"),
        ([{"id": None, "n": 1}], "id", "NOT NULL"),
        ([{"n": 1}], "id", "required"),
        ([{"id": "a", "x": "not a number"}], "x", "without loss"),
        ([{"id": "a", "at": "yesterday"}], "at", "without loss"),
    ],
)
def test_schema_errors_name_the_column_and_write_nothing(any_lake: Lake, rows, column, problem):
    any_lake.append("data/t", _rows(0, 1), schema=SCHEMA)
    with pytest.raises(SchemaMismatchError) as err:
        any_lake.append("data/t", rows)
    msg = str(err.value)
    assert repr(column) in msg and problem in msg and "data/t" in msg
    assert any_lake.version("data/t") == 1
    assert any_lake.read("data/t").height == 1


def test_lossless_casts_are_accepted(any_lake: Lake):
    any_lake.append("data/t", [{"id": "a", "n": 2.0, "x": 3}], schema=SCHEMA)  # 2.0 -> 2, 3 -> 3.0
    row = any_lake.read("data/t").row(0, named=True)
    assert row["n"] == 2 and row["x"] == 3.0


def test_first_append_of_an_unknown_table_needs_a_schema(any_lake: Lake):
    with pytest.raises(TableNotFoundError, match="create it with a schema"):
        any_lake.append("data/nothing", [{"a": 1}])


def test_naive_timestamps_are_taken_as_utc_and_zones_become_utc(any_lake: Lake):
    naive = datetime(2026, 3, 1, 12, 0, 0)
    paris = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    any_lake.append("data/t", [{"id": "naive", "at": naive}], schema=SCHEMA)
    any_lake.append(
        "data/t", pa.table({"id": ["tz"], "at": pa.array([paris], pa.timestamp("us", tz="+01:00"))})
    )
    got = dict(any_lake.read("data/t").select("id", "at").iter_rows())
    assert got["naive"] == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert got["tz"] == datetime(2026, 3, 1, 11, tzinfo=UTC)  # same instant, stored in UTC
    assert any_lake.schema("data/t").field("at").type == pa.timestamp("us", tz="UTC")


def test_time_travel_by_version(any_lake: Lake):
    for i in range(3):
        any_lake.append("data/t", _rows(i * 10, 10), schema=SCHEMA)
    assert any_lake.read("data/t", version=0).height == 0
    assert any_lake.read("data/t", version=1).height == 10
    assert any_lake.read("data/t", version=2)["n"].max() == 19
    ds, v = any_lake.snapshot_version("data/t", version=2)
    assert v == 2 and ds.count_rows() == 20
    with pytest.raises(TableNotFoundError, match=r"versions 0-3; asked for 7"):
        any_lake.read("data/t", version=7)
    with pytest.raises(TableNotFoundError, match=">= 0"):
        any_lake.read("data/t", version=-1)
    with pytest.raises(LakeError, match="either version or as_of"):
        any_lake.read("data/t", version=1, as_of=utcnow())


def test_time_travel_by_timestamp(any_lake: Lake):
    before = utcnow() - timedelta(seconds=2)
    any_lake.append("data/t", _rows(0, 5), schema=SCHEMA)
    time.sleep(0.05)
    between = utcnow()
    # deltalake resolves times by the log files' modification times: on S3 (LastModified) that
    # has one-second resolution, so a commit less than a second later could be taken as earlier
    time.sleep(0.05 if any_lake.is_local else 1.1)
    any_lake.append("data/t", _rows(5, 5))
    assert any_lake.read("data/t", as_of=between).height == 5
    assert any_lake.read("data/t", as_of=between.isoformat()).height == 5
    assert any_lake.read("data/t", as_of=between.replace(tzinfo=None)).height == 5  # naive = UTC
    assert any_lake.read("data/t", as_of=utcnow() + timedelta(days=1)).height == 10
    with pytest.raises(TableNotFoundError, match="did not exist at"):
        any_lake.read("data/t", as_of=before)  # LAKE-FACTS: deltalake alone would say version 0


def test_snapshot_is_pinned_to_its_version(any_lake: Lake):
    any_lake.append("feedback", _feedback(4))
    snap = any_lake.snapshot("feedback")
    any_lake.append("feedback", _feedback(6, start=4))
    assert snap.count_rows() == 4
    assert snap.to_table().num_rows == 4
    assert any_lake.snapshot("feedback").count_rows() == 10


def test_tables_discovers_catalog_data_and_prediction_tables(any_lake: Lake):
    assert any_lake.tables() == []
    any_lake.append("feedback", _feedback(1))
    any_lake.append("data/x", _rows(0, 1), schema=SCHEMA)
    any_lake.append("predictions/x", _rows(0, 1), schema=SCHEMA)
    any_lake.put_bytes("artifacts/runs/r1/model.txt", b"m")  # not a table
    any_lake.put_bytes("data/loose.txt", b"?")  # not a table either
    assert any_lake.tables() == ["data/x", "feedback", "predictions/x"]
    assert any_lake.exists("data/x") and not any_lake.exists("data/y")


def test_unknown_and_invalid_table_names(any_lake: Lake):
    any_lake.append("feedback", _feedback(1))
    with pytest.raises(TableNotFoundError, match=r"'runs' does not exist.*feedback"):
        any_lake.read("runs")
    with pytest.raises(TableNotFoundError):
        any_lake.scan("data/missing")
    for bad in ("../etc", "a/b/c", "", "data/", "x y"):
        with pytest.raises(TableNotFoundError, match="invalid"):
            any_lake.table_uri(bad)


def test_put_and_get_bytes(any_lake: Lake):
    blob = bytes(range(256)) * 100
    uri = any_lake.put_bytes("artifacts/models/churn/1/model.txt", blob)
    assert uri == f"{any_lake.uri}/artifacts/models/churn/1/model.txt"
    assert any_lake.get_bytes("artifacts/models/churn/1/model.txt") == blob
    any_lake.put_bytes("artifacts/models/churn/1/model.txt", b"v2")
    assert any_lake.get_bytes("artifacts/models/churn/1/model.txt") == b"v2"
    any_lake.put_bytes("artifacts/models/churn/1/sig.json", b"{}")
    assert any_lake.list_files("artifacts/models/churn") == [
        "artifacts/models/churn/1/model.txt",
        "artifacts/models/churn/1/sig.json",
    ]
    assert any_lake.list_files("artifacts/nothing") == []
    with pytest.raises(FileNotFoundError):
        any_lake.get_bytes("artifacts/nope.bin")


def test_commit_metadata_is_kept_in_history(any_lake: Lake):
    any_lake.append(
        "feedback", _feedback(1), metadata={"actor": "alice", "run_id": "r-1", "extra": {"k": [1, 2]}}
    )
    any_lake.append("feedback", _feedback(1, start=1), metadata={"actor": "bob"})
    hist = any_lake.history("feedback")
    assert [h["version"] for h in hist] == [2, 1, 0]  # newest first
    assert hist[0]["actor"] == "bob"
    assert hist[1]["actor"] == "alice" and hist[1]["run_id"] == "r-1"
    assert hist[1]["extra"] == '{"k": [1, 2]}'
    assert any_lake.history("feedback", limit=1)[0]["version"] == 2


def test_maintain_compacts_keeps_data_and_time_travel(any_lake: Lake):
    for i in range(8):
        any_lake.append("data/t", _rows(i * 5, 5), schema=SCHEMA)
    any_lake.append("feedback", _feedback(2))
    expected = any_lake.read("data/t").sort("n")
    assert any_lake.file_count("data/t") == 8
    reports = {r.table: r for r in any_lake.maintain()}
    assert set(reports) == {"data/t", "feedback"}
    rep = reports["data/t"]
    assert (rep.files_before, rep.files_after) == (8, 1)
    assert rep.version == 9 and any_lake.version("data/t") == 9
    assert any_lake.file_count("data/t") == 1
    assert any_lake.read("data/t").sort("n").equals(expected)
    assert any_lake.read("data/t", version=3).height == 15  # old versions are still readable
    assert any_lake.append("data/t", _rows(100, 1)) == 10  # and writers carry on
    with pytest.raises(LakeError, match=">= 24"):
        any_lake.maintain(retention_hours=1)


def test_overwrite_replaces_rows_but_keeps_history(any_lake: Lake):
    any_lake.append("data/t", _rows(0, 3), schema=SCHEMA)
    v = any_lake.overwrite("data/t", _rows(10, 2))
    assert v == 2
    assert sorted(any_lake.read("data/t")["n"].to_list()) == [10, 11]
    assert any_lake.read("data/t", version=1).height == 3
    with pytest.raises(LakeError, match="append-only"):
        any_lake.overwrite("feedback", _feedback(1))


def test_threads_of_one_process_can_share_a_lake(any_lake: Lake):
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(5):
                any_lake.append("feedback", [{"prediction_id": f"w{w}-{i}", "at": utcnow()}])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = any_lake.read("feedback")["prediction_id"].to_list()
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(3) for i in range(5))
    assert any_lake.version("feedback") == 15


# ---------------------------------------------------------------- local-only opening rules
def test_a_lake_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "lake"
    f.write_text("not a folder")
    with pytest.raises(LakeUnavailableError, match="is a file"):
        Lake(f)
    assert f.read_text() == "not a folder"


def test_a_missing_folder_is_created_only_when_asked(tmp_path):
    with pytest.raises(LakeUnavailableError, match="does not exist"):
        Lake(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()
    assert Lake(f"file://{tmp_path / 'yes'}").uri == str(tmp_path / "yes")
    assert (tmp_path / "yes").is_dir()


# ---------------------------------------------------------------- S3 opening rules
@pytest.mark.s3
@pytest.mark.timeout(120)
def test_s3_store_that_drops_if_none_match_is_refused(s3_server):
    from tests.s3server import dropping_proxy, storage_options

    bucket = s3_server.create_bucket("unsafe-store")
    with dropping_proxy(s3_server.endpoint) as proxy:
        with pytest.raises(UnsafeStoreError, match=r"ignores conditional writes \(If-None-Match\)"):
            Lake(f"s3://{bucket}/lake", storage_options(proxy))
        # a reader that will not write may still open it
        reader = Lake(f"s3://{bucket}/lake", storage_options(proxy), check_writes=False)
        assert reader.tables() == []
    # the same bucket straight through moto (which honours If-None-Match) is fine
    lake = Lake(f"s3://{bucket}/lake", s3_server.options)
    assert lake.append("feedback", _feedback(2)) == 1
    left = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="lake/_lakeops/")
    assert left.get("KeyCount", 0) == 0  # the probe cleans up after itself


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_s3_unreachable_endpoint_fails_fast_with_lake_unavailable():
    from tests.s3server import closed_port, storage_options

    with pytest.raises(LakeUnavailableError, match="cannot reach the object store"):
        Lake("s3://bucket/lake", storage_options(f"http://127.0.0.1:{closed_port()}"))


@pytest.mark.s3
def test_s3_missing_bucket_is_named(s3_server):
    with pytest.raises(LakeUnavailableError, match="bucket 'no-such-bucket'"):
        Lake("s3://no-such-bucket/lake", s3_server.options)


@pytest.mark.s3
def test_s3_lake_is_readable_by_a_second_client(s3_server):
    from core.lake import Lake as Lake2

    bucket = s3_server.create_bucket("two-clients")
    a = Lake(f"s3://{bucket}/team/", s3_server.options)
    a.append("feedback", _feedback(3))
    b = Lake2(f"s3://{bucket}/team", s3_server.options)
    assert b.uri == a.uri == f"s3://{bucket}/team"
    assert b.read("feedback").height == 3
    assert b.tables() == ["feedback"]


def test_time_travel_before_the_oldest_kept_log_entry_is_refused(lake: Lake):
    for i in range(3):
        lake.append("data/t", _rows(i, 1), schema=SCHEMA)
        time.sleep(0.02)
    mid = utcnow()
    time.sleep(0.02)
    lake.append("data/t", _rows(3, 1))
    lake.maintain(["data/t"])  # writes a checkpoint, so the oldest log entries may go
    log = lake.list_files("data/t/_delta_log")
    for v in (0, 1):  # what log retention would do to 30-day-old entries
        (Path(lake.uri) / f"data/t/_delta_log/{v:020d}.json").unlink()
    assert len(lake.list_files("data/t/_delta_log")) == len(log) - 2
    assert lake.read("data/t").height == 4
    with pytest.raises(TableNotFoundError, match="has no version at"):  # v3 needs the deleted v0 metadata
        lake.read("data/t", as_of=mid)
    with pytest.raises(TableNotFoundError, match="oldest version still in the log is 2"):
        lake.read("data/t", as_of=mid - timedelta(seconds=30))
