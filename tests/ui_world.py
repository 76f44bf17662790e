"""A lake after a simulated closed loop, built with real components, for the UI tests.

The demo seed (churn v1 champion, the demo policy), then through a real API on 127.0.0.1: calm
traffic and a drift check (no drift), campaign traffic with late labels, the scheduler's jobs
(drift check -> alert, performance check, retrain -> v2 gated and promoted), traffic to v2 and a
last drift check. Run as a script to build one for a manual look: ``python -m tests.ui_world DIR``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from core.config import Settings
from core.flows.manual import scheduler_actor
from core.flows.seed import seed_demo
from core.jobruns import run_job
from core.lake import Lake
from core.serving.app import create_app
from core.simulate import simulate
from tests.test_serving_support import ThreadServer, serving_settings

MODEL = "churn"


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the prediction log")
        time.sleep(0.2)


def _job(name: str, trigger: str, lake: Lake, settings: Settings) -> dict:
    result = run_job(name, trigger=trigger, lake=lake, settings=settings.with_(actor=scheduler_actor(name)))
    assert result.status == "finished", result.error
    return result.outputs


def closed_loop_lake(root: Path) -> tuple[Lake, Settings]:
    """Build the lake under ``root/lake`` (WAL under ``root/wal``); return it and its settings."""
    base = serving_settings(root / "lake", root / "wal", unknown_category="missing")
    settings = base.with_(sections={**base.sections, "models": {MODEL: {
        "monitoring": {"window_rows": 900, "min_rows": 200, "min_labels": 200},
        # the UI needs the loop closed, not a hard gate: no significance needed on a small holdout
        "policy": {"min": {"auc": 0.6}, "max": {"brier": 0.25}, "auto_promote": True, "significance": False,
                   "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}},
    }}})
    lake = Lake.from_settings(settings, create=True)
    seed_demo(lake=lake, settings=settings, rows=6000)
    logged = lambda: lake.read(f"predictions/{MODEL}").height if lake.exists(f"predictions/{MODEL}") else 0  # noqa: E731
    sent = 0
    with ThreadServer(create_app(settings)) as srv:
        version = lambda: httpx.get(f"{srv.url}/v1/models/{MODEL}").json().get("serving_version")  # noqa: E731
        for seed, campaign in ((1, None), (2, 0.0)):  # calm traffic, then the campaign, labels a minute late
            stats = simulate(srv.url, speed=600, duration=60, rate=30, campaign_after=campaign, feedback_delay=1,
                             seed=seed, realtime=False)
            sent += stats.rows
            _wait(lambda: logged() >= sent)  # noqa: B023
            check = _job("drift_check", "schedule", lake, settings)["models"][MODEL]
            if check["alert"] == "opened" and version() == 1:  # the loop: alert -> retrain -> gate -> promote
                _job("performance_check", "schedule", lake, settings)
                retrained = _job("retrain", "alert", lake, settings)["models"][MODEL]
                assert retrained.get("promoted"), retrained
                _wait(lambda: version() == 2, 30)
                stats = simulate(srv.url, speed=600, duration=20, rate=30, campaign_after=campaign, feedback_delay=1,
                                 seed=seed + 10, realtime=False)
                sent += stats.rows
                _wait(lambda: logged() >= sent)  # noqa: B023
        assert version() == 2, "the loop did not close"
        # the campaign ends: traffic looks like before it, which v2 (trained on campaign data) did not expect
        stats = simulate(srv.url, speed=600, duration=20, rate=30, feedback_delay=1, seed=7, realtime=False)
        sent += stats.rows
        _wait(lambda: logged() >= sent)
        _job("drift_check", "schedule", lake, settings)
        _job("performance_check", "schedule", lake, settings)
    return lake, settings


if __name__ == "__main__":
    built, _ = closed_loop_lake(Path(sys.argv[1]))
    print(built.uri)  # noqa: T201
