"""Read-only sandboxed SQL over lake snapshots (DuckDB), on a local lake and on S3 where it matters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from core.catalog import prediction_common_fields
from core.errors import SqlError, SqlRefusedError
from core.ids import utcnow
from core.lake import Lake
from core.sql import query, query_arrow, view_name, views

DATA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("city", pa.string())])
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _pred_schema(*features: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(prediction_common_fields() + [pa.field(n, t) for n, t in features])


def _preds(n: int, version: int, start: int = 0, **features: list) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        at = T0 + timedelta(hours=12 * i)
        row = {
            "prediction_id": f"p{version}-{i}",
            "at": at,
            "day": at.date(),
            "model_version": version,
            "score": i / 100,
        }
        row.update({k: v[i - start] for k, v in features.items()})
        rows.append(row)
    return rows


def _seed(lk: Lake) -> Lake:
    """Fill ``lk`` with feedback, a dataset in two versions, two prediction logs and runs."""
    lk.append(
        "feedback", [{"prediction_id": f"p{i}", "label": float(i % 2), "at": utcnow()} for i in range(6)]
    )
    lk.append("data/churn", [{"id": i, "city": "a"} for i in range(3)], schema=DATA)
    lk.append("data/churn", [{"id": i, "city": "b"} for i in range(3, 5)])
    lk.append(
        "predictions/churn",
        _preds(4, 1, tenure=[1.0, 2.0, 3.0, 4.0]),
        schema=_pred_schema(("tenure", pa.float64())),
        partition_by=["day"],
    )
    lk.append("predictions/churn", _preds(2, 2, start=4, tenure=[5.0, 6.0]))
    lk.append(
        "predictions/price",
        _preds(3, 7, plan=["x", "y", "z"]),
        schema=_pred_schema(("plan", pa.string())),
        partition_by=["day"],
    )
    base = {"experiment": "e", "at": T0}
    lk.append("runs", [dict(base, run_id="r1", status="running"), dict(base, run_id="r2", status="running")])
    lk.append("runs", [dict(base, run_id="r1", status="finished", at=T0 + timedelta(minutes=5))])
    return lk


@pytest.fixture
def seeded(any_lake: Lake) -> Lake:
    return _seed(any_lake)


@pytest.fixture(scope="module")
def local_seeded(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """One seeded local lake for the tests that must leave it unchanged."""
    return _seed(Lake(tmp_path_factory.mktemp("sql") / "lake"))


def _versions(lk: Lake) -> dict[str, int]:
    return {t: lk.version(t) for t in lk.tables()}


def test_every_table_is_a_view(seeded: Lake):
    assert query(seeded, "select count(*) as n from feedback")["n"].item() == 6
    assert query(seeded, "select count(*) as n from data_churn")["n"].item() == 5
    assert query(seeded, "select sum(tenure) as s from predictions_churn")["s"].item() == 21.0
    assert query(seeded, "select count(*) as n from predictions_price where plan = ?", ["y"])["n"].item() == 1
    names = views(seeded)
    for v in (
        "feedback",
        "data_churn",
        "predictions_churn",
        "predictions_price",
        "runs",
        "predictions",
        "runs_history",
    ):
        assert v in names
    assert names["data_churn"] == "data/churn"
    assert view_name("data/my-set") == "data_my_set"


def test_predictions_view_unions_every_model_on_common_columns(seeded: Lake):
    out = query(
        seeded,
        "select model, count(*) as n, max(model_version) as v from predictions group by model order by model",
    )
    assert out.rows() == [("churn", 6, 2), ("price", 3, 7)]
    cols = query(seeded, "select * from predictions limit 1").columns
    assert cols[:2] == ["model", "prediction_id"] and "tenure" not in cols and "plan" not in cols
    by_day = query(seeded, "select day, count(*) as n from predictions group by day order by day")
    assert by_day["day"].to_list()[0] == date(2026, 5, 1) and by_day["n"].sum() == 9


def test_runs_is_the_latest_state_and_runs_history_every_change(seeded: Lake):
    out = query(seeded, "select run_id, status from runs order by run_id")
    assert out.rows() == [("r1", "finished"), ("r2", "running")]
    assert query(seeded, "select count(*) as n from runs_history")["n"].item() == 3
    assert views(seeded)["runs_history"] == "runs" and "latest state" in views(seeded)["runs"]
    # a join on run_id no longer doubles counts: one row per run
    joined = query(seeded, "select count(*) as n from runs r join runs_history h using (run_id)")
    assert joined["n"].item() == 3


def test_dataset_versions_are_views(seeded: Lake):
    assert query(seeded, "select count(*) as n from data_churn_v1")["n"].item() == 3
    assert query(seeded, "select count(*) as n from data_churn_v2")["n"].item() == 5
    both = query(
        seeded, "select (select count(*) from data_churn_v1) as a, (select count(*) from data_churn) as b"
    )
    assert both.row(0) == (3, 5)
    with pytest.raises(SqlError, match=r"data_churn_v9.*versions 0-2; asked for 9"):
        query(seeded, "select * from data_churn_v9")


def test_a_query_sees_one_snapshot(seeded: Lake):
    before = query_arrow(seeded, "select * from feedback")
    seeded.append("feedback", [{"prediction_id": "new", "at": utcnow()}])
    assert before.num_rows == 6
    assert query(seeded, "select count(*) as n from feedback")["n"].item() == 7


REFUSED = [
    "select * from read_csv('/etc/passwd')",
    "select * from read_text('/etc/passwd')",
    "select * from read_parquet('/tmp/*.parquet')",
    "select * from glob('/etc/*')",
    "copy feedback to '/tmp/lakeops-leak.csv'",
    "copy (select 1) to '/tmp/lakeops-leak.csv'",
    "attach '/tmp/lakeops-other.duckdb' as other",
    "install httpfs",
    "load httpfs",
    "set memory_limit = '100GB'",
    "set enable_external_access = true",
    "pragma threads=64",
    "insert into feedback values ('x', 'm', 1.0, now(), 's')",
    "create table t as select 1",
    "create view v as select 1",
    "drop view feedback",
    "delete from feedback",
    "update feedback set label = 0",
    "create secret s (type s3, key_id 'a', secret 'b')",
    "select 1; select 2",
    "select 1; drop view feedback",
    "export database '/tmp/lakeops-export'",
    "call pragma_version()",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused_statements_leave_the_lake_untouched(local_seeded: Lake, sql: str):
    before = _versions(local_seeded)
    with pytest.raises(SqlRefusedError) as err:
        query(local_seeded, sql)
    assert str(err.value) and "\n" not in str(err.value)
    assert _versions(local_seeded) == before
    assert query(local_seeded, "select count(*) as n from feedback")["n"].item() == 6
    assert query(local_seeded, "select count(*) as n from data_churn")["n"].item() == 5


def test_refusals_on_s3_too(seeded: Lake):
    before = _versions(seeded)
    for sql in (
        "select * from read_csv('/etc/passwd')",
        "copy feedback to '/tmp/x.csv'",
        "drop view feedback",
    ):
        with pytest.raises(SqlRefusedError):
            query(seeded, sql)
    assert _versions(seeded) == before


def test_refused_file_reads_name_the_reason(lake: Lake):
    with pytest.raises(SqlRefusedError, match="cannot touch files"):
        query(lake, "select * from read_csv('/etc/passwd')")
    with pytest.raises(SqlRefusedError, match="one statement per query, got 2"):
        query(lake, "select 1; select 2")
    with pytest.raises(SqlRefusedError, match="read-only"):
        query(lake, "insert into x values (1)")


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("selec 1", "syntax error"),
        ("select * from nosuch_table", "nosuch_table"),
        ("select nosuch_column from feedback", "nosuch_column"),
        ("", "empty"),
        ("select 'unterminated", "unterminated"),
    ],
)
def test_bad_queries_raise_sql_error_naming_the_problem(local_seeded: Lake, sql: str, needle: str):
    with pytest.raises(SqlError) as err:
        query(local_seeded, sql)
    assert needle.lower() in str(err.value).lower()


def test_unknown_table_lists_what_is_queryable(local_seeded: Lake):
    with pytest.raises(SqlError, match=r"nosuch.*queryable: .*data_churn.*feedback"):
        query(local_seeded, "select * from nosuch")


def test_queries_on_an_empty_lake(lake: Lake):
    assert query(lake, "select 1 as one")["one"].item() == 1
    with pytest.raises(SqlError, match="no tables yet"):
        query(lake, "select * from feedback")


def test_a_long_query_is_interrupted(lake: Lake):
    with pytest.raises(SqlError, match=r"longer than 0.5 s"):
        query(
            lake,
            "select sum(a.range * b.range) from range(200000) a, range(200000) b",
            timeout_s=0.5,
            threads=1,
        )
    assert query(lake, "select 2 as two")["two"].item() == 2  # the next query is unaffected


def test_describe_show_and_explain_are_allowed(local_seeded: Lake):
    assert "prediction_id" in query(local_seeded, "describe feedback")["column_name"].to_list()
    assert query(local_seeded, "explain select * from feedback").height >= 1
    summary = query(local_seeded, "summarize data_churn")
    assert set(summary["column_name"].to_list()) == {"id", "city"}


def test_versioned_views_of_datasets_with_dashes_and_capitals(lake: Lake):
    schema = pa.schema([pa.field("id", pa.int64())])
    lake.append("data/my-set", [{"id": 1}], schema=schema)
    lake.append("data/my-set", [{"id": 2}])
    lake.append("data/Big", [{"id": 3}], schema=schema)
    assert query(lake, "select count(*) as n from data_my_set_v1")["n"].item() == 1
    assert query(lake, "select count(*) as n from data_my_set")["n"].item() == 2
    assert query(lake, "select id from data_big_v1")["id"].item() == 3


def test_sql_works_in_utc_whatever_the_host_time_zone(tmp_path):
    import subprocess
    import sys

    lake = Lake(tmp_path / "lake")
    lake.append("feedback", [{"prediction_id": "late", "at": datetime(2026, 5, 1, 23, 30, tzinfo=UTC)}])
    code = (
        "import sys\n"
        "from core.lake import Lake\n"
        "from core.sql import query\n"
        'f = query(Lake(sys.argv[1]), \'select "at", "at"::date as d, hour("at") as h from feedback\')\n'
        "print(f.schema['at'].time_zone, f['d'][0], f['h'][0])\n"
    )
    env = dict(__import__("os").environ, TZ="America/New_York")
    r = subprocess.run(
        [sys.executable, "-c", code, lake.uri], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["UTC", "2026-05-01", "23"]
