"""Who may promote, with auth on: a read principal cannot (CLI, API, UI), one the policy names can, and the event names them."""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import auth, registry
from core.cli import run
from core.flows.promote import set_policy
from core.lake import Lake
from core.serving.app import create_app
from tests.test_serving_support import ThreadServer, champion_lake_path, copy_lake, metric, serving_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def world(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    lake = Lake(str(lake_path))
    tokens = {
        "boss": auth.create_token("boss", ["admin"], actor="tester", lake=lake)[0],
        "reader": auth.create_token("reader", ["read"], actor="tester", lake=lake)[0],
        "bob": auth.create_token("bob", ["read"], roles=["ml-lead"], actor="tester", lake=lake)[0],
    }
    return lake, tokens


def _cli(lake: Lake, token: str | None, *argv: str, actor: str = "mallory",
         process: bool = False) -> subprocess.CompletedProcess[str]:
    """``lakeops ARGV`` with auth on as ``token``: in a real process, or in this one (faster) with the
    environment, the output streams and the principal's context variable all restored afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEOPS_")}
    env.update({"LAKEOPS_LAKE": lake.uri, "LAKEOPS_AUTH": "tokens", "LAKEOPS_ACTOR": actor, "PYTHONPATH": str(ROOT)})
    if token:
        env["LAKEOPS_TOKEN"] = token
    if process:
        return subprocess.run([sys.executable, "-m", "core.cli", *argv], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = contextvars.copy_context().run(run, list(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _promotions(lake: Lake) -> pl.DataFrame:
    return registry.events("churn", lake=lake).filter(pl.col("action").is_in(["promote", "policy"]))


def test_cli_read_principal_cannot_promote_one_the_policy_names_can(world, tmp_path):
    lake, tok = world
    before = _promotions(lake).height

    r = _cli(lake, tok["reader"], "models", "promote", "churn", "2", "--force", "--reason", "try")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "reader may not promote versions of 'churn'" in r.stderr and "role:admin" in r.stderr
    r = _cli(lake, None, "models", "promote", "churn", "2", "--force", "--reason", "no token")
    assert r.returncode == 2 and "LAKEOPS_TOKEN" in r.stderr
    assert _cli(lake, tok["bob"], "models", "promote", "churn", "2", "--force", "--reason", "x").returncode == 2
    assert registry.champion_version("churn", lake) == 1 and _promotions(lake).height == before

    policy = tmp_path / "policy.toml"
    policy.write_text('[permissions]\npromote = ["role:ml-lead"]\n')
    r = _cli(lake, tok["bob"], "models", "policy", "churn", "--set", str(policy), "--reason", "give myself rights")
    assert r.returncode == 2 and "bob may not change the policy of 'churn'" in r.stderr
    r = _cli(lake, tok["boss"], "models", "policy", "churn", "--set", str(policy), "--reason", "ml leads promote")
    assert r.returncode == 0, r.stderr
    assert _promotions(lake)["actor"].to_list()[-1] == "boss"  # not LAKEOPS_ACTOR=mallory

    assert _cli(lake, tok["reader"], "models", "promote", "churn", "2", "--force", "--reason", "x").returncode == 2
    r = _cli(lake, tok["bob"], "models", "promote", "churn", "2", "--force", "--reason", "better")
    assert r.returncode == 0, r.stderr
    assert registry.champion_version("churn", lake) == 2
    last = registry.history("churn", "champion", lake=lake).row(-1, named=True)
    assert last["actor"] == "bob" and last["reason"] == "better" and last["version"] == 2
    # bob may promote but not roll back (the policy left rollback to admins)
    assert _cli(lake, tok["bob"], "models", "rollback", "churn", "--reason", "x").returncode == 2
    assert _cli(lake, tok["reader"], "models", "list").returncode == 0  # reading needs only read


def test_cli_commands_outside_policies_need_admin_and_a_valid_token(world):
    lake, tok = world
    r = _cli(lake, tok["reader"], "maintain", process=True)  # a real process, exit code and all
    assert r.returncode == 2 and "needs the 'admin' scope" in r.stderr
    r = _cli(lake, tok["reader"][:-2] + "zz", "models", "list")
    assert r.returncode == 2 and "does not match" in r.stderr and tok["reader"][20:] not in r.stderr
    auth.revoke_token(auth.parse_token(tok["reader"])[0], actor="tester", reason="left", lake=lake)
    r = _cli(lake, tok["reader"], "models", "list")
    assert r.returncode == 2 and "revoked" in r.stderr
    r = _cli(lake, tok["bob"], "tokens", "create", "eve", "--scope", "admin")
    assert r.returncode == 2 and "bob may not create tokens: it needs the 'admin' scope" in r.stderr
    assert "eve" not in auth.list_tokens(lake=lake)["principal"].to_list()


# ---------------------------------------------------------------- the API
def test_api_read_principal_cannot_promote_one_the_policy_names_can(world, tmp_path):
    lake, tok = world
    settings = serving_settings(Path(lake.uri), tmp_path / "wal").with_(auth_mode="tokens", actor="mallory")
    with ThreadServer(create_app(settings, lake=lake)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        def post(what: str, token: str | None, **body: object) -> httpx.Response:
            return c.post(f"/v1/models/churn/{what}", json=body,
                          headers={"Authorization": f"Bearer {token}"} if token else {})

        before = _promotions(lake).height
        assert post("promote", None, version=2, reason="x", force=True).status_code == 401
        r = post("promote", tok["reader"], version=2, reason="try", force=True)
        assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
        assert "reader may not promote versions of 'churn'" in r.json()["detail"] and "role:admin" in r.json()["detail"]
        assert post("promote", tok["bob"], version=2, reason="x", force=True).status_code == 403  # not in the policy yet
        assert post("rollback", tok["reader"], reason="x").status_code == 403
        assert registry.champion_version("churn", lake) == 1 and _promotions(lake).height == before

        with auth.acting_as(auth.authenticate(tok["boss"], lake=lake)):
            set_policy("churn", {"permissions": {"promote": ["role:ml-lead"]}}, reason="ml leads promote",
                       settings=settings, lake=lake)
        bad = post("promote", tok["bob"], version="two", reason="x")
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "version"
        spoof = post("promote", tok["bob"], version=2, reason="x", actor="boss")  # who acts is never a body field
        assert spoof.status_code == 422 and spoof.json()["errors"][0]["field"] == "actor"
        assert post("promote", tok["bob"], version=2, reason=" ").json()["errors"][0]["field"] == "reason"
        gated = post("promote", tok["bob"], version=2, reason="no gate run yet")  # the gate still applies
        assert gated.status_code == 409 and gated.json()["type"].endswith("/promotion-refused")
        assert post("promote", tok["bob"], version=9, reason="x", force=True).status_code == 404

        ok = post("promote", tok["bob"], version=2, reason="better on the campaign", force=True)
        assert ok.status_code == 200, ok.text
        assert ok.json()["actor"] == "bob" and ok.json()["version"] == 2 and ok.json()["previous_version"] == 1
        assert registry.champion_version("churn", lake) == 2
        last = registry.history("churn", "champion", lake=lake).row(-1, named=True)
        assert (last["actor"], last["reason"], last["version"]) == ("bob", "better on the campaign", 2)
        assert post("rollback", tok["bob"], reason="x").status_code == 403  # rollback stays an admin's
        back = post("rollback", tok["boss"], reason="back to v1")
        assert back.status_code == 200 and back.json()["actor"] == "boss" and back.json()["version"] == 1
        assert registry.history("churn", "champion", lake=lake).row(-1, named=True)["actor"] == "boss"
        text = c.get("/metrics", headers={"Authorization": f"Bearer {tok['reader']}"}).text
        assert metric(text, "lakeops_auth_failures_total", reason="missing") == 1
        assert metric(text, "lakeops_auth_failures_total", reason="forbidden") == 4  # the policy's refusals count too
        assert metric(text, "lakeops_requests_total", route="/v1/models/{name}/promote", status="403") == 2


# ---------------------------------------------------------------- the UI
@pytest.fixture
def ui(world, monkeypatch):
    lake, tok = world
    for k in [k for k in os.environ if k.startswith("LAKEOPS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.setenv("LAKEOPS_AUTH", "tokens")
    monkeypatch.setenv("LAKEOPS_ACTOR", "mallory")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield lake, tok
    st.cache_resource.clear()


def _signed_in(token: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="login_token").set_value(token)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    return at


def test_ui_needs_a_login_and_a_read_principal_sees_no_action(ui):
    lake, tok = ui
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert [t.value for t in at.title] == ["lakeops"] and not at.metric  # only the login, no page
    at.text_input(key="login_token").set_value(tok["reader"][:-3] + "abc")
    at.button[0].click().run()
    assert any("does not match" in e.value for e in at.error)
    assert all(tok["reader"][20:] not in e.value for e in at.error)

    at = _signed_in(tok["reader"])
    assert any("Signed in as **reader** (read)" in c.value for c in at.sidebar.caption)
    at.switch_page("pages/models.py").run()
    assert not at.exception, at.exception
    keys = {b.key for b in at.button}
    assert not keys & {"btn_evaluate", "btn_approve", "btn_reject", "btn_promote…", "btn_roll_back…", "btn_stage"}, keys
    assert any("you may look, not act" in c.value for c in at.caption)
    at.switch_page("pages/jobs.py").run()
    assert "run_now" not in {b.key for b in at.button}
    assert registry.champion_version("churn", lake) == 1


def test_ui_admin_promotes_and_the_event_names_them_not_a_typed_name(ui):
    lake, tok = ui
    at = _signed_in(tok["boss"])
    at.switch_page("pages/models.py").run()
    assert at.selectbox(key="version").value == 2
    at.button(key="btn_promote…").click().run()
    assert not at.exception, at.exception
    assert not [t for t in at.text_input if t.key == "dlg_actor"]  # nobody types who acts
    assert any("Recorded as **boss**" in c.value for c in at.caption)
    at.text_area(key="dlg_reason").set_value("v2 is better").run()
    at.checkbox(key="dlg_force").check().run()
    at.checkbox(key="dlg_sure").check().run()
    at.button(key="dlg_confirm").click().run()
    assert not at.exception, at.exception
    assert registry.champion_version("churn", lake) == 2
    last = registry.history("churn", "champion", lake=lake).row(-1, named=True)
    assert last["actor"] == "boss" and last["reason"] == "v2 is better"


def test_ui_oidc_sign_in_names_the_person_and_their_rights_come_from_auth_users(ui, tmp_path, monkeypatch):
    lake, _ = ui
    cfg = tmp_path / "lakeops.toml"
    cfg.write_text('[auth]\nui = "oidc"\n[auth.users."ana@example.com"]\nscopes = ["admin"]\nroles = ["ml-lead"]\n')
    monkeypatch.setenv("LAKEOPS_CONFIG", str(cfg))

    def as_user(user: dict) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.user = user  # what the identity provider said (st.user)
        at.run()
        assert not at.exception, at.exception
        return at

    out = as_user({"is_logged_in": False})
    assert [b.key for b in out.button] == ["oidc_login"] and not out.metric  # no page before the login
    assert not [t for t in out.text_input if t.key == "login_token"]  # no token form in oidc mode

    ana = as_user({"is_logged_in": True, "email": "Ana@Example.com", "name": "Ana"})
    assert any("Signed in as **ana@example.com** (admin; roles ml-lead)" in c.value for c in ana.sidebar.caption)
    ana.switch_page("pages/models.py").run()
    assert not ana.exception, ana.exception
    assert "btn_promote…" in {b.key for b in ana.button}

    guest = as_user({"is_logged_in": True, "email": "guest@example.com"})  # not listed: oidc_default_scopes (read)
    assert any("Signed in as **guest@example.com** (read)" in c.value for c in guest.sidebar.caption)
    guest.switch_page("pages/models.py").run()
    assert not {b.key for b in guest.button} & {"btn_promote…", "btn_approve", "btn_roll_back…"}

    cfg.write_text('[auth]\nui = "oidc"\noidc_default_scopes = []\n')
    st.cache_resource.clear()
    st.cache_data.clear()
    stranger = as_user({"is_logged_in": True, "email": "guest@example.com"})
    assert any("has no access" in e.value for e in stranger.error) and not stranger.metric
    assert "oidc_logout" in {b.key for b in stranger.button}
    assert registry.champion_version("churn", lake) == 1
