"""The scheduler (jobs/): one per lake through the lease, takeover after kill -9, clean stop, job mechanics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from core.config import load_settings
from core.errors import ConfigError
from core.jobruns import current_holder, history
from core.lake import Lake
from jobs import Scheduler

ROOT = Path(__file__).resolve().parents[1]
TOML = """
[jobs]
lease_ttl_s = 5
stop_grace_s = 8
[jobs.drift_check]
enabled = false
[jobs.performance_check]
enabled = false
[jobs.maintenance]
enabled = false
[jobs.compact]
enabled = false
[jobs.retrain]
enabled = false
[jobs.rollout]
enabled = false
[jobs.extra.tick]
func = "jobfuncs:tick"
interval_s = 1
[jobs.extra.boom]
func = "jobfuncs:boom"
interval_s = 1
[jobs.extra.sleepy]
func = "jobfuncs:sleepy"
interval_s = 0.5
args = {seconds = 1.5}
"""


def _config(tmp_path: Path, toml: str = TOML) -> Path:
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text(toml)
    return cfg


def _start(lake_dir: Path, cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", "--lake", str(lake_dir), "--config", str(cfg)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _holder_pid(lake: Lake) -> int | None:
    try:
        holder = current_holder(lake=lake)
    except Exception:
        return None
    return holder.info.get("pid") if holder else None


def _runs(lake: Lake) -> pl.DataFrame:
    return history(lake=lake)


def test_second_scheduler_waits_then_takes_over_after_kill9(tmp_path):
    cfg, lake_dir = _config(tmp_path), tmp_path / "lake"
    first = _start(lake_dir, cfg)
    second = None
    try:
        lake = Lake(lake_dir)
        _wait(lambda: _holder_pid(lake) == first.pid, 60, "the first scheduler to hold the lease")
        second = _start(lake_dir, cfg)
        _wait(lambda: _runs(lake).filter(pl.col("job") == "tick").height >= 4, 60, "tick runs of the first scheduler")
        time.sleep(3)  # the second one is up by now, and waiting
        assert second.poll() is None and _holder_pid(lake) == first.pid
        assert set(_runs(lake)["pid"].to_list()) == {first.pid}  # only the holder ran jobs

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.time()
        _wait(lambda: _holder_pid(lake) == second.pid, 60, "the second scheduler to take over")
        holder = current_holder(lake=lake)
        assert holder.epoch == 2
        _wait(lambda: _runs(lake).filter((pl.col("pid") == second.pid) & (pl.col("job") == "tick")).height >= 2, 60, "ticks of the second")
        runs = _runs(lake)
        by_first = runs.filter(pl.col("pid") == first.pid)
        by_second = runs.filter((pl.col("pid") == second.pid) & (pl.col("status") != "abandoned"))
        # executions never overlap between holders: the second started only after taking the lease
        assert by_first["started_at"].max() < holder.acquired_at <= by_second["started_at"].min()
        assert holder.acquired_at.timestamp() > killed_at  # it waited for the lease to expire
        # what the dead scheduler left running was closed by the new one
        assert runs.filter((pl.col("status") == "running") & (pl.col("pid") == first.pid)).height == 0
        assert set(by_first["status"].to_list()) <= {"finished", "failed", "abandoned"}

        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert current_holder(lake=lake) is None  # released on a clean stop
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()


@pytest.mark.parametrize(("grace", "sleep", "final"), [(8, 1.5, "finished"), (0.5, 6, "interrupted")])
def test_sigterm_finishes_the_running_job_releases_the_lease_and_exits_0(tmp_path, grace, sleep, final):
    toml = TOML.replace("stop_grace_s = 8", f"stop_grace_s = {grace}").replace("seconds = 1.5", f"seconds = {sleep}")
    cfg, lake_dir = _config(tmp_path, toml), tmp_path / "lake"
    proc = _start(lake_dir, cfg)
    try:
        lake = Lake(lake_dir)
        running = lambda: _runs(lake).filter((pl.col("job") == "sleepy") & (pl.col("status") == "running"))  # noqa: E731
        _wait(lambda: running().height == 1 and _runs(lake).filter(pl.col("job") == "boom").height >= 2, 60, "sleepy running")
        run_id = running()["job_run_id"][0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read()
        runs = _runs(lake)
        assert runs.filter(pl.col("job_run_id") == run_id)["status"][0] == final
        assert runs.filter(pl.col("status") == "running").height == 0
        assert current_holder(lake=lake) is None
        assert "scheduler stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_scheduler_in_process_one_run_at_a_time_failures_recorded_and_keeps_going(tmp_path):
    from core.monitoring import raise_alert

    toml = TOML.replace("[jobs.maintenance]\nenabled = false", "[jobs.maintenance]\ninterval_s = 1.5\ncron = \"0 3 * * *\"")
    toml = toml.replace("stop_grace_s = 8", "stop_grace_s = 8\nalert_poll_s = 0.5")
    toml += "[jobs.extra.responder]\nfunc = \"jobfuncs:tick\"\non_alert = true\n"
    settings = load_settings(env={}, config_path=_config(tmp_path, toml), lake_uri=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    raise_alert("drift", "churn", message="drifted", evidence={}, lake=lake, settings=settings)
    sched = Scheduler(settings, lake=lake)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(sched.run()))
    thread.start()
    try:
        _wait(lambda: _runs(lake).filter((pl.col("job") == "sleepy") & (pl.col("status") == "finished")).height >= 2
              and _runs(lake).filter(pl.col("job") == "maintenance").height >= 1, 60, "jobs to run")
        info = current_holder(lake=lake).info
        assert set(info["next_runs"]) == {"tick", "boom", "sleepy", "maintenance"}
    finally:
        sched.stop()
        thread.join(30)
    assert codes == [0]
    runs = _runs(lake)
    assert (runs.filter(pl.col("job") == "boom")["status"] == "failed").all()
    assert runs.filter((pl.col("job") == "tick") & (pl.col("status") == "finished")).height >= 2  # kept going
    assert "finished" in runs.filter(pl.col("job") == "maintenance")["status"].to_list()
    sleepy = runs.filter(pl.col("job") == "sleepy").sort("started_at")
    # interval 0.5 s, each run 1.5 s: never two at once (max_instances=1, coalesced)
    assert (sleepy["started_at"].shift(-1) >= sleepy["ended_at"]).drop_nulls().all()
    # the open alert started the on_alert job once (next re-check only after alert_recheck_s)
    assert runs.filter(pl.col("job") == "responder").select("trigger", "status").rows() == [("alert", "finished")]
    assert set(runs.filter(pl.col("job") != "responder")["trigger"].to_list()) == {"schedule"}
    assert current_holder(lake=lake) is None


def test_invalid_cron_is_refused_before_taking_the_lease(tmp_path):
    settings = load_settings(env={}, config_path=_config(tmp_path, "[jobs.maintenance]\ncron = \"61 * * * *\"\n"),
                             lake_uri=str(tmp_path / "lake"))
    with pytest.raises(ConfigError, match=r"\[jobs.maintenance\] cron '61 \* \* \* \*' is invalid"):
        Scheduler(settings)
    assert not Lake.from_settings(settings).exists("leases")


def test_builtin_jobs_close_the_loop_drift_alert_retrain(tmp_path):
    from core import registry
    from core.jobruns import pending_alerts, run_job
    from tests.monitor_world import (
        MODEL,
        build_champion,
        log_predictions,
        send_feedback,
        settings_for,
        traffic,
    )

    lake = build_champion(tmp_path / "lake")
    settings = settings_for(lake, models={MODEL: {"policy": {"auto_promote": True, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}},
                                                  "monitoring": {"min_labels": 100, "min_rows": 100}}})
    logged = log_predictions(lake, traffic(1500, seed=26, campaign=True))
    drift = run_job("drift_check", trigger="schedule", lake=lake, settings=settings)
    assert drift.status == "finished", drift.error
    assert drift.outputs["models"][MODEL]["drifted"] is True and drift.outputs["models"][MODEL]["alert"] == "opened"
    assert pending_alerts(lake=lake, settings=settings)["model"].to_list() == [MODEL]

    waiting = run_job("retrain", trigger="alert", lake=lake, settings=settings)  # no labels yet
    assert waiting.status == "finished" and waiting.outputs["models"][MODEL]["retrained"] is False
    send_feedback(lake, logged)
    done = run_job("retrain", trigger="alert", lake=lake, settings=settings)
    assert done.status == "finished", done.error
    out = done.outputs["models"][MODEL]
    assert out["version"] == 2 and out["promoted"] is True and out["run_id"]
    assert registry.champion_version(MODEL, lake) == 2
    perf = run_job("performance_check", lake=lake, settings=settings)
    assert perf.status == "finished", perf.error and MODEL in perf.outputs["models"]
    assert history(lake=lake)["job"].to_list() == ["performance_check", "retrain", "retrain", "drift_check"]
