"""The Jobs page (AppTest): schedule, scheduler status, failures marked, "Run now" through core.jobruns."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import load_settings
from core.jobruns import Lease, history, run_job
from core.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
TOML = """
[jobs.extra.tick]
func = "jobfuncs:tick"
interval_s = 5
[jobs.extra.boom]
func = "jobfuncs:boom"
"""


@pytest.fixture
def ui(tmp_path, monkeypatch):
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text(TOML)
    monkeypatch.setenv("LAKEOPS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("LAKEOPS_CONFIG", str(cfg))
    settings = load_settings()
    st.cache_resource.clear()  # pages._common caches the settings/lake of the previous test
    return Lake.from_settings(settings), settings


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages/jobs.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_jobs_page_shows_schedule_failures_and_runs_a_job_now(ui):
    lake, settings = ui
    run_job("tick", lake=lake, settings=settings)
    run_job("boom", trigger="schedule", lake=lake, settings=settings)
    at = _page()
    assert any("No scheduler holds" in w.value for w in at.warning)
    schedule = at.dataframe[0].value
    assert dict(zip(schedule["job"], schedule["schedule"], strict=True))["tick"] == "every 5s"
    assert dict(zip(schedule["job"], schedule["last_status"], strict=True))["boom"] == "failed"
    assert [m.value for m in at.metric] == ["2", "1", "0"]
    assert any("Latest failure: **boom**" in e.value and "RuntimeError: boom" in e.value for e in at.error)
    runs = at.dataframe[1].value
    assert dict(zip(runs["job"], runs["outcome"], strict=True))["boom"] == "RuntimeError: boom: this job always fails"

    at.selectbox(key="job").set_value("tick").run()
    at.button(key="run_now").click().run()
    assert not at.exception, at.exception
    assert any("tick finished" in s.value for s in at.success)
    manual = history("tick", lake=lake).filter(pl.col("trigger") == "manual")
    assert manual.height == 2 and (manual["status"] == "finished").all()
    assert [m.value for m in at.metric][:2] == ["3", "1"]

    at.multiselect(key="filter_status").set_value(["failed"]).run()
    assert [m.value for m in at.metric][:2] == ["1", "1"]
    assert at.dataframe[1].value["job"].tolist() == ["boom"]


def test_retrain_from_the_page_needs_a_reason_and_a_confirmation(ui):
    lake, _ = ui
    at = _page()
    at.selectbox(key="job").set_value("retrain").run()
    at.button(key="run_now").click().run()
    assert not at.exception, at.exception
    assert at.button(key="job_confirm").disabled
    assert history("retrain", lake=lake).height == 0  # nothing ran on the click alone
    at.text_area(key="job_reason").set_value("campaign week").run()
    at.text_input(key="job_actor").set_value("ana").run()
    at.checkbox(key="job_sure").check().run()
    at.button(key="job_confirm").click().run()
    assert not at.exception, at.exception
    runs = history("retrain", lake=lake)
    assert runs["trigger"].to_list() == ["manual"] and runs["status"].to_list() == ["finished"]
    assert any("retrain finished" in s.value and "no model with a champion" in s.value for s in at.success)


def test_jobs_page_shows_the_scheduler_holding_the_lease(ui):
    lake, _ = ui
    lease = Lease(lake, holder="host-a:42:abc", ttl_s=60)
    assert lease.acquire()
    at = _page()
    assert any("`host-a:42:abc` holds the lease (epoch 1)" in s.value for s in at.success)
    assert any("No job has run" in i.value for i in at.info)
