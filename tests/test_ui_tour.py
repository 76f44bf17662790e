"""Every page and every action of the UI in headless Chromium, on a lake after a simulated closed loop.

The lake (``tests/ui_world.py``) went through the loop with real components; 10,000 job runs are
added for the Jobs page's cost. ``lakeops ui`` serves it on a free port. The tour fails on any
exception box or any request to a host other than 127.0.0.1; it saves a screenshot per page and
the measured figures (render time in the browser, server CPU per page) under ``tmp/pytest/ui/``
of the checkout (not committed). Figures are recorded, never asserted (no wall-clock assertion).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import psutil
import pytest

from core import monitoring, registry
from core.ids import new_ids, utcnow
from core.jobruns import history
from tests.test_serving_support import free_port
from tests.ui_world import MODEL, closed_loop_lake

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tmp" / "pytest" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = ["overview", "datasets", "experiments", "models", "monitoring", "jobs", "sql"]
JOB_RUNS = 10_000


def _add_job_runs(lake, n: int, batches: int = 100) -> None:
    """``n`` finished runs of the built-in jobs, in ``batches`` commits (as a long-running scheduler leaves them)."""
    now = utcnow()
    jobs = ["drift_check", "performance_check", "maintenance", "retrain"]
    per = n // batches
    for b in range(batches):
        ids = new_ids(per)
        started = [now - timedelta(minutes=5 * (n - b * per - i)) for i in range(per)]
        rows = []
        for i, (rid, at) in enumerate(zip(ids, started, strict=True)):
            job = jobs[(b * per + i) % len(jobs)]
            base = {"job_run_id": rid, "job": job, "trigger": "schedule", "started_at": at, "error": None,
                    "host": "old-host", "pid": 1}
            rows.append({**base, "status": "running", "ended_at": None, "outputs_json": None, "at": at})
            rows.append({**base, "status": "finished", "ended_at": at + timedelta(seconds=1),
                         "outputs_json": json.dumps({"models": {MODEL: {"status": "ok", "drifted": False}}}),
                         "at": at + timedelta(seconds=1)})
        lake.append("job_runs", rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run must install it")
        pytest.skip("chromium not installed")
    root = tmp_path_factory.mktemp("tour")
    lake, _ = closed_loop_lake(root)
    _add_job_runs(lake, JOB_RUNS)
    port = free_port()
    env = {**os.environ, "LAKEOPS_LAKE": lake.uri, "LAKEOPS_UI_PORT": str(port), "LAKEOPS_ACTOR": "tour"}
    env.pop("LAKEOPS_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "ui"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            kids = psutil.Process(proc.pid).children(recursive=True)
            server = next((k for k in kids if "streamlit" in " ".join(k.cmdline())), None)
            try:
                import httpx

                if server and httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the UI did not start"
            time.sleep(0.3)
        OUT.mkdir(parents=True, exist_ok=True)
        yield {"lake": lake, "url": f"http://127.0.0.1:{port}", "server": server, "figures": {}}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser(world):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        context = b.new_context(viewport={"width": 1400, "height": 900}, timezone_id="Europe/Berlin")
        external: list[str] = []

        def watch(request) -> None:  # noqa: ANN001
            host = urlparse(request.url).hostname
            if request.url.startswith(("http:", "https:", "ws:", "wss:")) and host not in ("127.0.0.1", "localhost"):
                external.append(request.url)

        context.on("request", watch)
        page = context.new_page()
        yield page, external
        b.close()
    with (OUT / "figures.json").open("w") as f:
        json.dump(world["figures"], f, indent=2)
    sys.stdout.write("\nUI figures: " + json.dumps(world["figures"]) + "\n")


def _state(page) -> str | None:  # noqa: ANN001
    return page.evaluate("() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState")


def _settle(page, *, started: bool = False, timeout: float = 120) -> None:  # noqa: ANN001
    """Wait until the script run the last interaction started has finished (and nothing is stale)."""
    if not started:
        try:
            page.wait_for_function("() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState"
                                   " === 'running'", timeout=3000)
        except Exception:  # noqa: BLE001 - a run so short that it was never seen running
            pass
    page.wait_for_function("() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState"
                           " === 'notRunning'", timeout=timeout * 1000)
    page.wait_for_timeout(300)


def _clean(page, external: list[str], where: str) -> None:  # noqa: ANN001
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"{where}: exception box: {boxes.first.inner_text()[:500]}"
    assert not external, f"{where}: requests to other hosts: {external}"


def _visit(world, browser, name: str, query: str = "") -> object:
    page, external = browser
    cpu = world["server"].cpu_times()
    t0 = time.perf_counter()
    page.goto(f"{world['url']}/{'' if name == 'overview' else name}{query}", timeout=60_000)
    page.get_by_test_id("stMain").locator("h1").first.wait_for(timeout=60_000)
    _settle(page, started=True)
    took = time.perf_counter() - t0
    after = world["server"].cpu_times()
    world["figures"].setdefault(name, []).append({
        "render_s": round(took, 3), "server_cpu_s": round((after.user + after.system) - (cpu.user + cpu.system), 3)})
    _clean(page, external, name)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(900, height + 40), 8000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / f"{name}{'-' + query.strip('?').replace('=', '-').replace('&', '_') if query else ''}.png"))
    page.set_viewport_size({"width": 1400, "height": 900})
    return page


def _choose(page, label: str, option: str) -> None:  # noqa: ANN001
    """Pick ``option`` by typing it into the selectbox (long lists are virtualised; a live refresh may close it)."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).first
    for attempt in range(3):
        box.click()
        page.keyboard.type(option)
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - the dropdown closed under us: try again
            page.keyboard.press("Escape")
            if attempt == 2:
                raise
    _settle(page)


