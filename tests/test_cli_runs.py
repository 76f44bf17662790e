from __future__ import annotations

import subprocess

import pytest

from core import datasets, demo, tracking
from core.cli import run


@pytest.fixture
def cli_lake(lake, tmp_path, settings):
    datasets.ingest("churn", demo.generate(n=900), lake=lake, settings=settings)
    params = tmp_path / "params.toml"
    params.write_text("[params]\nnum_iterations = 20\nnum_leaves = 7\nmin_data_in_leaf = 10\n")
    return lake, params


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_list_show_compare_reproduce(cli_lake, capsys):
    lake, params = cli_lake
    code, out, err = _run(
        capsys,
        "train",
        "--lake",
        lake.uri,
        "--dataset",
        "churn@1",
        "--target",
        "churned",
        "--params",
        str(params),
        "--seed",
        "4",
    )
    assert code == 0, err
    assert "finished: dataset churn@v1" in out and "auc" in out
    code, _, err = _run(
        capsys,
        "train",
        "--lake",
        lake.uri,
        "--dataset",
        "churn",
        "--target",
        "churned",
        "--params",
        str(params),
        "--time-column",
        "none",
        "--experiment",
        "other",
    )
    assert code == 0, err
    ids = tracking.search_runs(order_by=["attributes.started_at"], lake=lake)["run_id"].to_list()
    assert len(ids) == 2

    code, out, _ = _run(capsys, "runs", "list", "--lake", lake.uri, "--experiment", "churn")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["run_id", "experiment", "name", "status"]
    assert ids[0] in out and ids[1] not in out and "metrics.auc" in lines[0] and "(1 row)" in out
    code, out, _ = _run(
        capsys, "runs", "list", "--lake", lake.uri, "--filter", "params.split_method = 'stratified'"
    )
    assert ids[1] in out and ids[0] not in out

    code, out, _ = _run(capsys, "runs", "show", ids[0], "--lake", lake.uri)
    assert code == 0
    for text in (
        "dataset        churn@v1",
        "git_sha",
        "python",
        "lightgbm=",
        "num_leaves",
        "model/model.txt",
        "model_sha256",
    ):
        assert text in out

    code, out, _ = _run(capsys, "runs", "compare", ids[0], ids[1], "--lake", lake.uri)
    assert code == 0 and "split_method" in out and "stratified" in out and "time" in out
    assert "num_leaves" not in out  # same in both runs: hidden without --all

    code, out, _ = _run(capsys, "runs", "reproduce", ids[0], "--lake", lake.uri)
    assert code == 0 and out.startswith("MATCH: run " + ids[0])


def test_bad_input_exits_2_with_one_line(cli_lake, capsys, tmp_path):
    lake, _ = cli_lake
    bad = tmp_path / "bad.toml"
    bad.write_text("num_leafz = 3\n")
    cases = [
        (
            ["--dataset", "churn", "--target", "churned", "--params", str(bad)],
            "unknown training parameter 'num_leafz'",
        ),
        (["--dataset", "nope", "--target", "churned"], "dataset 'nope' does not exist"),
        (["--dataset", "churn@9", "--target", "churned"], "versions 1-1; asked for 9"),
        (["--dataset", "churn", "--target", "gone"], "target 'gone' is not a column"),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, "train", "--lake", lake.uri, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "runs", "show", "missing-run", "--lake", lake.uri)
    assert code == 2 and "run 'missing-run' does not exist" in err
    code, _, err = _run(capsys, "runs", "list", "--lake", lake.uri, "--filter", "metrics.auc > 1 or 1=1")
    assert code == 2 and "OR is not supported" in err
    assert not lake.exists("runs")


def test_lakeops_process_end_to_end(cli_lake):
    lake, params = cli_lake
    proc = subprocess.run(
        [
            "lakeops",
            "train",
            "--lake",
            lake.uri,
            "--dataset",
            "churn",
            "--target",
            "churned",
            "--params",
            str(params),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.split()[1]
    assert tracking.get_run(run_id, lake=lake).status == "finished"
