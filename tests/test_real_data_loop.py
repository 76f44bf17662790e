"""The closed loop on real public data, cycle after cycle, through the API, checked from the tables.

NYC flights of 2013 with the weather at departure: trained on January and February, then served
month by month (March, April, May) with delayed labels (by prediction id and by the flight's
id), a bad label now and then. Seasonal drift opens a drift alert each month; the retrain job
trains on the source data plus the labelled traffic (never written into the source dataset),
the gate compares candidate and champion on the newest labelled traffic with a paired test, and
automatic promotion only happens when the improvement is significant.
"""

from __future__ import annotations

import json

import httpx
import polars as pl
import pytest

from core import datasets, monitoring, registry, trainsets
from core.config import load_settings
from core.flows import monitor, promote
from core.flows.train import train_model
from core.lake import Lake
from core.serving.app import create_app
from tests.realdata import flights
from tests.test_serving_support import ThreadServer, wait_for

pytestmark = pytest.mark.slow
MODEL = "flights"
PREDICT = f"/v1/models/{MODEL}/predict"
FEEDBACK = f"/v1/models/{MODEL}/feedback"


def _settings(lake: Lake, wal) -> object:
    sections = {
        "serving": {"wal_dir": str(wal), "flush_interval_s": 0.2, "poll_interval_s": 0.2},
        "models": {MODEL: {
            "policy": {"auto_promote": True, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}},
            "monitoring": {"window_rows": 2000, "min_rows": 300, "min_labels": 500},
            "drift": {"features": {"month": {"role": "expected_drift"}, "day": {"role": "expected_drift"}}},
        }},
    }
    return load_settings(env={}, config_path=None, lake_uri=lake.uri, actor="tester", sections=sections)


def _requests(rows: pl.DataFrame, size: int) -> list[list[dict]]:
    body = rows.drop("late").with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    return [body[i : i + size] for i in range(0, len(body), size)]


