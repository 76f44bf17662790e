"""core.jobruns: job-run records, the job catalog and run_job, the lease (local and S3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from core.config import load_settings
from core.errors import ConfigError, NotFoundError
from core.ids import utcnow
from core.jobruns import (
    Lease,
    abandon_stale,
    current_holder,
    history,
    job_specs,
    list_jobs,
    pending_alerts,
    run_job,
    start_run,
)
from core.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
TOML = """
[jobs]
lease_ttl_s = 3
[jobs.extra.tick]
func = "jobfuncs:tick"
interval_s = 1
[jobs.extra.boom]
func = "jobfuncs:boom"
[jobs.extra.sleepy]
func = "jobfuncs:sleepy"
args = {seconds = 0.2}
"""


def _settings(tmp_path: Path, toml: str = TOML):
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text(toml)
    return load_settings(env={}, config_path=cfg, lake_uri=str(tmp_path / "lake"), actor="tester")


def test_run_job_records_a_running_then_finished_row(tmp_path):
    settings = _settings(tmp_path)
    lake = Lake.from_settings(settings)
    res = run_job("tick", lake=lake, settings=settings)
    assert res.status == "finished"
    assert res.outputs == {"pid": os.getpid(), "trigger": "manual"}
    rows = lake.read("job_runs").sort("at")
    assert rows["status"].to_list() == ["running", "finished"]
    assert rows["job_run_id"].n_unique() == 1
    assert rows["pid"].to_list() == [os.getpid()] * 2
    h = history(lake=lake)
    assert h.height == 1 and h["status"][0] == "finished" and h["duration_s"][0] >= 0
    assert json.loads(h["outputs_json"][0])["trigger"] == "manual"


def test_a_raising_job_is_recorded_as_failed_not_raised(tmp_path):
    settings = _settings(tmp_path)
    lake = Lake.from_settings(settings)
    res = run_job("boom", trigger="schedule", lake=lake, settings=settings)
    assert res.status == "failed"
    assert res.error == "RuntimeError: boom: this job always fails"
    run_job("sleepy", lake=lake, settings=settings)
    h = history(lake=lake)
    assert h["job"].to_list() == ["sleepy", "boom"]  # newest first
    assert h.filter(pl.col("job") == "boom")["trigger"][0] == "schedule"
    assert history("boom", lake=lake).height == 1


def test_unknown_job_lists_the_jobs(tmp_path):
    settings = _settings(tmp_path)
    with pytest.raises(NotFoundError, match="no job named 'nope'; jobs: drift_check, performance_check, retrain, rollout, maintenance, compact, tick"):
        run_job("nope", lake=Lake.from_settings(settings), settings=settings)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[jobs.maintenance]\ncron = 'every night'", r"\[jobs.maintenance\] cron must be a 5-field crontab"),
        ("[jobs.drift_check]\nintervall_s = 5", r"\[jobs.drift_check\] has unknown key\(s\) intervall_s"),
        ("[jobs.extra.x]\ninterval_s = 5", r"\[jobs.extra.x\] needs func"),
        ("[jobs.extra.x]\nfunc = 'nodots'", r"\[jobs.extra.x\] func must be"),
        ("[jobs.retrain]\ninterval_s = -1", r"\[jobs.retrain\] interval_s must be a positive"),
        ("[jobs.extra.retrain]\nfunc = 'a:b'", r"'retrain' is a built-in job"),
    ],
)
def test_bad_job_config_names_the_key(tmp_path, toml, message):
    with pytest.raises(ConfigError, match=message):
        job_specs(_settings(tmp_path, toml))


def test_catalog_defaults_and_overrides(tmp_path):
    specs = job_specs(_settings(tmp_path, "[jobs.drift_check]\ninterval_s = 60\nargs = {window_hours = 6}\n"))
    assert specs["drift_check"].schedule == "every 60s"
    assert specs["drift_check"].args == {"window_hours": 6}
    assert specs["retrain"].schedule == "on alert"
    assert specs["maintenance"].schedule == "cron 30 2 * * *"


def test_maintenance_job_keeps_registered_training_versions(tmp_path):
    settings = _settings(tmp_path)
    lake = Lake.from_settings(settings)
    schema = pl.DataFrame({"x": [1]}).to_arrow().schema
    for i in range(3):
        lake.append("data/churn", pl.DataFrame({"x": [i]}), schema=schema)
    lake.append("model_versions", [{"model": "churn", "version": 1, "dataset_name": "churn", "dataset_version": 1, "created_at": utcnow()}])
    res = run_job("maintenance", lake=lake, settings=settings)
    assert res.status == "finished", res.error
    assert res.outputs["kept_versions"] == {"data/churn": [1]}
    assert res.outputs["tables"] >= 3
    assert res.outputs["files_after"] < res.outputs["files_before"]  # data/churn compacted 3 -> 1
    assert lake.read("data/churn", version=1)["x"].to_list() == [0]


def test_abandon_stale_closes_other_processes_scheduled_runs(tmp_path, lake):
    other = {"job_run_id": "r-other", "job": "tick", "trigger": "schedule", "status": "running",
             "started_at": utcnow(), "host": "elsewhere", "pid": 1, "at": utcnow()}
    manual = {**other, "job_run_id": "r-manual", "trigger": "manual"}
    lake.append("job_runs", [other, manual])
    mine = start_run("tick", "schedule", lake=lake)
    assert abandon_stale(lake=lake) == 1
    h = history(lake=lake)
    status = dict(zip(h["job_run_id"], h["status"], strict=True))
    assert status == {"r-other": "abandoned", "r-manual": "running", mine.job_run_id: "running"}
    assert abandon_stale(lake=lake, mine=True) == 1
    assert history(lake=lake).filter(pl.col("job_run_id") == mine.job_run_id)["status"][0] == "interrupted"


def test_pending_alerts_new_episodes_then_periodic_recheck(tmp_path):
    from core.monitoring import raise_alert, resolve_alert

    settings = _settings(tmp_path)
    lake = Lake.from_settings(settings)
    raise_alert("drift", "churn", message="psi high", evidence={}, lake=lake, settings=settings)
    raise_alert("latency", "churn", message="slow", evidence={}, lake=lake, settings=settings)
    raise_alert("performance", "other", message="auc down", evidence={}, lake=lake, settings=settings)
    resolve_alert("performance", "other", message="auc back", lake=lake, settings=settings)
    pending = pending_alerts(lake=lake, settings=settings)
    assert pending.select("kind", "model").rows() == [("drift", "churn")]
    start_run("retrain", "alert", lake=lake)
    assert pending_alerts(lake=lake, settings=settings).height == 0  # answered; recheck in 600 s
    recheck = _settings(tmp_path, TOML.replace("lease_ttl_s = 3", "lease_ttl_s = 3\nalert_recheck_s = 0.001"))
    assert pending_alerts(lake=lake, settings=recheck)["kind"].to_list() == ["drift"]  # still open: due again
    raise_alert("performance", "churn", message="auc down", evidence={}, lake=lake, settings=settings)
    assert pending_alerts(lake=lake, settings=settings).select("kind", "model").rows() == [("performance", "churn")]


def test_lease_acquire_deny_renew_expire_takeover_release(lake):
    a = Lease(lake, holder="A", ttl_s=3)
    b = Lease(lake, holder="B", ttl_s=60)
    assert current_holder(lake=lake) is None
    assert a.acquire() and a.held and a.epoch == 1
    assert not b.acquire() and not b.held
    assert current_holder(lake=lake).holder == "A"
    assert a.renew() and a.acquire()  # acquiring a lease we hold renews it
    time.sleep(3.1)
    assert not a.held  # self-fenced once expired
    assert b.acquire() and b.epoch == 2
    assert not a.renew() and a.epoch is None  # A learns it lost
    assert current_holder(lake=lake).holder == "B"
    b.release()
    assert current_holder(lake=lake) is None and not b.held
    assert a.acquire() and a.epoch == 3  # a released lease is free at once
    # epochs change by counting Delta commits; renewals are heartbeat objects, not commits
    events = lake.read("leases").sort("at")
    assert events.select("event", "holder", "epoch").rows() == [
        ("acquire", "A", 1), ("acquire", "B", 2), ("release", "B", 2), ("acquire", "A", 3)]
    assert lake.list_files("_lakeops/leases/scheduler") == ["_lakeops/leases/scheduler/000000000001.json"]


def test_lease_renewal_extends_past_the_first_expiry_and_a_late_holder_reacquires(lake):
    a, b = Lease(lake, holder="A", ttl_s=2), Lease(lake, holder="B", ttl_s=60)
    assert a.acquire()
    time.sleep(1)
    assert a.renew(info={"next_runs": {}})
    time.sleep(1.5)  # past the acquire event's expiry: only the heartbeat keeps A's lease
    assert not b.acquire() and current_holder(lake=lake).holder == "A"
    time.sleep(2.1)
    assert not a.held and current_holder(lake=lake) is None
    assert a.renew() and a.epoch == 2  # expired but nobody claimed: the CAS gives A a new epoch
    assert not b.acquire()


def test_lease_info_feeds_next_runs_in_list_jobs(tmp_path):
    settings = _settings(tmp_path)
    lake = Lake.from_settings(settings)
    when = (utcnow() + timedelta(minutes=3)).replace(microsecond=0)
    lease = Lease(lake, ttl_s=30)
    assert lease.acquire(info={"next_runs": {"tick": when.isoformat()}})
    jobs = list_jobs(lake=lake, settings=settings)
    row = jobs.filter(pl.col("job") == "tick").row(0, named=True)
    assert row["next_run"] == when and row["schedule"] == "every 1s"
    assert jobs.filter(pl.col("job") == "boom")["next_run"][0] is None


def _race(uri: str, options: dict, rounds: int, n: int) -> list[list[str]]:
    """n threads, each with its own Lake handle, race for a released lease, `rounds` times."""
    winners: list[list[str]] = []
    leases = [Lease(Lake(uri, options, check_writes=False), holder=f"h{i}", ttl_s=30) for i in range(n)]
    for _ in range(rounds):
        barrier = threading.Barrier(n)
        got: list[str] = []

        def go(lease: Lease) -> None:
            barrier.wait()
            if lease.acquire():
                got.append(lease.holder_id)

        threads = [threading.Thread(target=go, args=(le,)) for le in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners.append(got)
        holder = current_holder(lake=leases[0].lake)
        assert holder is not None and [holder.holder] == got
        next(le for le in leases if le.holder_id == got[0]).release()
    return winners


def test_lease_race_between_threads_has_one_winner(lake):
    winners = _race(lake.uri, {}, rounds=4, n=6)
    assert all(len(w) == 1 for w in winners), winners
    claims = lake.read("leases").filter(pl.col("event") == "acquire").height
    assert claims > 4  # losers' claims were committed too, and did not count


_RACER = """
import sys, json
from core.lake import Lake
from core.jobruns import Lease
lease = Lease(Lake(sys.argv[1]), holder=sys.argv[2], ttl_s=30)
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(lease.acquire()), flush=True)
"""


@pytest.mark.slow
def test_lease_race_between_processes_has_one_winner(lake):
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, lake.uri, f"p{i}"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert results.count(True) == 1, results
    assert current_holder(lake=lake).holder == f"p{results.index(True)}"


@pytest.mark.s3
def test_lease_on_s3_has_one_winner_and_expires():
    from tests.s3server import moto_server

    with moto_server() as server:
        server.create_bucket("lake")
        uri = "s3://lake/team"
        winners = _race(uri, server.options, rounds=1, n=3)
        assert all(len(w) == 1 for w in winners), winners
        lake = Lake(uri, server.options)
        a, b = Lease(lake, holder="A", ttl_s=4), Lease(lake, holder="B", ttl_s=60)
        assert a.acquire() and not b.acquire()
        time.sleep(4.1)
        assert b.acquire() and not a.renew()
        assert current_holder(lake=lake).holder == "B"


def _row(job_run_id: str, trigger: str, pid: int, host: str, started_at) -> dict:
    return {"job_run_id": job_run_id, "job": "tick", "trigger": trigger, "status": "running",
            "started_at": started_at, "host": host, "pid": pid, "at": utcnow()}


def test_abandon_stale_closes_manual_runs_whose_process_is_gone(lake):
    import socket

    here = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1.1)  # so that "alive" started before the next run and after the earlier one
        lake.append("job_runs", [
            _row("r-gone", "manual", gone.pid, here, utcnow()),
            _row("r-alive", "manual", alive.pid, here, utcnow()),
            _row("r-reused", "manual", alive.pid, here, utcnow() - timedelta(hours=1)),  # pid reused since
            _row("r-remote", "manual", 1, "elsewhere", utcnow() - timedelta(days=3)),
        ])
        assert abandon_stale(lake=lake) == 2
    finally:
        alive.kill()
        alive.wait()
    h = history(lake=lake)
    status = dict(zip(h["job_run_id"], h["status"], strict=True))
    assert status == {"r-gone": "abandoned", "r-alive": "running", "r-reused": "abandoned", "r-remote": "running"}
    error = h.filter(pl.col("job_run_id") == "r-gone")["error"][0]
    assert f"pid {gone.pid} on {here}" in error and "ended without recording an outcome" in error


@pytest.mark.parametrize(("sig", "code", "why"), [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SystemExit 143")])
def test_an_interrupted_manual_run_is_closed_as_interrupted(tmp_path, sig, code, why):
    import signal

    settings = _settings(tmp_path, TOML.replace("args = {seconds = 0.2}", "args = {seconds = 60}"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--lake", settings.lake_uri, "--config", settings.config_path, "jobs", "run", "sleepy"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lake = Lake.from_settings(settings)
    deadline = time.monotonic() + 60
    while not (lake.exists("job_runs") and history(lake=lake).height):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no run"
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    h = history(lake=lake)
    assert h["status"].to_list() == ["interrupted"] and why in h["error"][0] and h["ended_at"][0] is not None


def test_compact_job_merges_small_files_of_hot_tables_only(lake):
    from core.jobruns.builtin import compact_hot

    for i in range(12):
        lake.append("feedback", [{"prediction_id": f"p{i}", "at": utcnow()}])
    for i in range(3):
        lake.append("alerts", [{"alert_id": f"a{i}", "kind": "drift", "severity": "warning", "at": utcnow()}])
    before = {t: lake.file_count(t) for t in ("feedback", "alerts")}
    out = compact_hot(lake=lake, min_small_files=10)
    assert out["compacted"] == {"feedback": {"files_removed": 12, "files_added": 1}}
    assert lake.file_count("feedback") == 1 and lake.file_count("alerts") == before["alerts"] == 3
    assert lake.read("feedback").height == 12 and lake.read("feedback", version=12).height == 12
    assert compact_hot(lake=lake, min_small_files=10)["compacted"] == {}

