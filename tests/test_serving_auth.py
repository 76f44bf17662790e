"""The API with auth on: scopes on every route, 401/403 problems, failures counted, revocation and expiry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.ipc
import pytest

from core import auth, demo, registry
from core.cli.serve import check_bind
from core.config import load_settings
from core.errors import ConfigError
from core.lake import Lake
from core.serving.app import ARROW, create_app
from tests.test_serving_arrow import _ipc
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    metric,
    serving_settings,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PREDICT = "/v1/models/churn/predict"
FEEDBACK = "/v1/models/churn/feedback"


@pytest.fixture
def world(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    lake = Lake(str(lake_path))
    tokens = {
        name: auth.create_token(name, scopes, actor="tester", lake=lake)[0]
        for name, scopes in (("scorer", ["predict"]), ("reader", ["read"]), ("labeller", ["feedback"]),
                             ("boss", ["admin"]))
    }
    settings = serving_settings(lake_path, tmp_path / "wal", poll_interval_s=0.2).with_(auth_mode="tokens")
    return lake, settings, tokens


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_route_needs_its_scope_and_refusals_are_problems_counted(world):
    lake, settings, tok = world
    app = create_app(settings, lake=lake)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/health").status_code == 200  # liveness stays open
        assert c.get("/ready").status_code == 200  # open by default ([auth] ready)
        rows = demo_rows(2)

        missing = c.post(PREDICT, json=rows)
        assert missing.status_code == 401
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.headers["www-authenticate"] == 'Bearer realm="lakeops"'
        body = missing.json()
        assert body["type"].endswith("/unauthenticated") and body["status"] == 401 and "Bearer" in body["detail"]

        wrong = c.post(PREDICT, json=rows, headers=_bearer(tok["scorer"][:-4] + "AAAA"))
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert tok["scorer"].split("_", 2)[2] not in wrong.text  # the secret is never echoed
        assert c.post(PREDICT, json=rows, headers={"Authorization": "Basic eDp5"}).status_code == 401
        assert c.post(PREDICT, json=rows, headers=_bearer("lko_nothex_x")).json()["detail"].startswith("malformed")

        forbidden = c.post(PREDICT, json=rows, headers=_bearer(tok["reader"]))
        assert forbidden.status_code == 403 and forbidden.json()["type"].endswith("/forbidden")
        assert "reader" in forbidden.json()["detail"] and "'predict'" in forbidden.json()["detail"]

        ids = []
        for _ in range(3):  # the first verifies (scrypt), the next ones take the cached fast path
            ok = c.post(PREDICT, json=rows, headers=_bearer(tok["scorer"]))
            assert ok.status_code == 200, ok.text
            ids += ok.json()["prediction_ids"]
        # one verification kept per token (keyed by its header): the scorer's, and the reader's refused above
        assert sorted(p.name for p in app.state.auth._verified.values()) == ["reader", "scorer"]
        assert c.post(PREDICT, json=rows, headers=_bearer(tok["boss"])).status_code == 200  # admin holds every scope
        arrow = {"content-type": ARROW, "accept": ARROW}
        body = _ipc(demo.generate(n=3, seed=5).select(demo.FEATURES).to_arrow())
        assert c.post(PREDICT, content=body, headers=arrow).status_code == 401  # Arrow bodies take the same guard
        assert c.post(PREDICT, content=body, headers={**arrow, **_bearer(tok["reader"])}).status_code == 403
        for _ in range(2):  # the scorer is verified already: the fast path answers Arrow too
            answer = c.post(PREDICT, content=body, headers={**arrow, **_bearer(tok["scorer"])})
            assert answer.status_code == 200 and answer.headers["content-type"] == ARROW
            assert pa.ipc.open_stream(answer.content).read_all().num_rows == 3

        assert c.get("/v1/models", headers=_bearer(tok["scorer"])).status_code == 403
        assert c.get("/v1/models", headers=_bearer(tok["reader"])).json()[0]["model"] == "churn"
        assert c.get("/v1/models/churn").status_code == 401
        assert c.get("/schema/openapi.json").status_code == 401  # the schema names every feature: read
        assert c.get("/schema/openapi.json", headers=_bearer(tok["reader"])).status_code == 200
        fb = [{"prediction_id": ids[0], "label": 1}]
        assert c.post(FEEDBACK, json=fb, headers=_bearer(tok["scorer"])).status_code == 403
        assert c.post(FEEDBACK, json=fb, headers=_bearer(tok["labeller"])).status_code == 202

        assert c.get("/metrics").status_code == 401  # /metrics needs read by default
        text = c.get("/metrics", headers=_bearer(tok["reader"])).text
        # predict (JSON, Arrow), model detail, schema, metrics
        assert metric(text, "lakeops_auth_failures_total", reason="missing") == 5
        assert metric(text, "lakeops_auth_failures_total", reason="invalid") == 1
        assert metric(text, "lakeops_auth_failures_total", reason="malformed") == 2
        assert metric(text, "lakeops_auth_failures_total", reason="forbidden") == 4
        assert metric(text, "lakeops_requests_total", route="/v1/models/{name}/predict", status="200") == 6
        assert metric(text, "lakeops_requests_total", route="/v1/models/{name}/predict", status="401") == 5


def test_revoked_expiring_and_new_tokens_take_effect_within_the_poll(world):
    lake, settings, tok = world
    with ThreadServer(create_app(settings, lake=lake)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        rows = demo_rows(1)
        assert c.post(PREDICT, json=rows, headers=_bearer(tok["scorer"])).status_code == 200  # cached now
        scorer_id = auth.parse_token(tok["scorer"])[0]
        auth.revoke_token(scorer_id, actor="tester", reason="laptop stolen", lake=lake)
        refused = wait_for(lambda: (r := c.post(PREDICT, json=rows, headers=_bearer(tok["scorer"]))).status_code == 401 and r)
        assert refused.json()["detail"].endswith("UTC") and "revoked" in refused.json()["detail"]

        fresh, _ = auth.create_token("late", ["predict"], actor="tester", lake=lake)  # made after the server started
        r = c.post(PREDICT, json=rows, headers=_bearer(fresh))
        assert r.status_code == 200, r.text

        short, _ = auth.create_token("temp", ["predict"], expires_days=2.0 / 86400, actor="tester", lake=lake)
        assert c.post(PREDICT, json=rows, headers=_bearer(short)).status_code == 200
        time.sleep(2.1)
        gone = c.post(PREDICT, json=rows, headers=_bearer(short))  # the fast path checks expiry too
        assert gone.status_code == 401 and "expired" in gone.json()["detail"]


def test_ready_and_metrics_routes_are_configurable(world, tmp_path):
    lake, settings, tok = world
    sections = {**settings.sections, "auth": {"ready": "read", "metrics": "open", "schema": "open"}}
    with ThreadServer(create_app(settings.with_(sections=sections), lake=lake)) as srv:
        assert httpx.get(srv.url + "/ready").status_code == 401
        assert httpx.get(srv.url + "/ready", headers=_bearer(tok["reader"])).status_code == 200
        assert httpx.get(srv.url + "/metrics").status_code == 200
        assert httpx.get(srv.url + "/schema/openapi.json").status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200


def test_auth_off_needs_no_token(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    with ThreadServer(create_app(serving_settings(lake_path, tmp_path / "wal"))) as srv:
        assert httpx.post(srv.url + PREDICT, json=demo_rows(1)).status_code == 200
        assert httpx.get(srv.url + "/v1/models").status_code == 200
        # moving the champion over the API needs someone authenticated to name in the event
        r = httpx.post(srv.url + "/v1/models/churn/promote", json={"version": 2, "reason": "x", "force": True})
        assert r.status_code == 403 and r.json()["type"].endswith("/auth-required") and "LAKEOPS_AUTH" in r.json()["detail"]
        assert registry.champion_version("churn", Lake(str(lake_path))) == 1


def test_a_public_bind_without_auth_refuses_to_start_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEOPS_")}
    env.update({"LAKEOPS_LAKE": str(tmp_path / "lake"), "PYTHONPATH": str(ROOT)})
    r = subprocess.run([sys.executable, "-m", "core.cli", "serve", "--host", "0.0.0.0"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "refusing to serve on 0.0.0.0 without authentication" in r.stderr
    assert "LAKEOPS_AUTH=tokens" in r.stderr and "--insecure" in r.stderr
    base = load_settings(env={}, config_path=None, lake_uri=str(tmp_path / "lake"))
    check_bind(base.with_(api_host="0.0.0.0"), insecure=True)  # the explicit opt-out
    check_bind(base.with_(api_host="0.0.0.0", auth_mode="tokens"), insecure=False)
    check_bind(base.with_(api_host="127.0.0.2"), insecure=False)  # loopback needs neither
    with pytest.raises(ConfigError, match="--insecure"):
        check_bind(base.with_(api_host="10.1.2.3"), insecure=False)


def test_the_readme_arrow_client_snippet_runs_as_written_against_an_auth_on_api(world, capsys):
    lake, settings, tok = world
    section = re.split(r"^## ", README.read_text(), flags=re.M)
    team = next(s for s in section if s.startswith("A team's deployment"))
    snippet = next(b for b in re.findall(r"^```python\n(.*?)^```", team, flags=re.M | re.S) if "arrow.stream" in b)
    with ThreadServer(create_app(settings, lake=lake)) as srv:
        code = snippet.replace('"http://127.0.0.1:8000"', repr(srv.url)).replace('"lko_..."', repr(tok["scorer"]))
        assert code != snippet
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own client code
    rows, score = capsys.readouterr().out.split()
    assert rows == "100" and 0.0 <= float(score) <= 1.0
