from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

from core import tracking
from core.errors import ArtifactIntegrityError, LakeopsError, RunNotFoundError
from core.lake import Lake
from core.sql import query
from core.tracking import SearchSyntaxError


def _runs(lake: Lake) -> pl.DataFrame:
    return lake.read("runs").sort("at")


def test_run_lifecycle_and_lineage(lake):
    with tracking.start_run("churn", name="base", seed=7, lake=lake) as run:
        run.log_params({"num_leaves": 31, "lr": 0.1, "layers": [1, 2]})
        run.set_tags({"team": "growth"})
        run.log_metric("auc", 0.8)
        run.log_metrics({"auc": 0.85, "loss": 0.3}, step=2)
    tracking.flush(lake)
    rows = _runs(lake)
    assert rows["status"].to_list() == ["running", "finished"]
    assert rows["started_at"].n_unique() == 1 and rows["ended_at"][1] is not None
    info = tracking.get_run(run.run_id, lake=lake)
    assert (info.status, info.experiment, info.name, info.seed) == ("finished", "churn", "base", 7)
    assert info.params == {"num_leaves": "31", "lr": "0.1", "layers": "[1, 2]"}
    assert info.metrics == {"auc": 0.85, "loss": 0.3}
    assert info.tags == {"team": "growth"}
    assert info.python_version.count(".") == 2 and info.host
    assert {"polars", "lightgbm", "deltalake"} <= set(info.packages)
    assert info.git_sha is None or len(info.git_sha) == 40
    latest = query(lake, "select run_id, status from runs")
    assert latest.rows() == [(run.run_id, "finished")]
    with pytest.raises(LakeopsError, match="has ended"):
        run.log_metric("auc", 1.0)


def test_failed_killed_and_nested(lake):
    with pytest.raises(ValueError):
        with tracking.start_run("e", lake=lake) as parent:
            with tracking.start_run("e", lake=lake) as child:
                raise ValueError("bad data in column x")
    with pytest.raises(KeyboardInterrupt):
        with tracking.start_run("e", lake=lake) as killed:
            raise KeyboardInterrupt
    c = tracking.get_run(child.run_id, lake=lake)
    assert c.status == "failed" and c.error == "ValueError: bad data in column x"
    assert c.parent_run_id == parent.run_id
    assert tracking.get_run(parent.run_id, lake=lake).status == "failed"
    assert tracking.get_run(killed.run_id, lake=lake).status == "killed"
    assert tracking.get_run(killed.run_id, lake=lake).parent_run_id is None
    with pytest.raises(RunNotFoundError, match="does-not-exist"):
        tracking.get_run("does-not-exist", lake=lake)


def test_buffering_groups_many_runs_into_one_commit_per_table(lake):
    for i in range(30):
        with tracking.start_run("bulk", name=f"r{i}", lake=lake) as run:
            run.log_params({f"p{j}": j for j in range(3)})
            run.log_metrics({"m": i}, step=0)
    # nothing committed yet (the background writer waits up to FLUSH_INTERVAL_S)...
    before = {t: lake.version(t) if lake.exists(t) else -1 for t in ("runs", "params", "metrics")}
    tracking.flush(lake)
    after = {t: lake.version(t) for t in ("runs", "params", "metrics")}
    commits = sum(after[t] - max(before[t], 0) for t in after)
    assert commits <= 6  # a background flush may have raced us once; never one per run
    assert lake.read("runs").height == 60 and lake.read("params").height == 90
    frame = tracking.search_runs("bulk", max_results=None, lake=lake)
    assert frame.height == 30 and set(frame["status"]) == {"finished"}


def test_step_metrics_all_readable(lake):
    with tracking.start_run("steps", lake=lake) as run:
        for step in range(500):
            run.log_metrics({"a": step, "b": -step}, step=step)
    hist = tracking.metric_history(run.run_id, lake=lake)
    assert hist.height == 1000
    a = hist.filter(pl.col("key") == "a")
    assert a["step"].to_list() == list(range(500)) and a["value"].to_list() == [float(s) for s in range(500)]
    assert tracking.get_run(run.run_id, lake=lake).metrics == {"a": 499.0, "b": -499.0}
    one = tracking.metric_history(run.run_id, "a", lake=lake)  # a string is one key, not letters
    assert one.height == 500 and set(one["key"]) == {"a"}
    assert tracking.metric_history(run.run_id, ["a", "b"], lake=lake).height == 1000