def _type(locator, text: str) -> None:  # noqa: ANN001
    locator.fill(text)
    locator.press("Tab")  # Streamlit commits a text input on blur


def test_every_page_renders_in_the_viewers_zone_without_errors(world, browser):
    for name in PAGES:
        page = _visit(world, browser, name)
        text = page.get_by_test_id("stMain").inner_text()
        assert "Traceback" not in text
        if name in ("overview", "monitoring", "models", "jobs"):
            assert "CET" in text or "Europe/Berlin" in text, f"{name}: times are not in the viewer's zone"
    page, _ = browser
    # no Deploy button or developer menu for users
    assert page.get_by_role("button", name="Deploy").count() == 0
    assert page.get_by_test_id("stMainMenu").count() == 0


def test_overview_links_to_the_alert_and_shows_drift_as_a_warning(world, browser):
    page = _visit(world, browser, "overview")
    assert page.get_by_text("Last drift check").count() == 1
    delta = page.get_by_test_id("stMetricDelta").filter(has_text="of features drifted").first
    color = delta.evaluate("e => getComputedStyle(e).color")
    r, g, b = (int(x) for x in color[color.index("(") + 1:color.index(")")].split(",")[:3])
    assert r > g and r > b, f"drift is not shown as a warning: {color}"
    page.get_by_role("link", name="See the alerts").click()
    page.get_by_test_id("stMain").get_by_text("Alerts", exact=True).wait_for(timeout=60_000)
    _settle(page)
    assert "monitoring" in page.url


def test_monitoring_actions_and_alert_handling(world, browser):
    lake = world["lake"]
    page = _visit(world, browser, "monitoring", f"?model={MODEL}")
    _, external = browser
    drift = pl.col("fingerprint") == f"drift:{MODEL}"
    assert monitoring.alerts(MODEL, lake=lake).filter(drift).height == 1
    _choose(page, "Feature", "plan")
    assert page.get_by_text("**plan**").count() == 0 and page.get_by_text("chisquare").count() >= 1
    alert = page.get_by_test_id("stExpander").filter(has_text="OPEN · drift ·").first
    alert.get_by_role("button", name="Acknowledge").click()
    _settle(page)
    assert page.get_by_text("Write a reason first").count() == 1
    _type(alert.get_by_label("Reason (required)"), "campaign traffic, expected")
    _settle(page)
    alert.get_by_role("button", name="Acknowledge").click()
    _settle(page)
    assert monitoring.alerts(MODEL, status="acknowledged", lake=lake).filter(drift).height == 1
    alert = page.get_by_test_id("stExpander").filter(has_text="ACKNOWLEDGED").first
    _type(alert.get_by_label("Reason (required)"), "retrained by hand")
    _settle(page)
    alert.get_by_role("button", name="Resolve").click()
    _settle(page)
    _clean(page, external, "alert handling")
    last = monitoring.alert_history(MODEL, lake=lake).filter(drift).row(-1, named=True)
    assert last["status"] == "resolved" and "resolved by tour: retrained by hand" in last["message"]
    page.get_by_test_id("stExpander").filter(has_text="· drift ·").first.wait_for(state="detached", timeout=30_000)
    page.get_by_role("button", name="Run drift check now").click()
    _settle(page)
    page.get_by_role("button", name="Run performance check now").click()
    _settle(page)
    _clean(page, external, "monitoring checks")


