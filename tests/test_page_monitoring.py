"""The Monitoring page (AppTest): alerts with evidence and handling, drift as a warning, per-version score chart."""

from __future__ import annotations

import io
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
    monitor.check_drift(MODEL, lake=lake, settings=s)
    send_feedback(lake, log_predictions(lake, traffic(600, seed=32, campaign=True)), share=0.5)
    monitor.check_drift(MODEL, window_rows=600, lake=lake, settings=s)
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
    at = _page()
    at.button(key="ack_drift:churn").click().run()
    assert any("Write a reason first" in w.value for w in at.warning)
    assert monitoring.alerts(MODEL, lake=ui_lake).height == 1
    at.text_input(key="alert_reason_drift:churn").set_value("campaign: expected").run()
    at.button(key="ack_drift:churn").click().run()
    assert not at.exception, at.exception
    assert any(e.label.startswith("ACKNOWLEDGED") for e in at.expander)
    assert monitoring.alerts(MODEL, status="acknowledged", lake=ui_lake).height == 1
    at.text_input(key="alert_reason_drift:churn").set_value("retrained by hand").run()
    at.button(key="resolve_drift:churn").click().run()
    assert not at.exception, at.exception
    rows = monitoring.alert_history(MODEL, lake=ui_lake)
    assert rows["status"].to_list() == ["open", "acknowledged", "resolved"]
    assert "resolved by ana: retrained by hand" in rows["message"][-1]
    assert any("No open alert" in s.value for s in at.success)


def test_score_chart_draws_each_version_apart_without_bridging_gaps(tmp_path, monkeypatch):
    lake = build_champion(tmp_path / "lake", rows=1500)
    now = utcnow()
    log_predictions(lake, traffic(50, seed=1, campaign=False), at=now - timedelta(hours=3))
    log_predictions(lake, traffic(50, seed=2, campaign=False), at=now - timedelta(hours=1))
    run = train_model("churn", target="churned", params={"num_iterations": 10}, seed=3, lake=lake)
    registry.register(MODEL, run.run_id, lake=lake, actor="tester")
    promote.promote(MODEL, 2, reason="v2", force=True, lake=lake, actor="tester")
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
