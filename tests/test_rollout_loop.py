"""The closed loop with a live period: drift -> retrain -> offline gate -> shadow -> live gate -> promote, all as jobs."""

from __future__ import annotations

import json
import time

import httpx
import polars as pl
import pytest

from core import registry
from core.flows import rollout
from core.jobruns import run_job
from core.serving.app import create_app
from core.simulate import simulate
from tests.monitor_world import MODEL, build_champion
from tests.test_serving_support import ThreadServer, serving_settings

pytestmark = pytest.mark.slow


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def test_retrain_goes_through_a_shadow_period_before_promotion(tmp_path):
    lake = build_champion(tmp_path / "lake", rows=3000)
    base = serving_settings(lake.uri, tmp_path / "wal", unknown_category="missing")
    settings = base.with_(sections={**base.sections, "models": {MODEL: {
        "policy": {"auto_promote": True, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0},
                   "staging": {"mode": "shadow", "min_requests": 300, "min_labelled": 150, "tolerance": 0.02}},
        "monitoring": {"window_rows": 600, "min_rows": 200, "min_labels": 200, "reference": "holdout"},
    }}, "jobs": {"rollout": {"interval_s": 60}}})
    logged = lambda: lake.read(f"predictions/{MODEL}").height if lake.exists(f"predictions/{MODEL}") else 0  # noqa: E731

    with ThreadServer(create_app(settings)) as srv:
        s1 = simulate(srv.url, speed=600, duration=100, rate=30, campaign_after=0, feedback_delay=1, seed=2, realtime=False)
        assert s1.errors == 0
        _wait(lambda: logged() == s1.rows and lake.read("feedback").height == s1.labels)
        drift = run_job("drift_check", lake=lake, settings=settings)
        assert drift.status == "finished" and drift.outputs["models"][MODEL]["alert"] == "opened"
        retrain = run_job("retrain", trigger="alert", lake=lake, settings=settings)
        out = retrain.outputs["models"][MODEL]
        assert retrain.status == "finished" and out["gate_passed"] and not out["promoted"] and "staged" in out["why"]
        stage = registry.state(MODEL, lake=lake).stage
        assert stage is not None and stage.version == out["version"] == 2 and stage.mode == "shadow"
        early = run_job("rollout", lake=lake, settings=settings)
        assert early.outputs["models"][MODEL]["action"] == "waiting"  # no live traffic yet
        # the server runs the challenger once its registry poll has loaded it: traffic sent before
        # that is (rightly) not shadowed, so wait for the server to say so before sending s2
        staged = lambda: httpx.get(srv.url + f"/v1/models/{MODEL}").json()["serving_stage"]  # noqa: E731
        _wait(lambda: (staged() or {}).get("version") == 2, 60)
        assert staged() == {"version": 2, "mode": "shadow", "fraction": 0.0}
        s2 = simulate(srv.url, speed=600, duration=30, rate=30, campaign_after=0, feedback_delay=1, seed=3, realtime=False)
        assert s2.errors == 0 and s2.versions == {1: s2.rows}  # the champion answers throughout
        text = httpx.get(srv.url + "/metrics").text
        dropped = sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith("lakeops_shadow_dropped"))
        _wait(lambda: lake.read(f"predictions/{MODEL}").filter(pl.col("role") == "shadow").height == s2.rows - dropped)
        assert dropped < 0.1 * s2.rows, dropped  # a burst may outrun the shadow queue; it never slows the answers
        _wait(lambda: lake.read("feedback").height == s1.labels + s2.labels)
        live = run_job("rollout", lake=lake, settings=settings)
        assert live.status == "finished" and live.outputs["models"][MODEL]["action"] == "promoted", live.outputs["models"][MODEL]["why"]
        assert registry.champion_version(MODEL, lake) == 2 and registry.state(MODEL, lake=lake).stage is None
        _wait(lambda: httpx.get(srv.url + f"/v1/models/{MODEL}").json()["serving_version"] == 2, 30)

    # every step, in order, in the registry and job_runs
    events = registry.events(MODEL, lake=lake).filter(pl.col("version") == 2).sort("at")
    assert events["action"].to_list() == ["register", "gate", "stage", "promote"]
    assert json.loads(events["report_json"][2])["mode"] == "shadow"
    runs = lake.read("job_runs").filter(pl.col("status") == "finished").sort("ended_at")
    order = [j for j in runs["job"].to_list() if j in ("drift_check", "retrain", "rollout")]
    assert order == ["drift_check", "retrain", "rollout", "rollout"]
    report = rollout.live_reports(MODEL, lake=lake).row(-1, named=True)
    assert report["passed"] is True and report["requests"] == s2.rows and report["labelled"] >= 150
    assert events.filter(pl.col("action") == "promote")["at"][0] > report["at"]
