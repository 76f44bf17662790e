"""The API answers only to its own host names (DNS rebinding), and its OpenAPI schema documents
the problem responses."""

from __future__ import annotations

import httpx
import pytest

from core.config import load_settings
from core.serving.app import create_app
from core.serving.hosts import host_name
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    serving_settings,
)

PREDICT = "/v1/models/churn/predict"


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory):
    return copy_lake(champion_lake_path(tmp_path_factory), tmp_path_factory.mktemp("hosts") / "lake")


@pytest.fixture(scope="module")
def server(lake_path, tmp_path_factory):
    app = create_app(serving_settings(lake_path, tmp_path_factory.mktemp("wal")))
    with ThreadServer(app) as srv:
        yield srv


def _get(srv, path: str, host: str) -> httpx.Response:
    return httpx.get(srv.url + path, headers={"host": host}, timeout=30)


def test_requests_for_another_host_are_refused_before_routing(server):
    assert _get(server, "/health", f"127.0.0.1:{server.port}").status_code == 200
    assert _get(server, "/health", f"localhost:{server.port}").status_code == 200
    assert _get(server, "/health", "LOCALHOST").status_code == 200
    r = _get(server, "/v1/models", f"attacker.example:{server.port}")
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/invalid-host") and "'attacker.example'" in body["detail"]
    assert "[api] allowed_hosts" in body["detail"]
    # the predict fast path is behind the same check: nothing is scored
    p = httpx.post(server.url + PREDICT, json=demo_rows(3), headers={"host": "attacker.example"}, timeout=30)
    assert p.status_code == 400 and p.json()["type"].endswith("/invalid-host")
    assert _scored(server) == 0
    assert httpx.post(server.url + PREDICT, json=demo_rows(3), timeout=30).status_code == 200
    assert _scored(server) == 3


def _scored(srv) -> float:
    text = httpx.get(srv.url + "/metrics", timeout=30).text
    lines = [ln for ln in text.splitlines() if ln.startswith('lakeops_rows_scored_total{model="churn"}')]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_allowed_hosts_setting_replaces_the_default(lake_path, tmp_path):
    settings = serving_settings(lake_path, tmp_path / "wal").with_(api_allowed_hosts=("api.example.com", "[::1]"))
    with ThreadServer(create_app(settings)) as srv:
        assert _get(srv, "/health", "api.example.com:443").status_code == 200
        assert _get(srv, "/health", "[::1]:8000").status_code == 200
        assert _get(srv, "/health", f"127.0.0.1:{srv.port}").status_code == 400
    anything = serving_settings(lake_path, tmp_path / "wal2").with_(api_allowed_hosts=("*",))
    with ThreadServer(create_app(anything)) as srv:
        assert _get(srv, "/health", "whatever.example").status_code == 200


def test_default_allowed_hosts_follow_the_bound_address():
    loop = load_settings(env={}, config_path=None).allowed_hosts()
    assert loop == {"127.0.0.1", "localhost", "::1"}
    lan = load_settings(env={"LAKEOPS_API_HOST": "10.1.2.3"}, config_path=None).allowed_hosts()
    assert lan == {"10.1.2.3"}
    every = load_settings(env={"LAKEOPS_API_HOST": "0.0.0.0"}, config_path=None).allowed_hosts()  # noqa: S104
    assert {"localhost", "127.0.0.1", "0.0.0.0"} <= every and len(every) > 4  # plus this machine's names
    env = load_settings(env={"LAKEOPS_API_ALLOWED_HOSTS": "a.example, B.example"}, config_path=None)
    assert env.allowed_hosts() == {"a.example", "b.example"}


@pytest.mark.parametrize(
    ("header", "name"),
    [(b"127.0.0.1:8000", "127.0.0.1"), (b"[::1]:8000", "::1"), (b"[::1]", "::1"), (b"Example.COM", "example.com"), (b"", "")],
)
def test_host_name_of_a_header(header, name):
    assert host_name(header) == name


def test_openapi_documents_problem_responses(server):
    schema = httpx.get(server.url + "/schema/openapi.json", timeout=30).json()
    predict = schema["paths"]["/v1/models/{name}/predict"]["post"]["responses"]
    for status in ("200", "400", "404", "413", "415", "422", "503"):
        assert status in predict, status
    for status in ("404", "413", "415", "422"):
        content = predict[status]["content"]
        assert list(content) == ["application/problem+json"]
        ref = content["application/problem+json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        problem = schema["components"]["schemas"][ref]
        assert {"type", "title", "status", "detail"} <= set(problem["required"])
        assert "errors" in problem["properties"]
    feedback = schema["paths"]["/v1/models/{name}/feedback"]["post"]["responses"]
    assert "422" in feedback and "application/problem+json" in feedback["422"]["content"]
    assert "404" in schema["paths"]["/v1/models/{name}"]["get"]["responses"]
