"""Pass-through fields (ids, event time) reach the log, never the model; feedback is validated and may join by key."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import polars as pl
import pytest

from core import datasets, demo, monitoring, registry
from core.config import Settings
from core.flows.promote import promote
from core.flows.train import train_model
from core.lake import Lake
from core.serving.app import create_app
from tests.test_serving_support import ThreadServer, serving_settings, wait_for

PREDICT = "/v1/models/churn/predict"
FEEDBACK = "/v1/models/churn/feedback"


@pytest.fixture(scope="module")
def keyed_lake(tmp_path_factory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("keyed") / "lake"))
    settings = Settings(lake_uri=lake.uri, actor="tester")
    datasets.ingest("churn", demo.generate(n=2000, seed=3), lake=lake, actor="tester", settings=settings)
    out = train_model("churn", target="churned", params={"num_iterations": 20}, feedback_key="customer_id", lake=lake, settings=settings)
    registry.register("churn", out.run_id, actor="tester", lake=lake)
    promote("churn", 1, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    return lake


def _rows(n: int, seed: int = 4) -> list[dict]:
    rows = demo.generate(n=n, seed=seed).drop("churned").to_dicts()
    for r in rows:
        r["signup_at"] = r["signup_at"].isoformat()
    return rows


def test_signature_declares_passthrough_and_the_key(keyed_lake):
    sig = registry.get_version("churn", 1, lake=keyed_lake).signature
    assert {p["name"]: (p["type"], p["role"]) for p in sig["passthrough"]} == {
        "customer_id": ("string", "id"), "signup_at": ("datetime", "event_time")}
    assert sig["feedback_key"] == "customer_id"
    assert "customer_id" not in {f["name"] for f in sig["features"]}


def test_passthrough_is_validated_and_logged_beside_the_features(tmp_path, keyed_lake):
    settings = serving_settings(keyed_lake.uri, tmp_path / "wal")
    rows = _rows(3)
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        plain = c.post(PREDICT, json=[{k: v for k, v in r.items() if k not in ("customer_id", "signup_at")} for r in rows])
        withpt = c.post(PREDICT, json=rows)
        assert plain.status_code == withpt.status_code == 200, withpt.text
        assert plain.json()["scores"] == withpt.json()["scores"]  # never seen by the model
        bad = c.post(PREDICT, json=[{**rows[0], "customer_id": 12}])
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "customer_id"
        bad = c.post(PREDICT, json=[{**rows[0], "signup_at": "yesterday"}])
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "signup_at"
        bad = c.post(PREDICT, json=[{**rows[0], "coupon": "X"}])
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "coupon"
        cols = {k: [r[k] for r in rows] for k in rows[0]}
        assert c.post(PREDICT, json={"columns": cols}).status_code == 200
        ids = withpt.json()["prediction_ids"]
        wait_for(lambda: keyed_lake.exists("predictions/churn") and monitoring.window("churn", lake=keyed_lake)
                 .filter(pl.col("prediction_id").is_in(ids)).height == 3)
    logged = monitoring.window("churn", lake=keyed_lake).filter(pl.col("prediction_id").is_in(ids)).sort("prediction_id")
    pt = monitoring.passthrough_of(logged)
    assert sorted(pt["customer_id"].to_list()) == sorted(r["customer_id"] for r in rows)
    assert pt["signup_at"].dtype == pl.Datetime("us", "UTC")
    assert set(pt["signup_at"].to_list()) == {datetime.fromisoformat(r["signup_at"]).astimezone(UTC) for r in rows}
    none = monitoring.window("churn", lake=keyed_lake).filter(pl.col("prediction_id").is_in(plain.json()["prediction_ids"]))
    assert monitoring.passthrough_of(none)["customer_id"].null_count() == 3


def test_feedback_is_validated_and_joins_by_id_or_by_key(tmp_path, keyed_lake):
    settings = serving_settings(keyed_lake.uri, tmp_path / "wal")
    rows = _rows(4, seed=8)
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        ids = c.post(PREDICT, json=rows).json()["prediction_ids"]
        for body, field in [
            ([{"prediction_id": ids[0], "label": 7}], "label"),  # not a class of a binary model
            ([{"prediction_id": ids[0], "label": "yes"}], "label"),
            ([{"prediction_id": ids[0]}], "label"),
            ([{"prediction_id": ids[0], "customer_id": rows[0]["customer_id"], "label": 1}], "prediction_id"),
            ([{"prediction_id": ids[0], "label": 1, "note": "x"}], "note"),
        ]:
            r = c.post(FEEDBACK, json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["errors"][0]["field"] == field and r.json()["errors"][0]["row"] == 0
        ok = c.post(FEEDBACK, json=[
            {"prediction_id": ids[0], "label": 0}, {"prediction_id": ids[0], "label": True},  # the later one wins
            {"customer_id": rows[1]["customer_id"], "label": 1},  # by key: the newest prediction of that customer
            {"prediction_id": "not-a-prediction", "label": 0},  # recorded; an orphan for readers
        ])
        assert ok.status_code == 202 and ok.json() == {"accepted": 4, "duplicates": 1}
        wait_for(lambda: keyed_lake.exists("feedback") and keyed_lake.read("feedback").height >= 4)
        wait_for(lambda: monitoring.window("churn", lake=keyed_lake).filter(pl.col("prediction_id").is_in(ids)).height == 4)
    truth = monitoring.ground_truth("churn", lake=keyed_lake)
    got = dict(zip(truth["prediction_id"].to_list(), truth["truth"].to_list(), strict=True))
    assert got[ids[0]] == 1.0 and got[ids[1]] == 1.0 and "not-a-prediction" not in got
    assert ids[2] not in got and ids[3] not in got
    assert monitoring.orphan_labels("churn", lake=keyed_lake) == 1
    fb = keyed_lake.read("feedback")
    assert fb.filter(pl.col("key") == "customer_id")["key_value"].to_list() == [rows[1]["customer_id"]]


def test_refuse_policy_rejects_unknown_ids_and_knows_unflushed_ones(tmp_path, keyed_lake):
    settings = serving_settings(keyed_lake.uri, tmp_path / "wal", feedback_unknown_ids="refuse", flush_interval_s=30)
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        ids = c.post(PREDICT, json=_rows(2)).json()["prediction_ids"]  # still in the WAL only
        r = c.post(FEEDBACK, json=[{"prediction_id": ids[0], "label": 1}, {"prediction_id": "nope", "label": 0}])
        assert r.status_code == 422 and r.json()["errors"] == [
            {"row": 1, "field": "prediction_id", "message": "unknown prediction id"}]
        assert c.post(FEEDBACK, json=[{"prediction_id": i, "label": 1} for i in ids]).status_code == 202
