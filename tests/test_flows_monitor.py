from __future__ import annotations

import polars as pl
import pytest

from core import datasets, monitoring, registry
from core.flows import monitor
from tests.monitor_world import (
    MODEL,
    Receiver,
    build_champion,
    clone,
    log_predictions,
    send_feedback,
    settings_for,
    traffic,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_champion(tmp_path_factory.mktemp("flowmon") / "lake")


@pytest.fixture
def lake(base, tmp_path):
    return clone(base, tmp_path / "lake")


def _settings(lake, *, auto_promote: bool, hook: str | None = None):
    sections = {
        "models": {MODEL: {"policy": {"auto_promote": auto_promote, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}},
                           "monitoring": {"min_labels": 100, "min_rows": 100}}},
    }
    if hook:
        sections["alerts"] = {"webhook_url": hook}
    return settings_for(lake, **sections)


def test_drift_alert_opens_once_and_resolves(lake):
    receiver = Receiver()
    try:
        s = _settings(lake, auto_promote=False, hook=receiver.url)
        log_predictions(lake, traffic(800, seed=21, campaign=True))
        first = monitor.check_drift_and_alert(MODEL, lake=lake, settings=s)
        assert first.drifted and first.alert == "opened"
        second = monitor.check_drift_and_alert(MODEL, lake=lake, settings=s)
        assert second.drifted and second.alert == "ongoing"
        open_ = monitor.alerts_open(MODEL, lake=lake).filter(pl.col("kind") == "drift")
        assert open_.height == 1 and open_["severity"][0] == "warning"
        evidence = __import__("json").loads(open_["payload_json"][0])
        assert evidence["report_id"] == first.report_id
        assert {f["feature"] for f in evidence["features"]} == set(first.drifted_features)
        log_predictions(lake, traffic(800, seed=22, campaign=False))
        clean = monitor.check_drift_and_alert(MODEL, window_rows=800, lake=lake, settings=s)
        assert clean.drifted is False and clean.alert == "resolved"
        assert monitor.alerts_open(MODEL, lake=lake).height == 0
        assert [b["status"] for b in receiver.bodies if b["kind"] == "drift"] == ["open", "resolved"]
        assert lake.read("drift_reports")["report_id"].n_unique() == 3
    finally:
        receiver.close()


def test_performance_alert(lake):
    s = settings_for(lake, models={MODEL: {"monitoring": {"min_labels": 100, "tolerance": 0.02}}})
    send_feedback(lake, log_predictions(lake, traffic(1200, seed=23, campaign=True)))
    rep = monitor.check_performance_and_alert(MODEL, lake=lake, settings=s)
    assert rep.degraded and rep.alert == "opened"
    alert = monitor.alerts_open(MODEL, lake=lake)
    assert alert["kind"].to_list() == ["performance"] and alert["severity"][0] == "critical"
    assert "auc" in alert["message"][0]
    assert monitor.check_performance_and_alert(MODEL, lake=lake, settings=s).alert == "ongoing"


def test_retrain_records_labelled_traffic_as_its_own_dataset_gates_on_the_newest_and_promotes(lake):
    import math

    s = _settings(lake, auto_promote=True)
    logged = log_predictions(lake, traffic(2500, seed=24, campaign=True))
    labelled = send_feedback(lake, logged, share=0.8)
    out = monitor.retrain(MODEL, reason="drift on the campaign", lake=lake, settings=s)
    assert out.champion_before == 1 and out.version == 2 and out.rows_added == labelled
    assert (out.dataset, out.dataset_version) == ("churn", 1)  # the source data is not touched
    assert (out.served_dataset, out.served_version) == ("churn_served", 1)
    assert datasets.latest_version("churn", lake=lake) == 1
    served = datasets.load("churn_served", 1, lake=lake)
    assert served.height == labelled and "customer_id" not in served.columns  # nothing made up
    assert {"__prediction_id", "__served_at", "__labelled_at", "__model_version", "churned"} <= set(served.columns)
    assert served["__prediction_id"].n_unique() == labelled
    # the holdout is the newest labelled traffic, and both models were scored on exactly it
    assert out.holdout_rows == math.ceil(0.2 * labelled)
    gate = registry.events(MODEL, lake=lake).filter((pl.col("action") == "gate") & (pl.col("version") == 2))
    report = __import__("json").loads(gate["report_json"][0])
    assert report["eval_rows"] == out.holdout_rows and report["champion_version"] == 1
    run = __import__("core.tracking", fromlist=["get_run"]).get_run(out.run_id, lake=lake)
    assert run.params["split_method"] == "served_holdout" and run.params["served_version"] == "1"
    assert int(run.params["rows_valid"]) == out.holdout_rows
    mv = registry.get_version(MODEL, 2, lake=lake)
    assert mv.dataset_version == 1
    assert out.gate_passed and out.promoted
    assert registry.champion_version(MODEL, lake) == 2
    # nothing new: the next retrain reuses the same served version and adds no rows
    again = monitor.retrain(MODEL, reason="schedule", lake=lake, settings=_settings(lake, auto_promote=False))
    assert again.rows_added == 0 and again.served_version == 1 and not again.promoted
    assert registry.champion_version(MODEL, lake) == 2


def test_retrain_without_auto_promote_waits_for_a_human(lake):
    s = _settings(lake, auto_promote=False)
    send_feedback(lake, log_predictions(lake, traffic(1500, seed=25, campaign=True)))
    out = monitor.retrain(MODEL, reason="test", lake=lake, settings=s)
    assert out.gate_passed and not out.promoted and "auto_promote" in out.why
    assert registry.champion_version(MODEL, lake) == 1
    assert registry.versions(MODEL, lake=lake).filter(pl.col("version") == out.version)["gate"][0] == "passed"


