"""The Overview: each model's story from core.overview.model_story, and the page that shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.flows import monitor
from core.overview import model_story, overview
from tests.monitor_world import MODEL, build_champion, log_predictions, send_feedback, settings_for, traffic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    lake = build_champion(tmp_path_factory.mktemp("overview") / "lake", rows=2000)
    s = settings_for(lake, models={MODEL: {"monitoring": {"min_labels": 100}}})
    send_feedback(lake, log_predictions(lake, traffic(400, seed=5, campaign=True)))
    monitor.check_drift_and_alert(MODEL, lake=lake, settings=s)
    return lake, s


def test_model_story_says_who_made_the_champion_how_it_does_and_what_happened(world):
    lake, s = world
    story = model_story(MODEL, lake=lake, settings=s)
    assert story.champion == 1 and story.champion_by == "tester" and story.champion_reason == "first champion"
    assert story.metric == "auc" and story.labelled == 400 and 0 < story.live_value < 1
    assert story.alert_below == pytest.approx(story.gate_value - 0.05)
    assert story.last_check_drifted is True and story.last_check_share > 0.5
    assert "drift:churn" in story.open_alerts["fingerprint"].to_list()
    events = story.timeline
    assert events["at"].is_sorted(descending=True)
    assert set(events["event"].to_list()) >= {"register", "gate", "promote", "drift open"}
    assert overview(lake=lake).open_alerts == story.open_alerts.height


def test_overview_page_links_the_alert_and_the_champion(world, monkeypatch):
    lake, _ = world
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)  # through the router: page links resolve
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Open alerts"]) >= 1 and metrics["Champion"] == "v1" and metrics["Last drift check"] == "DRIFT"
    assert any(k.startswith("Live auc (400 labelled)") for k in metrics)
    links = [(p.proto.label, p.proto.page) for p in at.get("page_link")]
    assert ("See the alerts", "monitoring") in [(lbl, page.split("/")[-1].removesuffix(".py")) for lbl, page in links]
    assert any("by **tester**: first champion" in c.value for c in at.caption)
