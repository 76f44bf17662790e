"""SQL under resource faults: memory, result size, spill, deadlines, EXPLAIN, and the forms that
used to fail (PIVOT, AT TIME ZONE, time travel by time)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import SqlError, SqlRefusedError, SqlResultTooLargeError
from core.ids import utcnow
from core.lake import Lake
from core.sql import _pool, export, query


def _anon_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


@pytest.fixture
def fed(lake: Lake) -> Lake:
    now = utcnow()
    lake.append("feedback", [{"prediction_id": f"p{i}", "label": float(i % 2), "at": now, "source": f"s{i % 3}"} for i in range(30)])
    return lake


def test_a_huge_single_value_stops_the_worker_and_not_the_caller(fed: Lake):
    before = _anon_bytes()
    with pytest.raises(SqlError, match=r"used more than 300 MB of memory and was stopped \(memory_limit '300MB'"):
        query(fed, "select repeat('x', 2000000000) as s", memory_limit="300MB")
    assert _anon_bytes() - before < 100e6  # the value was never built in this process
    assert query(fed, "select count(*) as n from feedback")["n"].item() == 30  # a fresh worker answers


def test_big_results_are_refused_with_the_way_to_export_them(fed: Lake):
    with pytest.raises(SqlResultTooLargeError, match=r"more than 1,000,000 rows .*--output result.parquet"):
        query(fed, "select * from range(30000000)")
    with pytest.raises(SqlResultTooLargeError, match=r"more than 1,000 rows"):
        query(fed, "select * from feedback a, feedback b, range(100000) c", max_rows=1000)
    with pytest.raises(SqlResultTooLargeError, match=r"more than 1 MB \(max_bytes"):
        query(fed, "select repeat('x', 1000) as s from range(10000)", max_bytes=1_000_000)
    assert query(fed, "select * from range(1000)", max_rows=1000).height == 1000  # at the limit is fine


def test_export_streams_any_size_to_parquet_or_csv(fed: Lake, tmp_path: Path):
    out = tmp_path / "big.parquet"
    assert export(fed, "select range as i, range % 7 as k from range(3000000)", out) == 3_000_000
    table = pq.read_table(out)
    assert table.num_rows == 3_000_000 and table.column("i")[2_999_999].as_py() == 2_999_999
    csv = tmp_path / "fb.csv"
    assert export(fed, "select prediction_id, label from feedback order by prediction_id", csv) == 30
    assert csv.read_text().splitlines()[:2] == ['"prediction_id","label"', '"p0",0']
    with pytest.raises(SqlError, match="syntax error"):
        export(fed, "selec 1", tmp_path / "bad.parquet")
    with pytest.raises(SqlRefusedError):
        export(fed, "copy feedback to '/tmp/x.csv'", tmp_path / "bad.csv")
    with pytest.raises(SqlError, match=r"\.parquet or \.csv"):
        export(fed, "select 1", tmp_path / "x.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["big.parquet", "fb.csv"]


def test_console_queries_never_spill_and_have_no_allowed_directory(fed: Lake, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = query(
        fed, "select current_setting('temp_directory') as t, current_setting('allowed_directories') as d"
    )
    assert settings.row(0) == ("", [])
    with pytest.raises(SqlError, match=r"more memory than its limit \(200MB.*do not spill to disk"):
        query(fed, "select count(*) from (select range, random() as r from range(40000000) order by r)", memory_limit="200MB")
    assert not (tmp_path / ".tmp").exists() and not Path("/.tmp").exists()


def test_a_query_duckdb_cannot_interrupt_is_killed_past_its_deadline(fed: Lake):
    # building one huge string ignores DuckDB's interrupt: the caller kills the worker instead
    query(fed, "select 1")  # a worker is idle in the pool now
    idle = {w.proc.pid for w in _pool._idle}
    with pytest.raises(SqlError, match=r"longer than 0.3 s and was stopped"):
        query(fed, "select repeat('x', 3000000000) as s", memory_limit="16GB", timeout_s=0.3)
    killed = idle - {w.proc.pid for w in _pool._idle}
    assert len(killed) == 1  # the worker that ran it is gone, not back in the pool
    with pytest.raises(ProcessLookupError):
        os.kill(killed.pop(), 0)
    assert query(fed, "select 1 as one")["one"].item() == 1


@pytest.mark.parametrize(
    "sql",
    [
        "explain analyze create table t as select 1",
        "explain analyze create macro m(x) as x + 1",
        "explain analyze checkpoint",
        "explain analyze call pragma_version()",
        "explain analyze copy (select 1) to '/tmp/lakeops-explain.csv'",
        "explain copy feedback to '/tmp/lakeops-explain.csv'",
        "explain (format json) insert into feedback select * from feedback",
    ],
)
def test_explain_checks_the_statement_it_explains(fed: Lake, sql: str):
    before = fed.version("feedback")
    with pytest.raises(SqlRefusedError, match="EXPLAIN of .* statements are refused"):
        query(fed, sql)
    assert fed.version("feedback") == before and not Path("/tmp/lakeops-explain.csv").exists()


def test_explain_of_a_select_still_works(fed: Lake):
    assert query(fed, "explain analyze select count(*) from feedback").height >= 1
    assert query(fed, "explain (format json) select * from feedback").height >= 1


def test_pivot_with_and_without_an_in_list(fed: Lake):
    out = query(fed, "pivot (select source, label from feedback) on source using count(*) order by label")
    assert out.columns == ["label", "s0", "s1", "s2"] and out["s0"].sum() == 10
    listed = query(fed, "pivot feedback on source in ('s1') using count(*) group by label order by label")
    assert listed["s1"].to_list() == [5, 5]


def test_at_time_zone_is_not_taken_for_an_at_column(fed: Lake):
    out = query(fed, "select now() at time zone 'Europe/Paris' as paris, at from feedback limit 1")
    assert out.columns == ["paris", "at"]
    noon = query(fed, "select timestamptz '2026-07-01 12:00:00+00' at time zone 'Europe/Paris' as t")["t"].item()
    assert noon == datetime(2026, 7, 1, 14, 0)  # summer time: UTC+2


def _commit_time(lake: Lake, table: str, version: int) -> datetime:
    stamp = next(h["timestamp"] for h in lake.history(table) if h["version"] == version)
    return datetime.fromtimestamp(stamp / 1000, tz=UTC)


def test_time_travel_by_version_and_by_time(lake: Lake):
    for n in (2, 3):
        lake.append("feedback", [{"prediction_id": f"p{n}-{i}", "at": utcnow()} for i in range(n)])
        time.sleep(0.05)
    first = _commit_time(lake, "feedback", 1)
    assert query(lake, "select count(*) as n from feedback at (version => 1)")["n"].item() == 2
    at_first = f"select count(*) as n from feedback f at (timestamp => '{first.isoformat()}') where f.label is null"
    assert query(lake, at_first)["n"].item() == 2
    naive = first.replace(tzinfo=None).isoformat(sep=" ")  # a time without offset is UTC
    assert query(lake, f"select count(*) as n from feedback at (timestamp => timestamp '{naive}')")["n"].item() == 2
    both = query(
        lake,
        "select (select count(*) from feedback at (version => 1)) as old, (select count(*) from feedback) as now",
    )
    assert both.row(0) == (2, 5)
    assert query(lake, "select feedback.prediction_id from feedback at (version => 1) order by 1 limit 1").item() == "p2-0"
    with pytest.raises(SqlError, match=r"feedback: table 'feedback' did not exist at 2001"):
        query(lake, "select * from feedback at (timestamp => '2001-01-01')")
    with pytest.raises(SqlError, match=r"versions 0-2; asked for 9"):
        query(lake, "select * from feedback at (version => 9)")
    with pytest.raises(SqlError, match=r"literal time"):
        query(lake, "select * from feedback at (timestamp => now() - interval 1 day)")


def test_time_travel_on_a_derived_view_names_the_table_to_use(lake: Lake):
    lake.append("runs", [{"run_id": "r1", "experiment": "e", "status": "running", "at": utcnow()}])
    with pytest.raises(SqlError, match=r"runs is a derived view.*use runs_history"):
        query(lake, "select * from runs at (version => 0)")
    assert query(lake, "select count(*) as n from runs_history at (version => 1)")["n"].item() == 1


def test_a_query_in_flight_keeps_its_snapshot_while_a_later_one_sees_new_rows(fed: Lake):
    fed.append("feedback", [{"prediction_id": "late", "at": utcnow()}])
    assert query(fed, "select count(*) as n from feedback at (version => 1)")["n"].item() == 30
    assert query(fed, "select count(*) as n from feedback")["n"].item() == 31


def test_parameters_and_arrow_types_survive_the_worker(fed: Lake):
    out = query(
        fed,
        "select prediction_id, at, label, [1, 2] as xs, {'a': 1} as st, 1.5::decimal(10, 2) as d "
        "from feedback where prediction_id = ? and label = ?",
        ["p1", 1.0],
    )
    assert out.height == 1 and out["xs"].to_list() == [[1, 2]] and out.schema["at"].time_zone == "UTC"
    assert query(fed, "select * from feedback where 1 = 0").columns[:2] == ["prediction_id", "model"]


def test_snapshots_use_arrow_native_filesystems(fed: Lake):
    import pyarrow.fs as pafs

    ds = fed.snapshot("feedback")
    assert not isinstance(ds.filesystem, pafs.PyFileSystem)
    assert isinstance(ds.filesystem.base_fs, pafs.LocalFileSystem)
    assert ds.to_table().num_rows == 30
    assert pa.Table.from_batches(ds.to_batches()).num_rows == 30


_WRITER = """
import sys, time
from pathlib import Path
from core.ids import utcnow
from core.lake import Lake
lake, stop, me = Lake(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
i = 0
while not stop.exists():
    lake.append("feedback", [{"prediction_id": f"{me}-{i}", "at": utcnow()}])
    i += 1
    time.sleep(0.05)
print(i)
"""


@pytest.mark.slow
def test_queries_on_a_many_file_table_while_four_writers_append(lake: Lake, tmp_path: Path):
    """The once-seen deadlock (a Python filesystem on the query path) under its conditions."""
    import subprocess
    import sys

    for i in range(100):  # a table of many small files, as before any compaction
        lake.append("feedback", [{"prediction_id": f"seed-{i}", "at": utcnow()}])
    stop = tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, lake.uri, str(stop), f"w{k}"], env=env, stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    seen = []
    try:
        for _ in range(40):
            seen.append(query(lake, "select count(*) as n, count(distinct prediction_id) as d from feedback", timeout_s=30).row(0))
    finally:
        stop.touch()
        appended = sum(int(w.communicate(timeout=120)[0]) for w in writers)
    counts = [n for n, _ in seen]
    assert all(n == d for n, d in seen)  # every snapshot is whole: no row twice
    assert counts == sorted(counts) and counts[0] >= 100 and appended > 0
    assert query(lake, "select count(*) as n from feedback")["n"].item() == 100 + appended
