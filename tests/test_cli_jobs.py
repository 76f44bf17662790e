"""``lakeops jobs list|run|history`` in-process, and ``lakeops scheduler`` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl

from core.cli import run
from core.jobruns import current_holder, history
from core.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
TOML = """
[jobs]
lease_ttl_s = 3
[jobs.drift_check]
enabled = false
[jobs.extra.tick]
func = "jobfuncs:tick"
interval_s = 1
[jobs.extra.boom]
func = "jobfuncs:boom"
"""


def _args(tmp_path: Path, *rest: str) -> list[str]:
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text(TOML)
    return ["--lake", str(tmp_path / "lake"), "--config", str(cfg), *rest]


def test_jobs_run_list_history(tmp_path, capsys):
    assert run(_args(tmp_path, "jobs", "run", "tick")) == 0
    out = capsys.readouterr().out
    assert out.startswith("job tick finished in ") and '"trigger": "manual"' in out

    assert run(_args(tmp_path, "jobs", "run", "boom")) == 1
    err = capsys.readouterr().err
    assert "lakeops: job boom failed: RuntimeError: boom: this job always fails" in err

    assert run(_args(tmp_path, "jobs", "list", "--format", "json")) == 0
    rows = {r["job"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"drift_check", "performance_check", "retrain", "rollout", "maintenance", "compact", "tick", "boom"}
    assert rows["tick"]["schedule"] == "every 1s" and rows["tick"]["last_status"] == "finished"
    assert rows["boom"]["schedule"] == "manual" and rows["boom"]["last_status"] == "failed"
    assert rows["drift_check"]["enabled"] is False and rows["maintenance"]["schedule"] == "cron 30 2 * * *"

    assert run(_args(tmp_path, "jobs", "history", "--job", "boom")) == 0
    table = capsys.readouterr().out
    assert "RuntimeError: boom" in table and "(1 row)" in table and "tick" not in table
    assert run(_args(tmp_path, "jobs", "history", "--format", "json")) == 0
    assert [r["job"] for r in json.loads(capsys.readouterr().out)] == ["boom", "tick"]


def test_jobs_run_unknown_name_is_one_line_exit_2(tmp_path, capsys):
    assert run(_args(tmp_path, "jobs", "run", "nope")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lakeops: error: no job named 'nope'; jobs: drift_check, performance_check, retrain, rollout, maintenance, compact, tick, boom"


def test_lakeops_scheduler_runs_jobs_and_stops_on_sigint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(["lakeops", *_args(tmp_path, "scheduler")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lake = Lake(tmp_path / "lake")
        deadline = time.monotonic() + 60
        while history("tick", lake=lake).filter(pl.col("status") == "finished").height < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "no tick ran"
            time.sleep(0.2)
        assert current_holder(lake=lake).info["pid"] == proc.pid  # exec'd: the same process
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert current_holder(lake=lake) is None
        assert set(history(lake=lake)["trigger"].to_list()) == {"schedule"}
    finally:
        if proc.poll() is None:
            proc.kill()
