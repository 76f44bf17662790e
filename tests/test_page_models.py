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
def ui_lake(lake, monkeypatch, settings):
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.setenv("LAKEOPS_ACTOR", "uiuser")
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()  # pages/_common caches the lake handle per process: drop other tests' lakes
    datasets.ingest("churn", demo.generate(n=1500, seed=7), lake=lake, settings=settings)
    for seed, iters in ((0, 20), (1, 5)):
        run = train_model("churn", target="churned", params={"num_iterations": iters}, seed=seed, lake=lake, settings=settings)
        registry.register("churn", run.run_id, lake=lake, actor="tester")
    promote.evaluate("churn", 1, lake=lake, actor="tester", settings=settings)
    promote.promote("churn", 1, reason="launch", lake=lake, actor="tester", settings=settings)
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
    # version 2 (newest first) has no gate report yet; the empty section says how to get one
    assert at.selectbox(key="version").value == 2
    assert any("Not evaluated yet" in i.value and "Evaluate" in i.value for i in at.info)


def test_rejecting_the_champion_is_refused_in_the_page(ui_lake):
    at = _page()
    at.selectbox(key="version").set_value(1).run()
    at.text_input(key="reason").set_value("bad calibration").run()
    at.button(key="btn_reject").click().run()
    assert not at.exception
    assert any("is the champion" in e.value and "roll back or promote another version" in e.value for e in at.error)
    assert registry.statuses("churn", lake=ui_lake)[1] == "champion"
    assert at.dataframe[0].value["status"].tolist()[0] == "champion"


def test_actions_need_a_reason_and_alias_moves_need_a_confirmation(ui_lake):
    at = _page()
    at.button(key="btn_approve").click().run()
    assert any("Write a reason" in w.value for w in at.warning)
    assert promote.approval("churn", 2, lake=ui_lake) is None
    at.button(key="btn_evaluate").click().run()
    assert not at.exception
    assert sum("Gate" in s.value for s in at.success) == 1
    gate = at.dataframe[1].value
    assert "beat_champion:auc" in gate["check"].tolist()
    at.text_input(key="reason").set_value("reviewed").run()
    at.button(key="btn_approve").click().run()
    assert registry.statuses("churn", lake=ui_lake)[2] == "approved"

    at.button(key="btn_promote…").click().run()
    assert not at.exception
    assert at.button(key="dlg_confirm").disabled  # no reason, no confirmation yet
    at.text_area(key="dlg_reason").set_value("better on the new holdout").run()
    at.text_input(key="dlg_actor").set_value("ana").run()
    assert at.button(key="dlg_confirm").disabled
    at.checkbox(key="dlg_force").check().run()
    at.checkbox(key="dlg_sure").check().run()
    at.button(key="dlg_confirm").click().run()
    assert not at.exception, at.exception
    assert registry.champion_version("churn", ui_lake) == 2
    last = registry.history("churn", "champion", lake=ui_lake).row(-1, named=True)
    assert last["actor"] == "ana" and last["reason"] == "better on the new holdout" and last["forced"]
    assert any("v1 → v2" in s.value for s in at.success)

    at.button(key="btn_roll_back…").click().run()
    at.text_area(key="dlg_reason").set_value("incident 42").run()
    at.checkbox(key="dlg_sure").check().run()
    at.button(key="dlg_confirm").click().run()
    assert registry.champion_version("churn", ui_lake) == 1
    assert registry.history("churn", "champion", lake=ui_lake)["actor"].to_list()[-1] == "uiuser"
    assert [m.value for m in at.metric] == ["v1"]


def test_staged_rollout_section_shows_the_challenger_and_aborts_with_a_reason(ui_lake, settings):
    from core.flows import rollout
    from core.gating import Policy

    assert promote.evaluate("churn", 2, lake=ui_lake, actor="tester",
                            policy=Policy(beat_champion=None, max_p95_latency_ms={}), settings=settings).passed
    rollout.stage("churn", 2, mode="canary", fraction=0.2, reason="try on a fifth", actor="tester", lake=ui_lake, settings=settings)
    at = _page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Challenger"] == "v2" and metrics["Mode"] == "canary" and metrics["Traffic share"] == "20%"
    assert any("Not compared yet" in i.value for i in at.info)
    at.button(key="btn_unstage").click().run()
    assert not at.exception, at.exception
    assert at.button(key="ro_confirm").disabled
    at.text_area(key="ro_reason").set_value("customers complained").run()
    at.checkbox(key="ro_sure").check().run()
    at.button(key="ro_confirm").click().run()
    assert not at.exception, at.exception
    assert registry.state("churn", lake=ui_lake).stage is None
    assert registry.history("churn", "challenger", lake=ui_lake)["reason"].to_list()[-1] == "customers complained"