def test_artifacts(lake, tmp_path):
    local = tmp_path / "notes.txt"
    local.write_text("hello")
    with tracking.start_run("art", lake=lake) as run:
        assert run.log_artifact(local, artifact_path="docs") == "docs/notes.txt"
        run.log_artifact("model/model.txt", data=b"tree")
        run.log_dict("model/signature.json", {"a": 1})
        with pytest.raises(LakeopsError, match="invalid"):
            run.log_artifact("../escape", data=b"x")
    assert tracking.read_artifact(run.run_id, "docs/notes.txt", lake=lake) == b"hello"
    assert tracking.read_artifact(run.run_id, "model/model.txt", lake=lake) == b"tree"
    arts = tracking.list_artifacts(run.run_id, lake=lake)
    assert arts["path"].to_list() == ["docs/notes.txt", "model/model.txt", "model/signature.json"]
    lake.put_bytes(f"artifacts/runs/{run.run_id}/model/model.txt", b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        tracking.read_artifact(run.run_id, "model/model.txt", lake=lake)
    with pytest.raises(ArtifactIntegrityError, match="no artifact 'nope'"):
        tracking.read_artifact(run.run_id, "nope", lake=lake)


@pytest.fixture
def searchable(lake):
    for i in range(12):
        with tracking.start_run("s" if i < 10 else "other", name=f"run-{i}", seed=i, lake=lake) as run:
            run.log_params({"num_leaves": 31 if i % 2 else 15, "opt": "adam" if i < 6 else "sgd"})
            run.log_metrics({"auc": 0.5 + i / 100, "valid.loss": 1 - i / 100})
            run.set_tags({"team": "growth-A" if i % 3 == 0 else "risk"})
    return lake


def test_search_filters_and_order(searchable):
    lake = searchable
    f = tracking.search_runs(
        "s", "metrics.auc > 0.55 and params.num_leaves = '31'", ["metrics.auc desc"], lake=lake
    )
    assert f["name"].to_list() == ["run-9", "run-7"]
    assert f["metrics.auc"].to_list() == pytest.approx([0.59, 0.57])
    assert {"params.num_leaves", "params.opt", "tags.team", "metrics.valid.loss"} <= set(f.columns)
    f = tracking.search_runs(["s", "other"], "tags.team LIKE 'growth%'", ["attributes.seed"], lake=lake)
    assert f["seed"].to_list() == [0, 3, 6, 9]
    f = tracking.search_runs(
        None,
        "metrics.valid.loss <= 0.9 and attributes.status = 'FINISHED'",
        ["metrics.`valid.loss`"],
        2,
        lake=lake,
    )
    assert f["name"].to_list() == ["run-11", "run-10"]
    f = tracking.search_runs("s", "params.opt != 'adam' and seed IN (6, 7, 42)", lake=lake)
    assert sorted(f["seed"].to_list()) == [6, 7]
    f = tracking.search_runs("s", "metrics.never_logged > 0", lake=lake)
    assert f.height == 0
    default = tracking.search_runs("s", max_results=3, lake=lake)
    assert default["name"].to_list() == ["run-9", "run-8", "run-7"]  # newest first


def test_search_takes_mlflow_keyword_names(searchable):
    f = tracking.search_runs(
        experiment_names=["s"], filter_string="params.num_leaves = '31'", order_by=["metrics.auc desc"], lake=searchable
    )
    assert f["name"].to_list() == ["run-9", "run-7", "run-5", "run-3", "run-1"]
    with pytest.raises(TypeError, match="filter or filter_string"):
        tracking.search_runs(filter="metrics.auc > 0", filter_string="metrics.auc > 0", lake=searchable)
    with pytest.raises(TypeError, match="experiment or experiment_names"):
        tracking.search_runs("s", experiment_names="s", lake=searchable)


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.auc > 0.5 or 1=1",
        "metrics.auc > '0.5'",
        "params.num_leaves = 31",
        "metrics.auc >> 1",
        "attributes.password = 'x'",
        "metrics.auc > 0.5; drop table runs",
        "__import__('os').system('true')",
    ],
)
def test_search_refuses_bad_filters(searchable, bad):
    with pytest.raises(SearchSyntaxError):
        tracking.search_runs("s", bad, lake=searchable)


def test_crash_loses_only_the_unflushed_buffer(lake):
    script = textwrap.dedent(
        f"""
        import os, sys
        from core import tracking
        from core.lake import Lake
        lake = Lake({lake.uri!r})
        run = tracking.start_run("crash", lake=lake)
        run.log_metrics({{"m": 1.0}}, step=1)
        run.flush()
        run.log_metrics({{"m": 2.0}}, step=2)
        sys.stdout.write(run.run_id + "\\n"); sys.stdout.flush()
        os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=os.getcwd())
    assert proc.returncode == -signal.SIGKILL
    run_id = proc.stdout.strip()
    info = tracking.get_run(run_id, lake=lake)
    assert info.status == "running" and info.metrics == {"m": 1.0}


def test_sql_views_over_tracking_tables(searchable):
    tracking.flush(searchable)
    wide = query(
        searchable,
        "select name, metrics['auc'] as auc, params['num_leaves'] as nl from runs_wide where metrics['auc'] > 0.585 order by name",
    )
    assert wide.rows() == [
        ("run-10", pytest.approx(0.6), "15"),
        ("run-11", pytest.approx(0.61), "31"),
        ("run-9", pytest.approx(0.59), "31"),
    ]
    last = query(searchable, "select count(*) as n from metrics_latest where key = 'auc'")
    assert last["n"][0] == 12


def test_background_writer_commits_without_an_explicit_flush(lake, monkeypatch):
    from core.tracking import _writer

    monkeypatch.setattr(_writer, "FLUSH_POINTS", 100)
    with tracking.start_run("bg", lake=lake) as run:
        for step in range(150):  # crosses FLUSH_POINTS: the writer wakes up and commits
            run.log_metric("x", step, step=step)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if lake.exists("runs") and lake.read("runs").height == 2 and lake.read("metrics").height == 150:
            break
        time.sleep(0.1)
    assert lake.read("metrics").height == 150
    assert lake.read("runs")["status"].sort().to_list() == ["finished", "running"]


def test_sync_run_is_committed_when_the_block_exits(lake):
    with tracking.start_run("sync", sync=True, lake=lake) as run:
        run.log_params({"a": 1})
    assert lake.read("params")["run_id"].to_list() == [run.run_id]
    assert lake.read("runs").sort("at")["status"].to_list() == ["running", "finished"]