def test_models_guardrails_in_the_browser(world, browser):
    lake = world["lake"]
    champion = registry.champion_version(MODEL, lake)
    page = _visit(world, browser, "models", f"?model={MODEL}&version={champion}")
    _, external = browser
    reason = page.get_by_label("Reason (required for approve and reject)")
    _type(reason, "bad calibration")
    _settle(page)
    page.get_by_role("button", name="Reject").click()
    _settle(page)
    assert page.get_by_text("is the champion and keeps serving").count() == 1
    assert "--" not in page.get_by_test_id("stAlert").filter(has_text="is the champion").first.inner_text()
    assert registry.statuses(MODEL, lake=lake)[champion] == "champion"
    page.get_by_role("button", name="Evaluate").click()
    _settle(page)
    page.get_by_role("button", name="Approve").click()
    _settle(page)
    assert registry.statuses(MODEL, lake=lake)[champion] == "champion"  # approval does not move it
    _clean(page, external, "models actions")

    _choose(page, "Version", "1")
    page.get_by_role("button", name="Promote…").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=30_000)
    confirm = dialog.get_by_role("button", name="Confirm")
    assert confirm.is_disabled()
    _type(dialog.get_by_label("Reason (required, recorded in the audit trail)"), "tour: back to v1 for a test")
    _settle(page)
    dialog.get_by_text("Force past a failed or missing gate").click()
    _settle(page)
    assert confirm.is_disabled()  # still no confirmation
    dialog.get_by_text("I understand this changes what production serves").click()
    _settle(page)
    confirm.click()
    _settle(page)
    _clean(page, external, "promote dialog")
    assert registry.champion_version(MODEL, lake) == 1
    last = registry.history(MODEL, "champion", lake=lake).row(-1, named=True)
    assert last["actor"] == "tour" and last["reason"] == "tour: back to v1 for a test"

    page.get_by_role("button", name="Roll back…").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=30_000)
    _type(dialog.get_by_label("Reason (required, recorded in the audit trail)"), "tour: undo")
    _settle(page)
    dialog.get_by_text("I understand this changes what production serves").click()
    _settle(page)
    dialog.get_by_role("button", name="Confirm").click()
    _settle(page)
    assert registry.champion_version(MODEL, lake) == champion
    _clean(page, external, "rollback dialog")


def test_jobs_run_now_and_retrain_with_a_reason(world, browser):
    lake = world["lake"]
    page = _visit(world, browser, "jobs")
    _, external = browser
    assert page.get_by_text(f"{JOB_RUNS:,}").count() >= 1 or history(lake=lake).height > JOB_RUNS
    _choose(page, "Job", "drift_check")
    page.get_by_role("button", name="Run now").click()
    _settle(page)
    page.get_by_text("drift_check finished").wait_for(timeout=60_000)
    _choose(page, "Job", "retrain")
    versions = registry.versions(MODEL, lake=lake).height
    page.get_by_role("button", name="Run now…").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=30_000)
    assert dialog.get_by_role("button", name="Run").is_disabled()
    _type(dialog.get_by_label("Reason (required, recorded in the audit trail)"), "tour: refresh on new labels")
    _settle(page)
    _type(dialog.get_by_label("Who (recorded as the actor)"), "tour-ana")
    _settle(page)
    dialog.get_by_text("I understand this can change what production serves").click()
    _settle(page)
    dialog.get_by_role("button", name="Run").click()
    _settle(page, timeout=300)
    page.get_by_text("retrain finished").wait_for(timeout=300_000)
    _clean(page, external, "jobs run now")
    assert registry.versions(MODEL, lake=lake).height == versions + 1
    new = registry.events(MODEL, lake=lake).filter(pl.col("version") == versions + 1)
    assert set(new["actor"].to_list()) == {"tour-ana"}
    _choose(page, "Job", "maintenance")  # the filters, and a second load with the cached history
    page.get_by_test_id("stMultiSelect").first.click()
    page.get_by_role("option", name="retrain").click()
    _settle(page)
    _visit(world, browser, "jobs")


def test_datasets_experiments_and_sql_controls(world, browser):
    page = _visit(world, browser, "datasets", "?dataset=churn")
    _, external = browser
    for tab in ("Validation", "Diff", "Quarantine", "Profile"):
        page.get_by_role("tab", name=tab).click()
        _settle(page)
    _clean(page, external, "datasets tabs")
    page = _visit(world, browser, "experiments")
    for tab in ("Compare", "Feature importance", "Lineage", "Metric curves"):
        page.get_by_role("tab", name=tab).click()
        _settle(page)
    _clean(page, external, "experiments tabs")
    page = _visit(world, browser, "sql")
    area = page.get_by_role("textbox").first
    area.fill("select count(*) as n from job_runs")
    area.press("Control+Enter")
    _settle(page)
    page.get_by_role("button", name="Run").click()
    _settle(page)
    page.get_by_text("1 rows").wait_for(timeout=30_000)
    _clean(page, external, "sql")
