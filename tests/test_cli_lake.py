"""``lakeops sql|tables|history|maintain``: output formats, and one clear line + exit 2 on bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from core.cli import run
from core.ids import utcnow
from core.lake import Lake

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("city", pa.string())])


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("LAKEOPS_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)  # no ./lakeops.toml, no default data/lake


@pytest.fixture
def filled(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for i in range(3):
        lake.append(
            "feedback",
            [{"prediction_id": f"p{i}", "label": 1.0, "at": utcnow()}],
            metadata={"actor": "cli-test"},
        )
    lake.append("data/churn", [{"id": 1, "city": "Lyon, FR"}, {"id": 2, "city": None}], schema=SCHEMA)
    return lake


def _snapshot(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")} if path.exists() else {}


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lakeops: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_sql_prints_an_aligned_table(filled: Lake, capsys):
    assert run(["--lake", filled.uri, "sql", "select id, city from data_churn order by id"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "city"]
    assert set(out[1]) <= {"-", " "}
    assert out[2].split() == ["1", "Lyon,", "FR"] and out[3].split() == ["2", "NULL"]
    assert out[-1] == "(2 rows)"


def test_sql_lake_option_may_follow_the_subcommand(filled: Lake, capsys):
    assert run(["sql", "select count(*) as n from feedback", "--lake", filled.uri, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 3}]


def test_sql_csv_and_json_parse_back(filled: Lake, capsys):
    q = "select id, city from data_churn order by id"
    assert run(["--lake", filled.uri, "sql", q, "--format", "csv"]) == 0
    frame = pl.read_csv(io.StringIO(capsys.readouterr().out))
    assert frame.rows() == [(1, "Lyon, FR"), (2, None)]
    assert run(["--lake", filled.uri, "sql", q, "--format", "json"]) == 0
    assert pl.DataFrame(json.loads(capsys.readouterr().out)).rows() == [(1, "Lyon, FR"), (2, None)]
    assert (
        run(
            ["--lake", filled.uri, "sql", "select * from feedback order by prediction_id", "--format", "json"]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["prediction_id"] for r in rows] == ["p0", "p1", "p2"]


def test_sql_parquet_on_stdout_parses_back(filled: Lake):
    r = subprocess.run(
        [
            "lakeops",
            "--lake",
            filled.uri,
            "sql",
            "select * from feedback order by prediction_id",
            "--format",
            "parquet",
        ],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    frame = pl.read_parquet(io.BytesIO(r.stdout))
    assert frame["prediction_id"].to_list() == ["p0", "p1", "p2"]
    assert frame.schema["at"] == pl.Datetime("us", "UTC")


def test_tables_lists_tables_with_versions_and_files(filled: Lake, capsys):
    assert run(["--lake", filled.uri, "tables"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["table", "sql_name", "version", "files"]
    assert out[2].split() == ["data/churn", "data_churn", "1", "1"]
    assert out[3].split() == ["feedback", "feedback", "3", "3"]


def test_history_shows_commit_metadata(filled: Lake, capsys):
    assert run(["--lake", filled.uri, "history", "feedback", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "cli-test" in out and "(2 rows)" in out
    assert out.splitlines()[2].split()[0] == "3"  # newest first


def test_maintain_compacts(filled: Lake, capsys):
    assert run(["--lake", filled.uri, "maintain", "feedback"]) == 0
    assert "feedback: files 3 -> 1" in capsys.readouterr().out
    assert filled.file_count("feedback") == 1
    assert filled.read("feedback").height == 3
    assert run(["--lake", filled.uri, "maintain", "--retention-hours", "1"]) == 2
    _one_error_line(capsys.readouterr().err, ">= 24")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sql", "select * from nosuch"], ["nosuch"]),
        (["sql", "selec 1"], ["syntax error"]),
        (["sql", "select * from read_csv('/etc/passwd')"], ["refused"]),
        (["sql", "copy feedback to 'out.csv'"], ["read-only"]),
        (["sql", "select 1; select 2"], ["one statement"]),
        (["history", "nosuch"], ["'nosuch' does not exist"]),
        (["history", "../x"], ["invalid"]),
        (["maintain", "nosuch"], ["nosuch"]),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(
    filled: Lake, capsys, tmp_path: Path, args, needles
):
    before = _snapshot(tmp_path)
    assert run(["--lake", filled.uri, *args]) == 2
    cap = capsys.readouterr()
    _one_error_line(cap.err, *needles)
    assert cap.out == ""
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "out.csv").exists()


def test_lake_path_that_is_a_file(tmp_path: Path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert run(["--lake", str(f), "tables"]) == 2
    _one_error_line(capsys.readouterr().err, "is a file")
    assert f.read_text() == "x"


def test_missing_lake_folder_is_not_created_by_reading(tmp_path: Path, capsys):
    assert run(["--lake", str(tmp_path / "nolake"), "sql", "select 1"]) == 2
    _one_error_line(capsys.readouterr().err, "does not exist")
    assert not (tmp_path / "nolake").exists()


def test_no_command_and_unknown_command_exit_2(capsys):
    assert run([]) == 2
    assert run(["nosuchcommand"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_lists_the_lake_commands(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("sql", "tables", "history", "maintain"):
        assert cmd in out


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_unreachable_s3_endpoint_one_line_exit_2(monkeypatch: pytest.MonkeyPatch):
    from tests.s3server import closed_port

    env = dict(os.environ)
    env.update(
        LAKEOPS_S3_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        LAKEOPS_S3_ACCESS_KEY="k",
        LAKEOPS_S3_SECRET_KEY="s",
        LAKEOPS_S3_ALLOW_HTTP="true",
    )
    for args in (["sql", "select 1"], ["tables"]):
        r = subprocess.run(
            ["lakeops", "--lake", "s3://bucket/x", *args],
            capture_output=True,
            text=True,
            timeout=100,
            env=env,
        )
        assert r.returncode == 2
        _one_error_line(r.stderr, "s3://bucket/x", "cannot reach")
        assert r.stdout == ""


@pytest.mark.s3
def test_sql_against_an_s3_lake(s3_server, monkeypatch: pytest.MonkeyPatch, capsys):
    bucket = s3_server.create_bucket("cli-lake")
    Lake(f"s3://{bucket}/team", s3_server.options).append(
        "feedback", [{"prediction_id": "p", "at": utcnow()}]
    )
    monkeypatch.setenv("LAKEOPS_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("LAKEOPS_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("LAKEOPS_S3_SECRET_KEY", "testing")
    monkeypatch.setenv("LAKEOPS_S3_ALLOW_HTTP", "true")
    assert (
        run(["--lake", f"s3://{bucket}/team", "sql", "select count(*) as n from feedback", "--format", "csv"])
        == 0
    )
    assert capsys.readouterr().out == "n\n1\n"
    assert run(["--lake", f"s3://{bucket}/team", "sql", "select * from nosuch"]) == 2
    _one_error_line(capsys.readouterr().err, "nosuch")


def test_sql_refuses_a_result_over_max_rows_and_exports_it_with_output(filled: Lake, tmp_path: Path, capsys):
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text("[sql]\nmax_rows = 2\n")
    base = ["--lake", filled.uri, "--config", str(cfg), "sql", "select * from feedback order by prediction_id"]
    assert run(base) == 2
    _one_error_line(capsys.readouterr().err, "more than 2 rows", "--output result.parquet")
    out = tmp_path / "all.parquet"
    assert run([*base, "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 3 rows to {out}"
    assert pl.read_parquet(out)["prediction_id"].to_list() == ["p0", "p1", "p2"]
    assert run([*base, "--output", str(tmp_path / "x.txt")]) == 2
    _one_error_line(capsys.readouterr().err, "use a .parquet or .csv file name")
