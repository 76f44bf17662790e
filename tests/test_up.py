"""End to end: `lakeops up` on a fresh lake, a real prediction, SQL, the UI in Chromium, Ctrl-C.

One `lakeops up` process serves the whole module (seeding trains a real model, so it is started
once); the tests run in file order and the last one stops it with SIGINT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.lake = tmp / "lake"
        self.api_port, self.ui_port = _free_port(), _free_port()
        self.env = {
            **os.environ,
            "LAKEOPS_LAKE": str(self.lake),
            "LAKEOPS_API_PORT": str(self.api_port),
            "LAKEOPS_UI_PORT": str(self.ui_port),
            "LAKEOPS_ACTOR": "e2e",
        }
        self.env.pop("LAKEOPS_CONFIG", None)
        self.cwd = tmp
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "up"],
            cwd=tmp,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed; output so far:\n" + "\n".join(self.lines))

    def lakeops(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core.cli", *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("up"))
    try:
        s.wait_for("press Ctrl-C", timeout=300)
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_up_prints_the_addresses(stack):
    out = "\n".join(stack.lines)
    assert f"http://127.0.0.1:{stack.api_port}" in out
    assert f"http://127.0.0.1:{stack.ui_port}" in out
    assert "champion" in out


def test_predict_on_the_running_api_is_logged_and_queryable(stack):
    from core import demo

    row = demo.generate(5, seed=7).drop([demo.TARGET, demo.TIME_COLUMN, "customer_id"], strict=False).to_dicts()[0]
    resp = httpx.post(f"http://127.0.0.1:{stack.api_port}/v1/models/churn/predict", json=[row], timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "churn" and body["version"] == 1
    assert 0.0 <= body["scores"][0] <= 1.0 and len(body["prediction_ids"]) == 1
    deadline = time.monotonic() + 30
    n = 0
    while time.monotonic() < deadline:
        res = stack.lakeops("sql", "select count(*) as n from predictions", "--format", "json")
        if res.returncode == 0:
            n = json.loads(res.stdout)[0]["n"]
            if n >= 1:
                break
        time.sleep(0.5)
    assert n >= 1, "the prediction never reached the predictions table"
    table = stack.lakeops("sql", "select model, model_version, score from predictions")
    assert table.returncode == 0 and "churn" in table.stdout


@pytest.mark.browser
def test_ui_overview_and_sql_console_in_chromium(stack):
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run must install it")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{stack.ui_port}/", timeout=60_000)
            page.get_by_text("Last drift check").first.wait_for(timeout=60_000)
            assert page.get_by_text("v1", exact=True).first.is_visible()
            page.get_by_text("Live auc").first.wait_for(timeout=30_000)
            page.get_by_role("link", name="SQL console").click()
            page.get_by_role("textbox").first.wait_for(timeout=30_000)
            page.get_by_role("textbox").first.fill("select 40 + 2 as answer")
            page.get_by_role("button", name="Run").click()
            page.get_by_text("1 rows").wait_for(timeout=30_000)
        finally:
            browser.close()


def test_ctrl_c_stops_everything_cleanly(stack):
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    assert len(children) >= 3
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left: {alive}"
    stack.wait_for("stopped", timeout=5)
    # the lake is whole: every table still reads
    res = stack.lakeops("tables", "--lake", str(stack.lake))
    assert res.returncode == 0, res.stderr
    frame = pl.DataFrame([ln.split()[:3] for ln in res.stdout.splitlines()[2:-1]], orient="row")
    assert frame.height >= 5
