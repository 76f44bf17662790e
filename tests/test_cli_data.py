import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from core import demo
from core.cli import run


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    f = demo.generate(3_000, seed=5)
    out = {"a": tmp_path / "a.csv", "b": tmp_path / "b.parquet", "bad": tmp_path / "bad.csv", "spec": tmp_path / "spec.toml"}
    f.head(2_000).write_csv(out["a"])
    f.tail(1_000).write_parquet(out["b"])
    f.head(50).with_columns(pl.col("age") + 200).write_csv(out["bad"])
    out["spec"].write_text('unique = ["customer_id"]\n[ranges]\nage = { min = 18, max = 120 }\n')
    return out


def test_ingest_list_show_diff_quarantine(tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    lake = ["--lake", str(tmp_path / "lake")]
    assert run(["data", "ingest", "churn", str(files["a"]), "--spec", str(files["spec"]), *lake]) == 0
    assert "dataset churn: version 1 (2,000 rows appended, 2,000 in total), validation passed" in capsys.readouterr().out
    assert run(["data", "ingest", "churn", str(files["b"]), "--spec", str(files["spec"]), *lake]) == 0
    out = capsys.readouterr().out
    assert "version 2 (1,000 rows appended, 3,000 in total), validation warned" in out
    assert "WARN domain(plan)" in out

    assert run(["data", "ingest", "churn", str(files["bad"]), "--spec", str(files["spec"]), *lake]) == 2
    err = capsys.readouterr().err
    assert "broke 2 rule(s); not written, kept as quarantine" in err
    assert "ERROR unique: expected unique (customer_id)" in err and "(50 rows)" in err
    assert "ERROR range(age): expected within [18, 120], found [2" in err

    assert run(["data", "list", *lake]) == 0
    out = capsys.readouterr().out
    assert "churn" in out and "warned" in out and "3000" in out

    assert run(["data", "show", "churn", "--version", "1", *lake]) == 0
    out = capsys.readouterr().out
    assert "dataset churn version 1" in out and "validation passed" in out and "from a.csv" in out
    assert "monthly_charges" in out and "numeric" in out
    assert run(["data", "show", "churn", *lake]) == 0
    assert "(reference version 1)" in capsys.readouterr().out
    assert run(["data", "show", "churn", "--versions", *lake]) == 0
    assert "b.parquet" in capsys.readouterr().out

    assert run(["data", "diff", "churn", "1", "2", *lake]) == 0
    out = capsys.readouterr().out
    assert "rows added 1,000, removed 0" in out and "schema unchanged" in out and "signup_channel" in out

    assert run(["data", "quarantine", *lake]) == 0
    out = capsys.readouterr().out
    qid = out.splitlines()[2].split()[0]
    assert "bad.csv" in out
    assert run(["data", "quarantine", "churn", "--id", qid, *lake]) == 0
    assert "ERROR range(age)" in capsys.readouterr().out
    assert run(["data", "quarantine", "--id", "nope", *lake]) == 2
    assert "no quarantined batch 'nope'" in capsys.readouterr().err


def test_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    lake = ["--lake", str(tmp_path / "lake")]
    (tmp_path / "semi.csv").write_text("a;b\n1;2\n")
    assert run(["data", "ingest", "x", str(tmp_path / "semi.csv"), *lake]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--delimiter ';'" in err
    assert run(["data", "ingest", "x", str(tmp_path / "semi.csv"), "--delimiter", ";", *lake]) == 0
    capsys.readouterr()
    assert run(["data", "show", "nope", *lake]) == 2
    assert "dataset 'nope' does not exist" in capsys.readouterr().err
    assert run(["data", "show", "x", "--version", "7", *lake]) == 2
    assert "has versions 1; asked for 7" in capsys.readouterr().err
    assert run(["data", *lake]) == 2


def test_end_to_end_subprocess(tmp_path: Path, files: dict[str, Path]):
    env = {**os.environ, "LAKEOPS_LAKE": str(tmp_path / "lake")}
    cmd = [sys.executable, "-c", "from core.cli import main; main()"]
    ok = subprocess.run([*cmd, "data", "ingest", "churn", str(files["a"]), "--mode", "replace"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "version 1" in ok.stdout
    bad = subprocess.run([*cmd, "data", "ingest", "churn", str(files["bad"]), "--spec", str(files["spec"])], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "ERROR range(age)" in bad.stderr
