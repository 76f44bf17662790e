from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import polars as pl
import pytest

from core import registry
from core.lake import Lake
from core.serving.app import create_app
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    metric,
    serving_settings,
    wait_for,
)

PREDICT = "/v1/models/churn/predict"


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory):
    return copy_lake(champion_lake_path(tmp_path_factory), tmp_path_factory.mktemp("serving_api") / "lake")


@pytest.fixture(scope="module")
def server(lake_path, tmp_path_factory):
    settings = serving_settings(
        lake_path, tmp_path_factory.mktemp("wal"), max_rows=2000, request_max_body_size=1_000_000,
        unknown_category="error",  # the opt-in policy: an unseen level is a 422
    )
    app = create_app(settings)
    with ThreadServer(app) as srv:
        srv.service = app.state.service
        srv.client = httpx.Client(base_url=srv.url, timeout=30)
        yield srv


def _logged(lake_path, ids):
    lake = Lake(str(lake_path))
    if not lake.exists("predictions/churn"):
        return pl.DataFrame()
    frame = lake.read("predictions/churn")
    return frame.filter(pl.col("prediction_id").is_in(ids))


def test_predict_equals_in_process_scores_and_is_logged(server, lake_path):
    rows = demo_rows(40)
    r = server.client.post(PREDICT, json=rows)
    assert r.status_code == 200, r.text
    out = r.json()
    loaded = registry.load("churn", lake=Lake(str(lake_path)))
    expected = loaded.model.predict(pl.DataFrame(rows))
    assert out["model"] == "churn" and out["version"] == loaded.version == 1
    assert out["scores"] == expected.tolist()  # exact, not approximate
    assert out["labels"] == (expected >= loaded.signature["threshold"]).astype(int).tolist()
    assert len(set(out["prediction_ids"])) == 40

    cols = {k: [row[k] for row in rows] for k in rows[0]}
    r2 = server.client.post(PREDICT, json={"columns": cols})
    assert r2.status_code == 200 and r2.json()["scores"] == out["scores"]

    ids = out["prediction_ids"] + r2.json()["prediction_ids"]
    wait_for(lambda: _logged(lake_path, ids).height == 80)
    logged = _logged(lake_path, ids)
    first = logged.filter(pl.col("prediction_id") == ids[0]).row(0, named=True)
    assert first["score"] == out["scores"][0] and first["model_version"] == 1
    assert first["features"]["plan"] == rows[0]["plan"] and first["features"]["tenure_months"] == rows[0]["tenure_months"]
    assert first["latency_ms"] > 0 and first["predicted_label"] == out["labels"][0]
    assert str(first["day"]) == first["at"].date().isoformat()


def test_concurrent_requests_are_microbatched_without_changing_scores(server, lake_path):
    rows = demo_rows(64, seed=9)
    loaded = registry.load("churn", lake=Lake(str(lake_path)))
    expected = loaded.model.predict(pl.DataFrame(rows)).tolist()

    def one(i):
        return server.client.post(PREDICT, json=[rows[i]]).json()["scores"][0]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(64)))
    assert got == expected


