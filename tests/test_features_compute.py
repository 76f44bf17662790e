"""Feature-view models on both engines: a training set trains on a Dask LocalCluster (127.0.0.1, two
small workers) as it does locally, and batch scoring computes a feature-view model's features as of
each row's time (the training set's code path) on the local engine and beside each partition on the
cluster; rows without the time or entity column (or a request field) are one line, exit 2, nothing written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core import compute, datasets, demo, features, registry, tracking
from core.config import Settings, load_settings
from core.errors import FeatureViewError
from core.features import Feature, FeatureView
from core.lake import Lake

distributed = pytest.importorskip("distributed")

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PARAMS = {"num_iterations": 20, "num_leaves": 7, "min_data_in_leaf": 10}
VIEW = FeatureView(
    name="usage", source="churn_usage", entity="customer_id", event_time="event_at", missing="default",
    features=(
        Feature("calls_30d", "pl.col('calls')", agg="sum", window="30d"),
        Feature("minutes_per_call_30d", "pl.col('minutes') / pl.col('calls')", agg="mean", window="30d"),
        Feature("last_data_gb", "pl.col('data_gb')"),
    ),
    request_fields={"monthly_charges": "Float64"},
    request_features=(Feature("charges_per_call_30d", "pl.col('monthly_charges') / (pl.col('calls_30d') + 1)"),),
)


@pytest.fixture(scope="module")
def client():
    """Two worker processes on 127.0.0.1 for the module; every compute.session uses them."""
    cluster = compute.local_cluster(2, memory_limit="1GB")
    c = distributed.Client(cluster, timeout=60)
    try:
        with compute.use(c):
            yield c
    finally:
        c.close(timeout=30)
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """churn (labels with signup_at), churn_usage (events), the view, a training set, a local champion."""
    from core.flows.train import train_model

    lake = Lake(tmp_path_factory.mktemp("fv") / "lake")
    settings = Settings(lake_uri=lake.uri, actor="tester")
    churn = demo.generate(800, seed=3, start=NOW - timedelta(days=120), days=120, campaign_start=NOW + timedelta(days=999))
    datasets.ingest("churn", churn, lake=lake, settings=settings)
    datasets.ingest("churn_usage", demo.usage_events(churn, until=NOW), lake=lake, settings=settings)
    datasets.ingest("no_times", churn.drop("signup_at"), lake=lake, settings=settings)
    datasets.ingest("no_keys", churn.drop("customer_id"), lake=lake, settings=settings)
    datasets.ingest("no_charges", churn.drop("monthly_charges"), lake=lake, settings=settings)
    # an integer entity key (training never takes it for an id): excluded from the features, a pass-through field
    num = pl.col("customer_id").str.slice(1).cast(pl.Int64).alias("customer")
    datasets.ingest("labels_int", churn.with_columns(num).drop("customer_id"), lake=lake, settings=settings)
    datasets.ingest("usage_int", demo.usage_events(churn, until=NOW).with_columns(num).drop("customer_id"), lake=lake, settings=settings)
    features.register(FeatureView(name="usage_int", source="usage_int", entity="customer", event_time="event_at",
                                  features=VIEW.features), lake=lake)
    features.build_training_set("int_training", labels="labels_int", views=["usage_int"], lake=lake, settings=settings)
    features.register(VIEW, lake=lake)
    features.build_training_set("churn_training", labels="churn", views=["usage"], lake=lake, settings=settings)
    out = train_model("churn_training", target="churned", params=PARAMS, lake=lake, engine="local",
                      settings=_settings(lake))
    registry.register("fv", out.run_id, lake=lake, actor="tester")
    registry.set_alias("fv", "champion", 1, actor="tester", reason="test champion", lake=lake)
    return lake


def _settings(lake: Lake):
    return load_settings(env={}, lake_uri=lake.uri, actor="tester")


def test_a_training_set_trains_on_the_cluster_with_the_same_signature_as_locally(client, world):
    from core.flows.train import train_model

    lake = world
    local = registry.load("fv", lake=lake).signature
    out = train_model("churn_training", target="churned", params=PARAMS, lake=lake, engine="dask",
                      settings=_settings(lake))
    sig = out.model.signature
    info = tracking.get_run(out.run_id, lake=lake)
    assert info.params["engine"] == "dask"
    # the entity key and the event time are not features; the key is what a request sends
    names = [f["name"] for f in sig["features"]]
    assert "customer_id" not in names and "signup_at" not in names
    assert names == [f["name"] for f in local["features"]]
    assert {"calls_30d", "minutes_per_call_30d", "last_data_gb", "charges_per_call_30d"} <= set(names)
    assert "customer_id" in [p["name"] for p in sig["passthrough"]]
    assert sig["feature_views"] == local["feature_views"]
    assert sig["feature_views"][0]["features"] == ["calls_30d", "minutes_per_call_30d", "last_data_gb",
                                                   "charges_per_call_30d"]
    # what the run logged is that signature (serving fills the view features from it)
    from core.flows.train import run_model

    assert run_model(out.run_id, lake=lake).signature["feature_views"] == local["feature_views"]


def test_an_integer_entity_key_is_left_out_of_the_features_on_both_engines(client, world):
    from core.flows.train import train_model

    lake = world
    sigs = [train_model("int_training", target="churned", params=PARAMS, lake=lake, engine=engine,
                        settings=_settings(lake)).model.signature for engine in ("local", "dask")]
    for sig in sigs:
        assert "customer" not in [f["name"] for f in sig["features"]]
        assert "customer" in [p["name"] for p in sig["passthrough"]]
        assert sig["feature_views"][0]["entity"] == "customer"
    assert sigs[0]["features"] == sigs[1]["features"] and sigs[0]["passthrough"] == sigs[1]["passthrough"]


def test_scoring_computes_view_features_as_of_each_row_on_both_engines(client, world):
    from core.flows.score import score_dataset

    lake = world
    loaded = registry.load("fv", lake=lake)
    s = _settings(lake)
    here = score_dataset("churn", model="fv", engine="local", output="scores_local", lake=lake, settings=s)
    there = score_dataset("churn", model="fv", engine="dask", output="scores_dask", lake=lake, settings=s)
    got_local = datasets.load(here.output, lake=lake).sort("customer_id")
    got_dask = datasets.load(there.output, lake=lake).sort("customer_id")
    # the training set's rows are the same label rows with the features as of signup_at: the same scores
    training = datasets.load("churn_training", lake=lake).sort("customer_id")
    want = loaded.model.predict(training)
    assert got_local.height == got_dask.height == training.height == 800
    assert np.array_equal(got_local["customer_id"].to_numpy(), training["customer_id"].to_numpy())
    assert np.array_equal(got_local["score"].to_numpy(), want)
    assert np.array_equal(got_dask["score"].to_numpy(), want)
    # a future value would change the answer: the same rows as of a later time score differently
    later = datasets.load("churn", lake=lake).with_columns(pl.lit(NOW).alias("signup_at"))
    assert not np.array_equal(loaded.model.predict(features.with_view_features(later, loaded.signature, lake=lake))
                              [np.argsort(later["customer_id"].to_numpy())], want)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_scoring_rows_without_time_or_entity_is_one_line_exit_2_nothing_written(client, world, capsys, engine):
    from core.cli import run

    lake = world
    runs_before = tracking.search_runs(lake=lake).height
    cases = [("no_times", "the rows lack the time column 'signup_at' the model's feature views are computed as of"),
             ("no_keys", "the rows lack the entity column 'customer_id' feature view 'usage' v1 is looked up by"),
             ("no_charges", "the rows lack the request field 'monthly_charges' feature view 'usage' v1 computes")]
    for dataset, message in cases:
        code = run(["--lake", lake.uri, "score", "--dataset", dataset, "--model", "fv@champion", "--engine", engine,
                    "--output", "bad_scores"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and message in err, err
    assert not lake.exists("data/bad_scores")
    assert tracking.search_runs(lake=lake).height == runs_before
    with pytest.raises(FeatureViewError, match="signup_at"):
        features.view_features_needed(["customer_id"], registry.load("fv", lake=lake).signature, lake=lake)
