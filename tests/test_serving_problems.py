"""Refusals on the predict fast path: answered there, decoded once, the same problem bodies and counts."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from core import auth
from core.lake import Lake
from core.serving.app import ARROW, create_app
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    metric,
    serving_settings,
)

PREDICT = "/v1/models/churn/predict"
ROUTE = "/v1/models/{name}/predict"


def _problem(status: int, slug: str, title: str, detail: str, errors: list | None = None) -> dict:
    doc = {"type": f"https://lakeops.dev/problems/{slug}", "title": title, "status": status, "detail": detail,
           "instance": PREDICT}
    if errors:
        doc["errors"] = errors
    return doc


def _cases() -> list[tuple[str, str, bytes, str, dict, int]]:
    """(name, query, body, content type, the problem answered before this change, bodies decoded)."""
    row = demo_rows(1)[0]
    missing = json.dumps([{k: v for k, v in row.items() if k != "age"}]).encode()
    return [
        ("missing feature", "", missing, "application/json",
         _problem(422, "invalid-input", "Unprocessable Content", "row 0, age: missing feature 'age'",
                  [{"row": 0, "field": "age", "message": "missing feature 'age'"}]), 1),
        ("not json", "", b"{not json", "application/json",
         _problem(400, "not-json", "Bad Request",
                  "the request body is not valid JSON: JSON is malformed: object keys must be strings (byte 1)"), 1),
        ("not arrow", "", b"garbage-arrow", ARROW,
         _problem(400, "not-arrow", "Bad Request",
                  "the body is not an Arrow IPC stream: Expected to read 1651663207 metadata bytes, but only read 9"), 1),
        ("unknown version", "?version=9", json.dumps([row]).encode(), "application/json",
         _problem(404, "model-version-not-found", "Not Found", "model 'churn' has versions 1-2; asked for 9"), 0),
        ("bad query", "?x=1", json.dumps([row]).encode(), "application/json",
         _problem(400, "bad-query", "Bad Request", "unknown query parameter 'x'; use version or alias",
                  [{"row": None, "field": "x", "message": "unknown query parameter"}]), 0),
    ]


@pytest.fixture
def lake_path(tmp_path, tmp_path_factory):
    return copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")


def test_a_refusal_on_the_fast_path_is_decoded_once_with_the_problem_of_litestars_route(lake_path, tmp_path):
    """With auth on, a token's first request takes Litestar's route (the guard verifies the token)
    and the next ones the fast path: the same refusal gets the same problem body, status and
    counts on both, and each request's body is decoded once."""
    lake = Lake(str(lake_path))
    token = auth.create_token("scorer", ["predict", "read"], actor="tester", lake=lake)[0]
    settings = serving_settings(lake_path, tmp_path / "wal").with_(auth_mode="tokens")
    cases = _cases()
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(settings, lake=lake)
    service, api_auth = app.state.service, app.state.auth
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for i, (name, query, body, ctype, expected, decodes) in enumerate(cases):
            # a fresh Authorization value per case: not verified yet, so Litestar's route answers first
            authz = "Bearer" + " " * (i + 1) + token
            assert not api_auth.fast(authz.encode(), "predict")
            answers = []
            for _ in range(2):
                before = service.bodies_decoded
                r = c.post(PREDICT + query, content=body, headers={**headers, "Authorization": authz,
                                                                    "content-type": ctype})
                assert service.bodies_decoded - before == decodes, name  # never a second decode
                answers.append((r.status_code, r.headers["content-type"], r.json()))
                assert api_auth.fast(authz.encode(), "predict")  # so the second request took the fast path
            litestar, fast = answers
            assert fast == litestar == (expected["status"], "application/problem+json", expected), name
        text = c.get("/metrics", headers=headers).text
    for _name, _query, _body, _ctype, expected, _ in cases:
        slug = expected["type"].rsplit("/", 1)[1]
        assert metric(text, "lakeops_errors_total", route=ROUTE, type=slug) == 2 * sum(
            1 for c in cases if c[4]["type"] == expected["type"])
    for status in {c[4]["status"] for c in cases}:
        assert metric(text, "lakeops_requests_total", route=ROUTE, status=str(status)) == 2 * sum(
            1 for c in cases if c[4]["status"] == status)


def test_a_request_the_wal_refuses_is_scored_once_and_answered_503(lake_path, tmp_path):
    """A full disk under the write-ahead file (/dev/full behind the active segment's descriptor):
    the request was decoded and scored, the WAL refuses it: one 503 problem, no second attempt
    (which would score again and log the request under new ids); the next request rolls to a new
    segment and is logged."""
    settings = serving_settings(lake_path, tmp_path / "wal", flush_interval_s=60)
    app = create_app(settings)
    service = app.state.service
    rows = demo_rows(3)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post(PREDICT, json=rows).status_code == 200
        wal = service.wal
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            with wal._file_lock:
                os.dup2(full, wal._fd)  # the active segment's descriptor now writes to a full device
        finally:
            os.close(full)
        decoded, written = service.bodies_decoded, wal.records_written
        scored = sum(service.metrics.rows_scored.values())
        r = c.post(PREDICT, json=rows)
        assert r.status_code == 503, r.text
        doc = r.json()
        assert doc["type"] == "https://lakeops.dev/problems/wal-unavailable" and doc["status"] == 503
        assert doc["detail"].startswith("the prediction could not be logged to the write-ahead file:")
        assert "No space left on device" in doc["detail"] and doc["instance"] == PREDICT
        assert service.bodies_decoded == decoded + 1  # decoded and scored once, refused once
        assert wal.records_written == written and sum(service.metrics.rows_scored.values()) == scored
        ok = c.post(PREDICT, json=rows)  # a new segment: serving goes on
        assert ok.status_code == 200 and wal.records_written == written + 1
        text = c.get("/metrics").text
    assert metric(text, "lakeops_errors_total", route=ROUTE, type="wal-unavailable") == 1
    assert metric(text, "lakeops_requests_total", route=ROUTE, status="503") == 1
    assert metric(text, "lakeops_requests_total", route=ROUTE, status="200") == 2