def _bad_cases():
    row = demo_rows(1)[0]
    cols = {k: [v] for k, v in row.items()}
    return [
        ("missing", [{k: v for k, v in row.items() if k != "age"}], 422, (0, "age")),
        ("extra", [{**row, "shoe_size": 42}], 422, (0, "shoe_size")),
        ("wrong type", [row, {**row, "tenure_months": "ten"}], 422, (1, "tenure_months")),
        ("unknown level", [row, row, {**row, "plan": "platinum"}], 422, (2, "plan")),
        ("nan literal", json.dumps([{**row, "age": 1}]).replace('"age": 1', '"age": NaN').encode(), 400, None),
        ("out of range", json.dumps([{**row, "age": 1}]).replace('"age": 1', '"age": 1e999').encode(), 422, (0, "age")),
        ("empty list", [], 422, None),
        ("too many rows", {"columns": {k: v * 2001 for k, v in cols.items()}}, 413, None),
        ("ragged columns", {"columns": {**cols, "age": [1, 2]}}, 422, (None, "age")),
        ("not json", b"{not json", 400, None),
        ("over size limit", b"[" + b" " * 1_100_000 + b"]", 413, None),
        ("not an object", [1, 2], 422, (0, None)),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_gets_a_problem_and_logs_nothing(server, case):
    _name, body, status, where = case
    before = server.service.wal.records_written
    scored = sum(server.service.metrics.rows_scored.values())
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = server.client.post(PREDICT, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == status and doc["type"].startswith("https://") and doc["title"] and doc["detail"]
    if where is not None:
        row, field = where
        assert doc["errors"][0]["row"] == row and doc["errors"][0]["field"] == field
        if field:
            assert field in doc["detail"]
    assert server.service.wal.records_written == before
    assert sum(server.service.metrics.rows_scored.values()) == scored
    assert server.client.get("/health").status_code == 200


def test_wrong_content_type_and_unknown_model_or_version(server):
    r = server.client.post(PREDICT, content=b"[]", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and r.json()["type"].endswith("unsupported-media-type")
    r = server.client.post("/v1/models/nope/predict", json=demo_rows(1))
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = server.client.post(PREDICT + "?version=9", json=demo_rows(1))
    assert r.status_code == 404 and "9" in r.json()["detail"]
    r = server.client.post(PREDICT + "?version=abc", json=demo_rows(1))
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "version"
    r = server.client.get("/no/such/route")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_pinned_version_and_alias(server, lake_path):
    lake = Lake(str(lake_path))
    rows = demo_rows(5)
    r = server.client.post(PREDICT + "?version=2", json=rows)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert r.json()["scores"] == registry.load("churn", version=2, lake=lake).model.predict(pl.DataFrame(rows)).tolist()
    registry.set_alias("churn", "challenger", 2, actor="tester", reason="test", action="alias", lake=lake)
    wait_for(lambda: server.service.cache.aliases.get("churn", {}).get("challenger") == 2)
    r = server.client.post(PREDICT + "?alias=challenger", json=rows)
    assert r.status_code == 200 and r.json()["version"] == 2
    r = server.client.post(PREDICT + "?alias=nosuch", json=rows)
    assert r.status_code == 404 and "nosuch" in r.json()["detail"]


def test_unknown_category_default_policy_scores_as_missing_counts_and_logs_the_level(lake_path, tmp_path):
    settings = serving_settings(lake_path, tmp_path / "wal")  # default policy: "missing"
    assert settings.section("serving").get("unknown_category") is None
    with ThreadServer(create_app(settings)) as srv:
        row = demo_rows(1)[0]
        a = httpx.post(srv.url + PREDICT, json=[{**row, "plan": "platinum"}, {**row, "plan": None}, row])
        assert a.status_code == 200, a.text
        s = a.json()["scores"]
        assert s[0] == s[1]  # an unseen level scores exactly like a missing value
        one = httpx.post(srv.url + PREDICT, json=[{**row, "plan": "platinum"}])
        assert one.status_code == 200 and one.json()["scores"] == [s[0]]
        loaded = registry.load("churn", lake=Lake(str(lake_path)))
        assert s == loaded.model.predict(pl.DataFrame([{**row, "plan": "platinum"}, {**row, "plan": None}, row])).tolist()
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "lakeops_unknown_category_total", model="churn", feature="plan") == 2
        big_rows = demo_rows(12)  # > 8 rows: logged as codes + levels + the unseen strings
        big_rows[2]["plan"], big_rows[5]["plan"], big_rows[7]["contract"] = "platinum", None, "weekly"
        big = httpx.post(srv.url + PREDICT, json=big_rows)
        assert big.status_code == 200, big.text
        assert big.json()["scores"] == loaded.model.predict(pl.DataFrame(big_rows)).tolist()
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "lakeops_unknown_category_total", model="churn", feature="plan") == 3
        assert metric(text, "lakeops_unknown_category_total", model="churn", feature="contract") == 1
        ids = a.json()["prediction_ids"] + one.json()["prediction_ids"] + big.json()["prediction_ids"]
        wait_for(lambda: _logged(lake_path, ids).height == 16)
    logged = _logged(lake_path, ids)
    by_id = {r["prediction_id"]: r for r in logged.iter_rows(named=True)}
    expected = [{**row, "plan": "platinum"}, {**row, "plan": None}, row, {**row, "plan": "platinum"}, *big_rows]
    for i, sent in zip(ids, expected, strict=True):  # drift sees the new levels; nulls stay null
        assert {k: by_id[i]["features"][k] for k in sent} == pytest.approx(sent), i


def test_feedback_is_logged(server, lake_path):
    ids = server.client.post(PREDICT, json=demo_rows(3)).json()["prediction_ids"]
    r = server.client.post("/v1/models/churn/feedback", json=[{"prediction_id": i, "label": 1} for i in ids])
    assert r.status_code == 202 and r.json() == {"accepted": 3, "duplicates": 0}
    lake = Lake(str(lake_path))

    def landed():
        return lake.read("feedback").filter(pl.col("prediction_id").is_in(ids)) if lake.exists("feedback") else None

    wait_for(lambda: (fb := landed()) is not None and fb.height == 3)
    fb = landed()
    assert fb["model"].to_list() == ["churn"] * 3 and fb["label"].to_list() == [1.0] * 3
    bad = server.client.post("/v1/models/churn/feedback", json=[{"prediction_id": ids[0]}])
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert server.client.post("/v1/models/nope/feedback", json=[{"prediction_id": "x", "label": 0}]).status_code == 404


def test_models_health_ready_metrics_and_openapi(server):
    c = server.client
    models = c.get("/v1/models").json()
    assert models[0]["model"] == "churn" and models[0]["champion"] == 1
    detail = c.get("/v1/models/churn").json()
    assert detail["aliases"]["champion"] == 1 and [v["version"] for v in detail["versions"]] == [1, 2]
    assert {f["name"] for f in detail["signature"]["features"]} >= {"plan", "tenure_months"}
    assert c.get("/v1/models/nope").status_code == 404
    assert c.get("/health").json() == {"status": "ok"}
    ready = c.get("/ready")
    assert ready.status_code == 200 and ready.json()["champions"] == {"churn": 1}
    c.post(PREDICT, json=demo_rows(2))
    text = c.get("/metrics").text
    for name in ("lakeops_requests_total", "lakeops_errors_total", "lakeops_request_duration_seconds_bucket",
                 "lakeops_rows_scored_total", "lakeops_log_queue_bytes"):
        assert name in text
    assert metric(text, "lakeops_model_version", model="churn") == 1
    spec = c.get("/schema/openapi.json").json()
    body = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    row_schema = body["oneOf"][0]["items"]
    assert "tenure_months" in row_schema["properties"] and row_schema["additionalProperties"] is False
    assert "platinum" not in row_schema["properties"]["plan"]["enum"] and "basic" in row_schema["properties"]["plan"]["enum"]


def test_hot_swap_under_concurrent_load(server, lake_path, settings):
    from core.flows.promote import promote, rollback

    lake = Lake(str(lake_path))
    rows = demo_rows(2)
    results: list[tuple[float, int, int]] = []
    failures: list[str] = []
    stop = threading.Event()

    def fire():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post(PREDICT, json=rows)
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    results.append((time.time(), r.json()["version"], len(r.json()["scores"])))

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        promote("churn", 2, reason="test hot swap", actor="tester", force=True, lake=lake, settings=settings)
        t_promote = time.time()
        wait_for(lambda: any(v == 2 and t > t_promote for t, v, _ in results), timeout=10)
        time.sleep(1.0)
        rollback("churn", reason="test rollback", actor="tester", lake=lake, settings=settings)
        t_rollback = time.time()
        wait_for(lambda: any(v == 1 and t > t_rollback for t, v, _ in results), timeout=10)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert {v for _, v, _ in results} == {1, 2} and all(n == 2 for _, _, n in results)
    # within a few seconds of each move every response shows the new version
    assert all(v == 2 for t, v, _ in results if t_promote + 3 < t < t_rollback)
    assert all(v == 1 for t, v, _ in results if t > t_rollback + 3)
    assert server.client.get("/ready").json()["champions"] == {"churn": 1}
