"""Who runs a job and why: a person by hand (reason required where an alias can move) or the scheduler."""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest

from core import registry
from core.cli import run
from core.config import load_settings
from core.errors import RegistryError
from core.flows.manual import moves_aliases, outcome, run_by_hand, scheduler_notes
from core.jobruns import current_holder, history
from core.lake import Lake
from jobs import Scheduler
from tests.monitor_world import MODEL, build_champion, log_predictions, send_feedback, settings_for, traffic


def test_retrain_by_hand_needs_a_reason_and_records_the_person(tmp_path, capsys):
    lake = build_champion(tmp_path / "lake")
    settings = settings_for(lake, models={MODEL: {"policy": {
        "auto_promote": True, "significance": False, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}}}})
    assert moves_aliases("retrain") and not moves_aliases("drift_check")
    with pytest.raises(RegistryError, match="can promote a new champion: give a reason"):
        run_by_hand("retrain", actor="ana", reason=" ", lake=lake, settings=settings)
    assert history(lake=lake).height == 0
    assert run(["--lake", lake.uri, "jobs", "run", "retrain"]) == 2
    assert "give a reason" in capsys.readouterr().err

    send_feedback(lake, log_predictions(lake, traffic(800, seed=5, campaign=True)))
    result = run_by_hand("retrain", actor="ana", reason="campaign week: refresh the model", lake=lake, settings=settings)
    assert result.status == "finished", result.error
    assert result.trigger == "manual" and result.outputs["models"][MODEL]["reason"] == "campaign week: refresh the model"
    events = registry.events(MODEL, lake=lake).filter(pl.col("version") == 2)
    assert set(events["actor"].to_list()) == {"ana"}
    promoted = events.filter(pl.col("action") == "promote")
    assert promoted["reason"].to_list() == ["retrain run by hand: campaign week: refresh the model"]
    assert registry.get_version(MODEL, 2, lake=lake).description == "retrain: campaign week: refresh the model"
    row = history("retrain", lake=lake).row(0, named=True)
    assert outcome("retrain", row["outputs_json"], row["error"]) == "churn: v2 trained, gate passed, promoted"


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


_TOML = """
[jobs]
lease_ttl_s = 1.5
[jobs.drift_check]
enabled = false
[jobs.performance_check]
enabled = false
[jobs.maintenance]
enabled = false
[jobs.retrain]
enabled = false
[jobs.rollout]
enabled = false
[jobs.extra.whoami]
func = "jobfuncs:whoami"
interval_s = 0.5
"""


def test_scheduler_records_itself_and_reloads_a_changed_config(tmp_path):
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text(_TOML)
    settings = load_settings(env={}, config_path=cfg, lake_uri=str(tmp_path / "lake"), actor="root")
    lake = Lake.from_settings(settings)
    sched = Scheduler(settings, lake=lake)
    thread = threading.Thread(target=sched.run)
    thread.start()
    try:
        mine = _wait(lambda: history("whoami", lake=lake).filter(pl.col("status") == "finished").height, 60, "whoami")
        assert mine
        outputs = history("whoami", lake=lake)["outputs_json"].drop_nulls().to_list()
        assert all('"actor": "scheduler:whoami"' in o for o in outputs)

        cfg.write_text(_TOML + '[jobs.extra.tick]\nfunc = "jobfuncs:tick"\ninterval_s = 0.5\n')
        _wait(lambda: history("tick", lake=lake).filter(pl.col("trigger") == "schedule").height, 60, "the new job")
        _wait(lambda: "tick" in current_holder(lake=lake).info["next_runs"], 30, "the new schedule in the lease")
        assert scheduler_notes(current_holder(lake=lake), settings) == []

        cfg.write_text(_TOML + "[jobs.extra.bad]\nfunc = 'no colon'\n")
        holder = _wait(lambda: (h := current_holder(lake=lake)) and h.info.get("config_error") and h, 30, "the error")
        notes = scheduler_notes(holder, settings)
        assert len(notes) == 1 and "could not reload" in notes[0] and "func must be" in notes[0]
        ran = history("tick", lake=lake).height
        _wait(lambda: history("tick", lake=lake).height > ran, 30, "the previous jobs to keep running")
    finally:
        sched.stop()
        thread.join(30)
    assert not thread.is_alive()
