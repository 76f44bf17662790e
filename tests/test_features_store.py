"""Feature views in the lake: versions, training sets with lineage, training on them, incremental online values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core import datasets, demo, features
from core.config import Settings
from core.errors import FeatureViewError, FeatureViewNotFoundError
from core.flows.train import reproduce, train_model

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def _seed(lake, rows: int = 1200) -> None:
    churn = demo.generate(rows, seed=3, start=NOW - timedelta(days=120), days=120, campaign_start=NOW + timedelta(days=999))
    datasets.ingest("churn", churn, lake=lake, settings=Settings(lake_uri=lake.uri, actor="tester"))
    datasets.ingest("churn_usage", demo.usage_events(churn, until=NOW), lake=lake, settings=Settings(lake_uri=lake.uri, actor="tester"))


def _view(**changes) -> features.FeatureView:
    return features.parse_view({**demo.USAGE_VIEW, **changes})


def test_register_versions_by_content(lake):
    _seed(lake)
    v1, created = features.register(_view(), lake=lake, actor="ana")
    assert (v1.version, created) == (1, True)
    again, created = features.register(_view(description="reworded"), lake=lake)
    assert (again.version, created) == (1, False)  # descriptions are not part of the hash
    feats = [*demo.USAGE_VIEW["features"], {"name": "calls_7d", "expr": "pl.col('calls')", "agg": "sum", "window": "7d"}]
    v2, created = features.register(_view(features=feats), lake=lake)
    assert (v2.version, created) == (2, True)
    assert features.get_view("churn_usage", lake=lake).feature_names[-1] == "calls_7d"
    assert "calls_7d" not in features.get_view("churn_usage", 1, lake=lake).feature_names  # old versions stay usable
    rows = lake.read("feature_views").sort("version")
    assert rows["version"].to_list() == [1, 2] and rows["created_by"].to_list()[0] == "ana"
    assert rows["content_hash"].to_list() == [v1.content_hash(), v2.content_hash()]
    listed = features.list_views(lake=lake).row(0, named=True)
    assert (listed["latest_version"], listed["versions"], listed["features"]) == (2, 2, 5)
    with pytest.raises(FeatureViewNotFoundError, match=r"feature view 'churn_usage' has versions v1, v2; asked for v3"):
        features.get_view("churn_usage", 3, lake=lake)
    with pytest.raises(FeatureViewNotFoundError, match="feature view 'nope' does not exist; views: churn_usage"):
        features.get_view("nope", lake=lake)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"entity": "customer"}, "entity column 'customer' is not a column of dataset 'churn_usage'"),
        ({"source": "nothing"}, "feature view 'churn_usage': source dataset 'nothing' does not exist"),
        ({"features": [{"name": "x", "expr": "pl.col('sms')", "agg": "sum", "window": "7d"}]},
         "feature 'x': column 'sms' is not a column of dataset 'churn_usage'"),
        ({"features": [{"name": "x", "expr": "pl.col('calls').sum(", "agg": "sum", "window": "7d"}]}, "does not parse"),
        ({"features": [{"name": "x", "expr": "pl.col('calls')", "agg": "sum", "window": "400d"}]},
         "feature 'x': window 400d is longer than the data"),
    ],
)
def test_register_refuses_a_definition_that_does_not_fit_and_writes_nothing(lake, changes, message):
    _seed(lake, rows=300)
    with pytest.raises(FeatureViewError, match=message):
        features.register(_view(**changes), lake=lake)
    assert not lake.exists("feature_views")


def test_register_refuses_duplicate_rows_for_a_latest_value(lake, settings):
    _seed(lake, rows=300)
    events = datasets.load("churn_usage", lake=lake)
    datasets.ingest("churn_usage", events.head(3), lake=lake, validate=False, settings=settings)
    latest = _view(features=[{"name": "last_calls", "expr": "pl.col('calls')"}])
    with pytest.raises(FeatureViewError, match=r"3 \(customer_id, event_at\) pair\(s\) with more than one row"):
        features.register(latest, lake=lake)
    assert not lake.exists("feature_views")


def test_training_set_lineage_and_a_model_that_names_its_views(lake, settings):
    _seed(lake)
    features.register(_view(), lake=lake)
    ts = features.build_training_set("churn_training", labels="churn", views=["churn_usage@v1"], lake=lake, actor="ana", settings=settings)
    assert (ts.version, ts.rows, ts.time_column) == (1, 1200, "signup_at")
    frame = datasets.load("churn_training", lake=lake)
    assert frame.columns == [*datasets.load("churn", lake=lake).columns, *features.get_view("churn_usage", lake=lake).feature_names]
    lineage = lake.read("feature_lineage").row(0, named=True)
    assert (lineage["dataset"], lineage["dataset_version"], lineage["view"], lineage["view_version"]) == ("churn_training", 1, "churn_usage", 1)
    assert (lineage["source_dataset"], lineage["source_version"], lineage["label_dataset"], lineage["label_version"]) == ("churn_usage", 1, "churn", 1)
    assert datasets.describe("churn_training", lake=lake)["validation_status"] == "passed"

    out = train_model("churn_training", target="churned", params={"num_iterations": 30}, lake=lake, settings=settings)
    sig = out.model.signature
    [fv] = sig["feature_views"]
    assert (fv["view"], fv["version"], fv["entity"], fv["missing"]) == ("churn_usage", 1, "customer_id", "default")
    assert fv["features"] == ["calls_30d", "active_30d", "long_calls_30d", "data_gb_7d"]
    assert fv["defaults"] == {"calls_30d": 0, "active_30d": 0, "long_calls_30d": 0, "data_gb_7d": 0}
    assert {"name": "customer_id", "type": "string", "role": "id"} in sig["passthrough"]
    assert set(fv["features"]) <= {f["name"] for f in sig["features"]} and "customer_id" not in {f["name"] for f in sig["features"]}
    assert reproduce(out.run_id, lake=lake, settings=settings).matches


def test_training_set_bad_input_writes_nothing(lake, settings):
    _seed(lake, rows=300)
    features.register(_view(), lake=lake)
    no_time = datasets.load("churn", lake=lake).drop("signup_at")
    datasets.ingest("labels_no_time", no_time, lake=lake, settings=settings)
    with pytest.raises(FeatureViewError, match="label dataset 'labels_no_time' has no event-time column"):
        features.build_training_set("t", labels="labels_no_time", views=["churn_usage"], lake=lake, settings=settings)
    datasets.ingest("labels_no_key", datasets.load("churn", lake=lake).drop("customer_id"), lake=lake, settings=settings)
    with pytest.raises(FeatureViewError, match="label dataset 'labels_no_key' has no entity column 'customer_id'"):
        features.build_training_set("t", labels="labels_no_key", views=["churn_usage"], lake=lake, settings=settings)
    clash = datasets.load("churn", lake=lake).with_columns(pl.lit(1).alias("calls_30d"))
    datasets.ingest("labels_clash", clash, lake=lake, settings=settings)
    with pytest.raises(FeatureViewError, match="feature 'calls_30d' of view 'churn_usage' is also a column of label dataset"):
        features.build_training_set("t", labels="labels_clash", views=["churn_usage"], lake=lake, settings=settings)
    with pytest.raises(FeatureViewError, match="no event-time column 'when'"):
        features.build_training_set("t", labels="churn", views=["churn_usage"], time_column="when", lake=lake, settings=settings)
    with pytest.raises(FeatureViewError, match="'churn_usage@v0': write name@vN"):
        features.build_training_set("t", labels="churn", views=["churn_usage@v0"], lake=lake, settings=settings)
    assert not lake.exists("data/t") and not lake.exists("feature_lineage")


def _changed_events(lake, when: datetime, seed: int) -> pl.DataFrame:
    """New events around ``when`` for a few customers (some inside the last windows, none late)."""
    rng = np.random.default_rng(seed)
    ids = datasets.load("churn", lake=lake)["customer_id"].to_list()[:40]
    n = 60
    return pl.DataFrame({
        "customer_id": [ids[i] for i in rng.integers(0, len(ids), n)],
        "event_at": [when - timedelta(hours=int(h)) for h in rng.integers(0, 48, n)],
        "calls": rng.integers(1, 6, n), "minutes": rng.normal(10, 2, n).round(2), "data_gb": rng.random(n).round(3),
    }).unique(["customer_id", "event_at"])


def test_incremental_materialisation_equals_a_full_one(lake, settings):
    _seed(lake)
    features.register(_view(), lake=lake)
    first = features.materialize("churn_usage", as_of=NOW, lake=lake)
    assert (first.mode, first.why) == ("full", "first materialisation of this version")
    later = NOW + timedelta(days=3)  # rows leave the 7- and 30-day windows, new rows arrive
    datasets.ingest("churn_usage", _changed_events(lake, later, 1), lake=lake, validate=False, settings=settings)
    inc = features.materialize("churn_usage", as_of=later, lake=lake)
    assert inc.mode == "incremental" and 0 < inc.entities < first.entities
    incremental, _ = features.current_values("churn_usage", 1, lake=lake)
    assert (incremental["__as_of"] == later).sum() == inc.entities
    full = features.materialize("churn_usage", as_of=later, full=True, lake=lake)
    assert (full.mode, full.why, full.entities) == ("full", "requested", first.entities)
    recomputed, _ = features.current_values("churn_usage", 1, lake=lake)
    names = features.get_view("churn_usage", lake=lake).feature_names
    assert incremental.select("customer_id", *names).equals(recomputed.select("customer_id", *names))
    assert lake.read("feature_materializations").sort("at")["mode"].to_list() == ["full", "incremental", "full"]


def test_late_rows_replaced_sources_and_time_going_back(lake, settings):
    _seed(lake, rows=600)
    features.register(_view(), lake=lake)
    features.materialize("churn_usage", as_of=NOW, lake=lake)
    datasets.ingest("churn_usage", _changed_events(lake, NOW - timedelta(days=50), 2), lake=lake, validate=False, settings=settings)
    late = features.materialize("churn_usage", as_of=NOW + timedelta(hours=1), lake=lake)
    assert late.mode == "full" and "late row(s) at or before the incremental horizon" in late.why
    datasets.ingest("churn_usage", datasets.load("churn_usage", lake=lake).head(5000), mode="replace", lake=lake, validate=False, settings=settings)
    replaced = features.materialize("churn_usage", as_of=NOW + timedelta(hours=2), lake=lake)
    assert replaced.mode == "full" and "was replaced" in replaced.why
    current, _ = features.current_values("churn_usage", 1, lake=lake)
    assert current.height == datasets.load("churn_usage", lake=lake)["customer_id"].n_unique()  # gone entities gone
    with pytest.raises(FeatureViewError, match="is before the last materialisation of churn_usage v1"):
        features.materialize("churn_usage", as_of=NOW, lake=lake)
    fresh = features.freshness(lake=lake).row(0, named=True)
    assert (fresh["runs"], fresh["mode"], fresh["source_version"], fresh["latest_source_version"]) == (3, "full", 3, 3)


def test_materialize_all_covers_latest_versions_and_champions(lake, settings):
    _seed(lake, rows=300)
    features.register(_view(), lake=lake)
    out = features.materialize_all(lake=lake)
    assert set(out["views"]) == {"churn_usage@v1"} and out["views"]["churn_usage@v1"]["mode"] == "full"
    from core.jobruns import run_job

    job = run_job("features_materialize", lake=lake, settings=settings)  # the scheduler's job
    assert job.status == "finished" and job.outputs["views"]["churn_usage@v1"]["mode"] == "incremental"
    vec = features.entity_vector("churn_usage", "C0000001", lake=lake)
    assert set(vec) >= {"calls_30d", "__as_of"}
    with pytest.raises(FeatureViewError, match="customer_id='NOPE' has no online values in churn_usage v1"):
        features.entity_vector("churn_usage", "NOPE", lake=lake)


def test_the_gate_scores_a_feature_view_champion_on_rows_without_its_features(lake, settings):
    from core import registry
    from core.flows import promote

    _seed(lake)
    features.register(_view(), lake=lake)
    features.build_training_set("churn_training", labels="churn", views=["churn_usage"], lake=lake, settings=settings)
    champ = train_model("churn_training", target="churned", params={"num_iterations": 30}, lake=lake, settings=settings)
    registry.register("churn", champ.run_id, lake=lake, actor="t")
    promote.promote("churn", 1, reason="t", actor="t", force=True, lake=lake, settings=settings)
    rows = datasets.load("churn", lake=lake)
    filled = features.with_view_features(rows, champ.model.signature, lake=lake)
    assert filled.equals(datasets.load("churn_training", lake=lake))  # as a training set would have them
    plain = train_model("churn", target="churned", params={"num_iterations": 30}, lake=lake, settings=settings)
    registry.register("churn", plain.run_id, lake=lake, actor="t")
    report = promote.evaluate("churn", 2, lake=lake, settings=settings)
    check = next(c for c in report.checks if c.name == "beat_champion:auc")
    assert "champion v1" in check.detail and 0.5 < float(check.threshold) < 1
    with pytest.raises(FeatureViewError, match="lack the time column 'signup_at'"):
        features.with_view_features(rows.drop("signup_at"), champ.model.signature, lake=lake)