def test_retrain_if_needed_follows_alerts(lake):
    s = _settings(lake, auto_promote=True)
    assert monitor.retrain_if_needed(MODEL, lake=lake, settings=s) is None  # no alert
    logged = log_predictions(lake, traffic(1500, seed=26, campaign=True))
    assert monitor.check_drift_and_alert(MODEL, lake=lake, settings=s).alert == "opened"
    assert monitor.retrain_if_needed(MODEL, lake=lake, settings=s) is None  # no labels yet
    send_feedback(lake, logged)
    out = monitor.retrain_if_needed(MODEL, lake=lake, settings=s)
    assert out is not None and out.promoted and "data drift" in out.reason
    assert monitor.retrain_if_needed(MODEL, lake=lake, settings=s) is None  # already retrained for it
    # the new champion's score reference is its holdout, the campaign period: its scores no longer
    # drift; its feature reference is its whole training set, one third campaign rows, and a window
    # of campaign traffic still differs from that mixture
    log_predictions(lake, traffic(1500, seed=27, campaign=True))
    after = monitor.check_drift_and_alert(MODEL, window_rows=1500, lake=lake, settings=s)
    ref = monitoring.reference(MODEL, lake=lake, settings=s)
    assert after.model_version == 2 and ref.model_version == 2 and ref.rows == 4500
    assert ref.holdout_rows == 300  # the newest fifth of the 1,500 labelled campaign predictions
    assert after.score is not None and after.score.drifted is False
    assert after.result is not None and after.result.share < 0.8 and after.drifted
    assert after.alert == "opened"  # v1's alert was superseded at the promotion: v2's checks start afresh
    history = monitoring.alert_history(MODEL, lake=lake).filter(pl.col("kind") == "drift")
    assert history["status"].to_list() == ["open", "resolved", "open"]
    assert history["model_version"].to_list() == [1, 1, 2] and history["message"][1].startswith("superseded by v2")
    # with the holdout as the feature reference (the newest 20 %, all campaign) the window matches
    holdout = settings_for(lake, models={MODEL: {"policy": {"auto_promote": True}, "monitoring": {
        "min_labels": 100, "min_rows": 100, "reference": "holdout", "alert_on_multivariate_drift": False}}})
    again = monitor.check_drift_and_alert(MODEL, window_rows=1500, lake=lake, settings=holdout)
    assert again.drifted is False and again.alert == "resolved"


def test_simulate_through_the_api_then_cli(lake, tmp_path, capsys):
    from core.cli import run
    from core.serving.app import create_app
    from core.simulate import simulate
    from tests.test_serving_support import ThreadServer, serving_settings

    settings = serving_settings(lake.uri, tmp_path / "wal", unknown_category="missing")
    with ThreadServer(create_app(settings)) as srv:
        stats = simulate(srv.url, speed=600, duration=30, rate=30, campaign_after=10, feedback_delay=5,
                         label_share=0.5, seed=3, realtime=False)
        assert stats.errors == 0, stats.error_samples
        assert stats.rows == 900 and 0 < stats.campaign_rows < 900 and stats.versions == {1: 900}
        assert 0 < stats.labels < stats.rows
        assert run(["--lake", lake.uri, "simulate", "--api", srv.url, "--speed", "3000", "--duration", "2",
                    "--rate", "20", "--quiet"]) == 0
        assert '"rows": 40' in capsys.readouterr().out
    logged = lake.read(f"predictions/{MODEL}")
    assert logged.height == 940 and logged["prediction_id"].n_unique() == 940
    assert lake.read("feedback").height >= stats.labels
    assert (logged.filter(pl.col("features").struct.field("plan") == "promo").height > 0)  # campaign traffic reached the log
    # the log keeps both clocks: when the API answered (seconds) and when it happened (30 simulated minutes)
    sim = logged.filter(pl.col("passthrough").struct.field("signup_at").is_not_null())
    event = sim["passthrough"].struct.field("signup_at")
    assert sim.height == 940 and (event.max() - event.min()).total_seconds() > 25 * 60
    assert (sim["at"].max() - sim["at"].min()).total_seconds() < 25 * 60
    buckets = monitoring.score_over_time(MODEL, every="1m", lake=lake)
    assert buckets["bucket"].n_unique() >= 25  # the chart tells the simulated half hour, not one dot
    assert run(["--lake", lake.uri, "drift", "check", MODEL, "--rows", "600"]) == 0
    out = capsys.readouterr().out
    assert "age" in out and "report " in out and "drifted share" in out
    assert run(["--lake", lake.uri, "drift", "history", MODEL, "--format", "json"]) == 0
    assert '"feature": "__dataset__"' in capsys.readouterr().out
    assert run(["--lake", lake.uri, "alerts", "list", "--all"]) == 0
    assert run(["--lake", lake.uri, "performance", MODEL]) == 0
    assert "labelled" in capsys.readouterr().out
    assert run(["--lake", lake.uri, "drift", "check", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_cli_end_to_end_subprocess(lake):
    import subprocess

    log_predictions(lake, traffic(400, seed=41, campaign=True))
    done = subprocess.run(["lakeops", "--lake", lake.uri, "drift", "check", MODEL, "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = __import__("json").loads(done.stdout)
    assert {r["feature"] for r in rows} >= {"age", "plan", "__score__"}
    done = subprocess.run(["lakeops", "--lake", lake.uri, "alerts", "list", "--model", MODEL],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "data drift" in done.stdout
    done = subprocess.run(["lakeops", "--lake", lake.uri, "simulate", "--api", "http://127.0.0.1:9", "--duration", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cannot reach the API" in done.stderr
