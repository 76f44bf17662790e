"""The Monitoring page (AppTest): alerts with evidence and handling, drift as a warning, per-version score chart."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc
import pytest
import streamlit as st
from streamlit.proto.Metric_pb2 import Metric
from streamlit.testing.v1 import AppTest

from core import monitoring, registry
from core.flows import monitor, promote
from core.flows.train import train_model
from core.ids import utcnow
from tests.monitor_world import MODEL, build_champion, log_predictions, send_feedback, settings_for, traffic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ui_lake(tmp_path, monkeypatch):
    lake = build_champion(tmp_path / "lake", rows=2000)
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.setenv("LAKEOPS_ACTOR", "ana")
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()
    s = settings_for(lake)
    send_feedback(lake, log_predictions(lake, traffic(600, seed=31, campaign=False)), share=0.5)
    monitor.check_drift_and_alert(MODEL, lake=lake, settings=s)
    send_feedback(lake, log_predictions(lake, traffic(600, seed=32, campaign=True)), share=0.5)
    monitor.check_drift_and_alert(MODEL, window_rows=600, lake=lake, settings=s)
    return lake


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages/monitoring.py"), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def _chart_data(at: AppTest, needle: str) -> pl.DataFrame:
    chart = next(c for c in at.get("vega_lite_chart") if needle in c.proto.spec)
    tables = [pl.from_arrow(ipc.open_stream(io.BytesIO(d.data.data)).read_all()) for d in chart.proto.datasets]
    return next(t for t in tables if "p50" in t.columns)


def test_monitoring_page_shows_drift_as_a_warning_with_evidence_and_charts(ui_lake):
    at = _page()
    verdict = at.metric[0]
    assert verdict.value == "DRIFT" and verdict.proto.color == Metric.MetricColor.RED
    assert any("data drift" in e.label and e.label.startswith("OPEN") for e in at.expander)
    evidence = next(d.value for d in at.dataframe if "p_value" in d.value.columns)
    assert {"feature", "test", "statistic", "threshold", "drifted"} <= set(evidence.columns)
    assert evidence["drifted"].iloc[0]  # drifted features first
    assert len(at.get("vega_lite_chart")) >= 4  # heatmap, distribution, scores, performance
    assert at.selectbox(key="feature").options[0] == "model score"  # the score row, named for people
    at.selectbox(key="feature").set_value("plan").run()
    assert not at.exception, at.exception
    assert any("**plan**: chisquare" in m.value and "predictions" in m.value for m in at.markdown)
    at.button(key="run_drift").click().run()
    assert not at.exception, at.exception
    assert any(w.value.startswith("DRIFT:") and "alert ongoing" in w.value for w in at.warning)


def test_alerts_are_acknowledged_and_resolved_with_a_reason(ui_lake):
    drift = pl.col("fingerprint") == "drift:churn"
    at = _page()
    at.button(key="ack_drift:churn").click().run()
    assert any("Write a reason first" in w.value for w in at.warning)
    assert monitoring.alerts(MODEL, lake=ui_lake).filter(drift).height == 1
    at.text_input(key="alert_reason_drift:churn").set_value("campaign: expected").run()
    at.button(key="ack_drift:churn").click().run()
    assert not at.exception, at.exception
    assert any(e.label.startswith("ACKNOWLEDGED · drift") for e in at.expander)
    assert monitoring.alerts(MODEL, status="acknowledged", lake=ui_lake).filter(drift).height == 1
    at.text_input(key="alert_reason_drift:churn").set_value("retrained by hand").run()
    at.button(key="resolve_drift:churn").click().run()
    assert not at.exception, at.exception
    rows = monitoring.alert_history(MODEL, lake=ui_lake).filter(drift)
    assert rows["status"].to_list() == ["open", "acknowledged", "resolved"]
    assert "resolved by ana: retrained by hand" in rows["message"][-1]
    assert not any(" · drift · " in e.label for e in at.expander)


def test_score_chart_draws_each_version_apart_without_bridging_gaps(tmp_path, monkeypatch, settings):
    lake = build_champion(tmp_path / "lake", rows=1500)
    now = utcnow()
    log_predictions(lake, traffic(50, seed=1, campaign=False), at=now - timedelta(hours=3))
    log_predictions(lake, traffic(50, seed=2, campaign=False), at=now - timedelta(hours=1))
    run = train_model("churn", target="churned", params={"num_iterations": 10}, seed=3, lake=lake, settings=settings)
    registry.register(MODEL, run.run_id, lake=lake, actor="tester")
    promote.promote(MODEL, 2, reason="v2", force=True, lake=lake, actor="tester", settings=settings)
    log_predictions(lake, traffic(50, seed=4, campaign=False), at=now, version=2)
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    st.cache_resource.clear()
    at = _page()
    at.selectbox(key="every").set_value("1h").run()
    data = _chart_data(at, "p10").sort("bucket")
    assert data.group_by("version").agg(pl.col("run").n_unique()).sort("version").rows() == [("v1", 2), ("v2", 1)]
    assert data["alone"].all()  # every bucket stands alone: drawn as points with their p10-p90 range
    spec = next(c.proto.spec for c in at.get("vega_lite_chart") if "p10" in c.proto.spec)
    assert '"filter": "datum.alone"' in spec and '"field": "run"' in spec
    assert spec.count('"type": "rule"') >= 2  # lone-bucket ranges and the promotion rules


def test_monitoring_page_without_champion(lake, monkeypatch):
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "pages/monitoring.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert "No model with a champion" in at.info[0].value


@pytest.fixture
def quality_lake(tmp_path, monkeypatch):
    """A champion whose latest window lost a feature (all null), with labels for half of it."""
    lake = build_champion(tmp_path / "lake", rows=2000)
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()
    s = settings_for(lake)
    send_feedback(lake, log_predictions(lake, traffic(600, seed=33, campaign=True)), share=0.5)
    monitor.check_drift_and_alert(MODEL, lake=lake, settings=s)
    broken = traffic(600, seed=34, campaign=True).with_columns(pl.lit(None, dtype=pl.Float64).alias("age"))
    send_feedback(lake, log_predictions(lake, broken), share=0.5)
    monitor.check_drift_and_alert(MODEL, window_rows=600, lake=lake, settings=s)
    return lake


def test_monitoring_page_shows_status_quality_attribution_multivariate_and_estimates(quality_lake):
    at = AppTest.from_file(str(ROOT / "pages/monitoring.py"), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    frames = [d.value for d in at.dataframe]
    status = next(f for f in frames if "reasons" in f.columns)
    age = status[status["feature"] == "age"].iloc[0]
    assert age["status"] == "no_data" and age["null_share"] == 1.0 and "no usable value" in age["reasons"]
    assert any("no_data" in c.value for c in at.caption)
    assert any("no_data" in e.label and "age had values in the reference" in e.label for e in at.expander)
    checks = at.selectbox(key="attribution_check")
    assert len(checks.options) == 2
    assert any("add up to the shift" in c.value for c in at.caption)
    assert any("CBPE" in c.value for c in at.caption)
    est = next(f for f in frames if "estimate" in f.columns)
    assert (est["coverage"] > 0.3).all() and est["realised"].notna().all()
    assert ((est["lower"] <= est["estimate"]) & (est["estimate"] <= est["upper"])).all()
    # heatmap, attribution, multivariate, distribution, scores, estimates, performance
    assert len(at.get("vega_lite_chart")) >= 7
    checks.set_value(checks.options[1]).run()
    assert not at.exception, at.exception


@pytest.mark.browser
def test_monitoring_page_in_chromium(quality_lake, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run must install it")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LAKEOPS_LAKE": quality_lake.uri, "PYTHONPATH": str(ROOT)}
    env.pop("LAKEOPS_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 4000})
                deadline = time.monotonic() + 60
                while True:
                    try:
                        page.goto(f"http://127.0.0.1:{port}/monitoring", timeout=10_000)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                page.get_by_text("What moved the score").first.wait_for(timeout=90_000)
                page.get_by_text("Estimated vs realised performance").first.wait_for(timeout=60_000)
                page.get_by_text("Multivariate drift (domain classifier)").first.wait_for(timeout=60_000)
                page.get_by_text("had values in the reference and none usable in the window", exact=False).first.wait_for(
                    timeout=60_000)
                page.locator("canvas, svg.marks").first.wait_for(timeout=60_000)
                charts = time.monotonic() + 60  # charts render one by one after their headings
                while page.locator(".vega-embed").count() < 7 and time.monotonic() < charts:
                    time.sleep(0.5)
                assert page.locator(".vega-embed").count() >= 7
                page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