def test_the_loop_closes_month_after_month_on_real_flights(tmp_path):
    data = flights(fraction=0.25, seed=1)
    truth = dict(zip(data["flight_id"].to_list(), data["late"].to_list(), strict=True))
    lake = Lake(tmp_path / "lake")
    settings = _settings(lake, tmp_path / "wal")
    base = data.filter(pl.col("month") <= 2)
    datasets.ingest("flights", base, lake=lake, settings=settings, actor="tester")
    first = train_model("flights", target="late", time_column="time_hour", feedback_key="flight_id",
                        params={"num_iterations": 150}, lake=lake, settings=settings)
    assert first.leakage is not None and not first.leakage["flagged"]
    registry.register(MODEL, first.run_id, actor="tester", lake=lake)
    assert promote.evaluate_and_maybe_promote(MODEL, 1, reason="first model", lake=lake, settings=settings).promoted

    acked: dict[str, str] = {}  # prediction id -> flight id
    cycles = []
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        pending: list[tuple[str, str]] = []  # labels not sent yet: they arrive one batch late
        for month in (3, 4, 5):
            traffic = data.filter(pl.col("month") == month)
            for batch in _requests(traffic, 250):
                r = c.post(PREDICT, json=batch)
                assert r.status_code == 200, r.text
                ids = r.json()["prediction_ids"]
                acked.update(zip(ids, (row["flight_id"] for row in batch), strict=True))
                if pending:  # the previous batch's outcomes are known now
                    items = [{"prediction_id": p, "label": truth[f]} if i % 2 else {"flight_id": f, "label": truth[f]}
                             for i, (p, f) in enumerate(pending)]
                    assert c.post(FEEDBACK, json=items).status_code == 202
                    bad = c.post(FEEDBACK, json=[{"prediction_id": pending[0][0], "label": 7}])
                    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "label"
                pending = list(zip(ids, (row["flight_id"] for row in batch), strict=True))
            wait_for(lambda: lake.exists(f"predictions/{MODEL}") and set(acked) <= set(
                lake.read(f"predictions/{MODEL}", columns=["prediction_id"])["prediction_id"].to_list()), timeout=60)
            wait_for(lambda: monitoring.ground_truth(MODEL, lake=lake).height >= len(acked) - 250, timeout=60)
            champion = registry.champion_version(MODEL, lake)
            drift = monitor.check_drift_and_alert(MODEL, lake=lake, settings=settings)
            monitor.check_performance_and_alert(MODEL, lake=lake, settings=settings)
            out = monitor.retrain_if_needed(MODEL, lake=lake, settings=settings)
            cycles.append((month, champion, drift, out))
            if out is not None and out.promoted:
                wait_for(lambda: c.get(f"/v1/models/{MODEL}").json()["serving_version"] == out.version, timeout=30)
        for batch in _requests(data.filter(pl.col("month") == 6).head(500), 250):  # the last champion at work
            r = c.post(PREDICT, json=batch)
            assert r.status_code == 200 and r.json()["version"] == registry.champion_version(MODEL, lake)
            acked.update(zip(r.json()["prediction_ids"], (row["flight_id"] for row in batch), strict=True))
        wait_for(lambda: set(acked) <= set(
            lake.read(f"predictions/{MODEL}", columns=["prediction_id"])["prediction_id"].to_list()), timeout=60)

    promoted = [(m, ch, d, o) for m, ch, d, o in cycles if o is not None and o.promoted]
    assert len(promoted) >= 2, [(m, d.drifted, o and o.why) for m, _, d, o in cycles]
    print("cycles:", [(m, ch, d.drifted, o and (o.version, o.promoted, o.holdout_rows, o.why)) for m, ch, d, o in cycles])
    for month, champion, drift, out in promoted:
        assert drift.drifted and drift.model_version == champion and out.champion_before == champion
        assert "month" in drift.result.expected_drift  # calendar features: reported, not counted
        gate = promote.latest_gate(MODEL, out.version, lake=lake)
        sig = next(ch for ch in gate.checks if ch.name == "significant:auc")
        assert sig.passed and gate.comparison["p_value"] < 0.05 and gate.comparison["improvement"] > 0, sig.detail  # not noise
        assert gate.eval_rows == out.holdout_rows > 0

    # no made-up values: the source dataset is untouched; every served row is a real labelled prediction
    assert datasets.latest_version("flights", lake=lake) == 1
    assert datasets.load("flights", lake=lake).height == base.height
    served = datasets.load(trainsets.served_dataset(MODEL), lake=lake).unique("__prediction_id", keep="last")
    assert set(served["__prediction_id"].to_list()) <= set(acked)
    assert served["flight_id"].to_list() == [acked[p] for p in served["__prediction_id"].to_list()]
    assert served["late"].to_list() == [truth[f] for f in served["flight_id"].to_list()]  # the real outcome
    sent = data.select("flight_id", "temp", "pressure", "carrier", "time_hour")
    back = served.select("flight_id", "temp", "pressure", "carrier", "time_hour").join(sent, on="flight_id", suffix="_src")
    assert back.height == served.height
    for col in ("temp", "pressure", "carrier", "time_hour"):  # as sent, nulls included: nothing filled in
        same = (back[col] == back[f"{col}_src"]) | (back[col].is_null() & back[f"{col}_src"].is_null())
        assert same.all(), col
    assert served["pressure"].null_count() > 0  # real nulls stay null
    assert set(lake.read("feedback")["label"].unique().to_list()) <= {0.0, 1.0}  # the 7s never got in

    # no acknowledged prediction is lost, none is logged twice
    logged = lake.read(f"predictions/{MODEL}", columns=["prediction_id"])["prediction_id"]
    assert logged.n_unique() == logged.len() and set(acked) <= set(logged.to_list())

    # every step of every cycle, in order, from the tables
    events = registry.events(MODEL, lake=lake)
    alerts = monitoring.alert_history(MODEL, lake=lake).filter(pl.col("kind") == "drift")
    log = lake.read(f"predictions/{MODEL}", columns=["at", "model_version"])
    for month, champion, drift, out in promoted:
        opened = alerts.filter((pl.col("status") == "open") & (pl.col("model_version") == champion))["at"].min()
        superseded = alerts.filter((pl.col("status") == "resolved") & (pl.col("model_version") == champion))
        ev = events.filter(pl.col("version") == out.version).sort("at")
        assert ev["action"].to_list()[:3] == ["register", "gate", "promote"]
        served_version = datasets.versions(out.served_dataset, lake=lake).filter(pl.col("version") == out.served_version)
        steps = [drift.window_end, opened, served_version["created_at"][0], *ev["at"].to_list()[:3],
                 superseded["at"][0], log.filter(pl.col("model_version") == out.version)["at"].min()]
        assert None not in steps and steps == sorted(steps), (month, steps)
        assert superseded["message"][0].startswith(f"superseded by v{out.version}")
        run = json.loads(ev.filter(pl.col("action") == "gate")["report_json"][0])
        assert run["champion_version"] == champion
