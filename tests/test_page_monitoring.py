from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.flows import monitor
from tests.monitor_world import MODEL, build_champion, log_predictions, send_feedback, settings_for, traffic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ui_lake(tmp_path, monkeypatch):
    lake = build_champion(tmp_path / "lake", rows=2000)
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()
    s = settings_for(lake)
    send_feedback(lake, log_predictions(lake, traffic(600, seed=31, campaign=False)), share=0.5)
    monitor.check_drift(MODEL, lake=lake, settings=s)
    send_feedback(lake, log_predictions(lake, traffic(600, seed=32, campaign=True)), share=0.5)
    monitor.check_drift(MODEL, window_rows=600, lake=lake, settings=s)
    return lake


def test_monitoring_page_shows_drift_alerts_and_charts(ui_lake):
    at = AppTest.from_file(str(ROOT / "pages/monitoring.py"), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == ["DRIFT"]
    assert any("data drift" in e.label for e in at.expander)
    assert len(at.get("vega_lite_chart")) >= 4  # heatmap, distribution, scores, performance
    assert at.selectbox(key="feature").options[0] == "model score"  # the score row, named for people
    at.selectbox(key="feature").set_value("plan").run()
    assert not at.exception, at.exception
    at.button(key="run_drift").click().run()
    assert not at.exception, at.exception
    shown = [e.value for e in (*at.error, *at.success, *at.warning, *at.info)]
    assert any("share" in m and "alert" in m for m in shown), shown


def test_monitoring_page_without_champion(lake, monkeypatch):
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "pages/monitoring.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert "No model with a champion" in at.info[0].value
