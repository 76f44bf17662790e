"""The closed loop, time-compressed: campaign traffic -> drift -> alert -> retrain -> gate -> promotion -> hot swap -> no drift."""

from __future__ import annotations

import time

import httpx
import polars as pl
import pytest

from core import datasets, registry
from core.flows import monitor
from core.serving.app import create_app
from core.simulate import simulate
from tests.monitor_world import MODEL, build_champion
from tests.test_serving_support import ThreadServer, serving_settings

pytestmark = pytest.mark.slow


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for the prediction log")
        time.sleep(0.2)


def test_closed_loop(tmp_path):
    lake = build_champion(tmp_path / "lake", rows=3000)
    base = serving_settings(lake.uri, tmp_path / "wal", unknown_category="missing")
    sections = {
        **base.sections,
        "models": {MODEL: {
            "policy": {"auto_promote": True, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}},
            # the holdout (the newest 20 %) as the feature reference: after the retrain it is the
            # campaign period, so the loop closes within one cycle; the default reference, the whole
            # training set (two thirds pre-campaign), keeps reporting feature drift (docs/architecture.md)
            "monitoring": {"window_rows": 600, "min_rows": 200, "min_labels": 200, "reference": "holdout"},
        }},
    }
    settings = base.with_(sections=sections)
    logged = lambda: lake.read(f"predictions/{MODEL}").height if lake.exists(f"predictions/{MODEL}") else 0  # noqa: E731
    labels = lambda: lake.read("feedback").height if lake.exists("feedback") else 0  # noqa: E731

    with ThreadServer(create_app(settings)) as srv:
        # 1. normal traffic: no drift
        s1 = simulate(srv.url, speed=600, duration=20, rate=30, seed=1, realtime=False)
        assert s1.errors == 0 and s1.rows == 600
        _wait(lambda: logged() == 600)
        calm = monitor.check_drift_and_alert(MODEL, lake=lake, settings=settings)
        assert calm.drifted is False and calm.alert is None

        # 2. the campaign starts; labels arrive a simulated minute later
        s2 = simulate(srv.url, speed=600, duration=100, rate=30, campaign_after=0, feedback_delay=1, seed=2, realtime=False)
        assert s2.errors == 0 and s2.campaign_rows == s2.rows == 3000
        _wait(lambda: logged() == 3600 and labels() == s1.labels + s2.labels)
        shifted = monitor.check_drift_and_alert(MODEL, lake=lake, settings=settings)
        assert shifted.drifted and shifted.alert == "opened"
        assert {"age", "plan", "signup_channel"} <= set(shifted.drifted_features)

        # 3. no human: the open alert triggers a retrain on data with the new period, gated, promoted
        out = monitor.retrain_if_needed(MODEL, lake=lake, settings=settings)
        assert out is not None and out.rows_added == s1.labels + s2.labels and out.gate_passed and out.promoted
        assert registry.champion_version(MODEL, lake) == out.version == 2

        # 4. the service hot-swaps; the next window is back under threshold
        _wait(lambda: httpx.get(srv.url + f"/v1/models/{MODEL}").json().get("serving_version") == 2, 30)
        s3 = simulate(srv.url, speed=600, duration=20, rate=30, campaign_after=0, seed=3, realtime=False)
        assert s3.errors == 0 and s3.versions.get(2, 0) > 0
        _wait(lambda: logged() == 4200)
        after = monitor.check_drift_and_alert(MODEL, lake=lake, settings=settings)
        assert after.model_version == 2 and after.drifted is False and after.alert is None

    # every step happened, in order, as recorded in the tables
    reports = lake.read("drift_reports").filter(pl.col("feature") == "__dataset__").sort("at")
    assert reports["drifted"].to_list() == [False, True, False]
    assert reports["model_version"].to_list() == [1, 1, 2]
    alerts = lake.read("alerts").filter(pl.col("kind") == "drift").sort("at")  # besides data_quality (new levels)
    assert alerts["status"].to_list() == ["open", "resolved"]
    dv = datasets.versions(out.served_dataset, lake=lake).filter(pl.col("version") == out.served_version).row(0, named=True)
    events = registry.events(MODEL, lake=lake).filter(pl.col("version") == 2).sort("at")
    assert events["action"].to_list()[:3] == ["register", "gate", "promote"]
    promoted_at = events.filter(pl.col("action") == "promote")["at"][0]
    served_v2 = lake.read(f"predictions/{MODEL}").filter(pl.col("model_version") == 2)["at"].min()
    steps = [reports["at"][1], alerts["at"][0], dv["created_at"], events["at"][0], promoted_at, alerts["at"][1],
             served_v2, reports["at"][2]]
    assert alerts["message"][1].startswith("superseded by v2")
    assert steps == sorted(steps)
