from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import datasets, demo, registry
from core.flows import promote
from core.flows.train import train_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ui_lake(lake, monkeypatch):
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.setenv("LAKEOPS_ACTOR", "uiuser")
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()  # pages/_common caches the lake handle per process: drop other tests' lakes
    datasets.ingest("churn", demo.generate(n=1500, seed=7), lake=lake)
    for seed, iters in ((0, 20), (1, 5)):
        run = train_model("churn", target="churned", params={"num_iterations": iters}, seed=seed, lake=lake)
        registry.register("churn", run.run_id, lake=lake, actor="tester")
    promote.evaluate("churn", 1, lake=lake, actor="tester")
    promote.promote("churn", 1, reason="launch", lake=lake, actor="tester")
    return lake


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages/models.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_models_page_shows_versions_aliases_gate_and_history(ui_lake):
    at = _page()
    assert [m.value for m in at.metric] == ["v1"]
    assert [m.label for m in at.metric] == ["champion"]
    frame = at.dataframe[0].value
    assert frame["version"].tolist() == [1, 2]
    assert frame["status"].tolist() == ["champion", "candidate"]
    assert len(at.get("vega_lite_chart")) == 1
    hist = at.dataframe[-1].value
    assert hist["reason"].tolist() == ["launch"] and hist["actor"].tolist() == ["tester"]
    # version 2 (newest first) has no gate report yet
    assert at.selectbox(key="version").value == 2
    assert any("Not evaluated" in c.value for c in at.caption)


def test_models_page_actions_need_a_reason_and_call_core(ui_lake):
    at = _page()
    at.button(key="btn_promote").click().run()
    assert at.error and "needs a reason" in at.error[0].value
    at.text_input(key="reason").set_value("from the UI").run()
    at.button(key="btn_promote").click().run()
    assert at.error and "no gate report" in at.error[0].value  # gate first
    at.button(key="btn_evaluate").click().run()
    assert not at.exception
    gate = at.dataframe[1].value
    assert "beat_champion:auc" in gate["check"].tolist()
    assert registry.statuses("churn", lake=ui_lake)[2] == "candidate"
    at.button(key="btn_approve").click().run()
    assert not at.error, [e.value for e in at.error]
    assert registry.statuses("churn", lake=ui_lake)[2] == "approved"
    at.checkbox(key="force").check().run()
    at.button(key="btn_promote").click().run()
    assert not at.exception and any("v1 -> v2" in s.value for s in at.success), [e.value for e in at.error]
    assert registry.champion_version("churn", ui_lake) == 2
    assert registry.history("churn", "champion", lake=ui_lake)["actor"].to_list() == ["tester", "uiuser"]
    at.button(key="btn_roll_back").click().run()
    assert registry.champion_version("churn", ui_lake) == 1
    assert [m.value for m in at.metric] == ["v1"]
