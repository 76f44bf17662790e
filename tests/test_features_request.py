"""Request features: a view's row-level transforms over request-time fields (and its own features),
computed by one function for the training set, batch scoring and the serving process, so a request
that sends the entity key and the request-time fields is scored exactly as offline (1e-12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import polars as pl
import pytest

from core import datasets, demo, features, registry
from core.cli import run
from core.config import Settings, load_settings
from core.errors import FeatureViewError
from core.features import Feature, FeatureView
from core.flows import promote
from core.flows.score import score_dataset
from core.flows.train import train_model
from core.lake import Lake
from core.serving.app import create_app
from core.serving.online import check_skew
from tests.test_serving_support import ThreadServer, serving_settings

NOW = datetime(2025, 6, 1, tzinfo=UTC)
REQUEST_FEATURES = ["charges_per_call_30d", "support_share_30d", "premium_data_7d"]
VIEW = FeatureView(
    name="usage_req", source="churn_usage", entity="customer_id", event_time="event_at", missing="default",
    features=(
        Feature("calls_30d", "pl.col('calls')", agg="sum", window="30d"),
        Feature("active_30d", agg="count", window="30d"),
        Feature("data_gb_7d", "pl.col('data_gb')", agg="sum", window="7d"),
    ),
    request_fields={"monthly_charges": "Float64", "support_calls": "Int64", "plan": "String"},
    request_features=(
        Feature("charges_per_call_30d", "pl.col('monthly_charges') / (pl.col('calls_30d') + 1)"),
        Feature("support_share_30d", "pl.col('support_calls') / (pl.col('support_calls') + pl.col('active_30d') + 1)"),
        Feature("premium_data_7d", "pl.when(pl.col('plan') == 'premium').then(pl.col('data_gb_7d')).otherwise(0.0)"),
    ),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """churn labels and usage events, the view, a training set, model ``req`` (champion), online values, an API."""
    root = tmp_path_factory.mktemp("request-features")
    lake = Lake(str(root / "lake"))
    settings = Settings(lake_uri=lake.uri, actor="tester")
    churn = demo.generate(1200, seed=4, start=NOW - timedelta(days=120), days=120, campaign_start=NOW + timedelta(days=999))
    datasets.ingest("churn", churn, lake=lake, settings=settings)
    datasets.ingest("churn_usage", demo.usage_events(churn, until=NOW), lake=lake, settings=settings)
    datasets.ingest("no_plan", churn.drop("plan"), lake=lake, settings=settings)
    datasets.ingest("plan_codes", churn.with_columns(pl.col("plan").rank("dense").cast(pl.Int64)), lake=lake, settings=settings)
    view, created = features.register(VIEW, lake=lake)
    assert created and view.version == 1
    features.build_training_set("req_training", labels="churn", views=["usage_req"], lake=lake, settings=settings)
    out = train_model("req_training", target="churned", params={"num_iterations": 40}, lake=lake, settings=settings)
    mv = registry.register("req", out.run_id, lake=lake, actor="tester")
    promote.promote("req", mv.version, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    features.materialize("usage_req", as_of=NOW, lake=lake)
    with ThreadServer(create_app(serving_settings(root / "lake", root / "wal"))) as srv:
        yield lake, srv


def test_a_request_feature_definition_round_trips_and_is_checked():
    again = features.parse_view(VIEW.to_dict())
    assert again == VIEW and again.content_hash() == VIEW.content_hash()
    assert VIEW.all_feature_names == ["calls_30d", "active_30d", "data_gb_7d", *REQUEST_FEATURES]
    # a view without request features keeps the hash it had before request features existed
    plain = FeatureView(name="u", source="s", entity="e", event_time="t", features=(Feature("n", agg="count", window="1d"),))
    assert "request" not in plain.to_dict()
    bad = [
        ({"request_features": (Feature("x", "pl.col('amount') * 2"),)}, "request features need request fields"),
        ({"request_fields": {"amount": "Decimal"}}, "request field 'amount': type 'Decimal' is not one of"),
        ({"request_fields": {"amount": "Float64"}, "request_features": (Feature("x", "pl.col('price') * 2"),)},
         "request feature 'x': 'price' is neither a request field (amount) nor a feature of the view (calls_30d"),
        ({"request_fields": {"amount": "Float64"},
          "request_features": (Feature("x", "pl.col('amount')", agg="sum", window="1d"),)}, "no agg, window or default"),
        ({"request_fields": {"calls_30d": "Float64"}}, "request field 'calls_30d': named like another field, a feature"),
        ({"request_fields": {"amount": "Float64"}, "request_features": (Feature("x", "pl.lit(2.0)"),)},
         "request feature 'x': the expression reads no request field or feature"),
    ]
    base = {k: getattr(VIEW, k) for k in ("name", "source", "entity", "event_time", "features")}
    for extra, message in bad:
        with pytest.raises(FeatureViewError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)")):
            FeatureView(**base, **extra)


def test_training_set_has_the_request_features_computed_from_each_label_row(world):
    lake, _ = world
    ts = datasets.load("req_training", lake=lake)
    churn = datasets.load("churn", lake=lake)
    assert ts.height == churn.height
    want = (churn["monthly_charges"] / (ts["calls_30d"] + 1)).to_numpy()
    assert np.array_equal(ts["charges_per_call_30d"].to_numpy(), want)
    premium = (churn["plan"] == "premium").to_numpy()
    assert premium.any() and (~premium).any()
    assert np.array_equal(ts["premium_data_7d"].to_numpy()[~premium], np.zeros((~premium).sum()))
    assert np.array_equal(ts["premium_data_7d"].to_numpy()[premium], ts["data_gb_7d"].to_numpy()[premium])
    sig = registry.load("req", lake=lake).signature
    [spec] = sig["feature_views"]
    assert spec["features"] == ["calls_30d", "active_30d", "data_gb_7d", *REQUEST_FEATURES]
    # the online table holds the looked-up features only (request features depend on the request)
    online, _ = features.current_values("usage_req", 1, lake=lake)
    assert "calls_30d" in online.columns and not set(REQUEST_FEATURES) & set(online.columns)


def test_check_skew_offline_and_online_and_api_identical(world):
    lake, srv = world
    report = check_skew("req", entities=80, api=srv.url, lake=lake)
    assert report.entities == 81 and report.unknown_entities == 1  # missing = "default": a stranger too
    assert report.max_feature_diff <= 1e-12 and report.max_score_diff <= 1e-12
    assert report.api_max_score_diff is not None and report.api_max_score_diff <= 1e-12
    assert report.identical


def test_a_request_sends_the_key_and_request_fields_and_is_scored_like_offline(world):
    lake, srv = world
    loaded = registry.load("req", lake=lake)
    rows = datasets.load("churn", lake=lake).head(30).with_columns(pl.lit(NOW).alias("signup_at"))
    req_names = [f["name"] for f in loaded.signature["features"]
                 if f["name"] not in loaded.signature["feature_views"][0]["features"]]
    body = [{**{n: r[n] for n in req_names}, "customer_id": r["customer_id"]} for r in rows.iter_rows(named=True)]
    resp = httpx.post(f"{srv.url}/v1/models/req/predict", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    # offline: the same rows, the features as of the materialisation time (the training set's code)
    offline = features.with_view_features(rows, loaded.signature, lake=lake)
    assert np.abs(np.asarray(resp.json()["scores"]) - loaded.model.predict(offline)).max() <= 1e-12
    # a different request-time value changes the request feature, so the score can move with it
    changed = [{**b, "plan": "premium", "monthly_charges": 500.0} for b in body]
    again = httpx.post(f"{srv.url}/v1/models/req/predict", json=changed, timeout=30).json()["scores"]
    offline2 = features.with_view_features(rows.with_columns(pl.lit("premium").alias("plan"),
                                                             pl.lit(500.0).alias("monthly_charges")),
                                           loaded.signature, lake=lake)
    assert np.abs(np.asarray(again) - loaded.model.predict(offline2)).max() <= 1e-12


def test_batch_scoring_computes_request_features_like_the_training_set(world):
    lake, _ = world
    out = score_dataset("churn", model="req", output="req_scores", lake=lake,
                        settings=load_settings(env={}, lake_uri=lake.uri, actor="tester"))
    got = datasets.load(out.output, lake=lake)
    training = datasets.load("req_training", lake=lake)
    assert np.array_equal(got["score"].to_numpy(), registry.load("req", lake=lake).model.predict(training))


def test_labels_or_rows_without_a_request_field_are_one_line_exit_2_nothing_written(world, capsys):
    lake, _ = world
    code = run(["--lake", lake.uri, "features", "build-training", "--labels", "no_plan", "--view", "usage_req",
                "--name", "t_no_plan"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "label dataset 'no_plan' has no request field 'plan' (feature view 'usage_req' computes its request" in err
    code = run(["--lake", lake.uri, "score", "--dataset", "no_plan", "--model", "req@champion", "--output", "s_no_plan"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "the rows lack the request field 'plan' feature view 'usage_req' v1 computes its request features from" in err
    assert not lake.exists("data/t_no_plan") and not lake.exists("data/s_no_plan")


def test_a_request_field_the_model_takes_as_a_pass_through_field_only(world, settings):
    lake, _ = world
    pt = ["signup_at", "customer_id", "monthly_charges"]
    out = train_model("req_training", target="churned", params={"num_iterations": 20}, lake=lake,
                      exclude=["monthly_charges"], passthrough=pt, settings=settings)
    sig = out.model.signature
    assert "monthly_charges" not in [f["name"] for f in sig["features"]]
    assert "charges_per_call_30d" in [f["name"] for f in sig["features"]]
    mv = registry.register("req_pt", out.run_id, lake=lake, actor="tester")
    promote.promote("req_pt", mv.version, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    report = check_skew("req_pt", entities=40, lake=lake)
    assert report.identical and report.max_feature_diff <= 1e-12, report.rows


def test_without_strict_rows_lacking_a_request_field_get_null_inputs(world):
    lake, _ = world
    sig = registry.load("req", lake=lake).signature
    rows = datasets.load("no_plan", lake=lake).head(20)
    out = features.with_view_features(rows, sig, lake=lake)  # the gate scoring another model's holdout
    assert out["premium_data_7d"].null_count() == 0 and (out["premium_data_7d"] == 0).all()  # plan null: otherwise
    with pytest.raises(FeatureViewError, match="request field 'plan'"):
        features.with_view_features(rows, sig, strict=True, lake=lake)


def test_list_counts_request_features(world):
    lake, _ = world
    row = features.list_views(lake=lake).filter(pl.col("name") == "usage_req").row(0, named=True)
    assert row["features"] == 6


def test_a_request_field_of_another_type_in_the_labels_is_refused(world, capsys):
    lake, _ = world
    code = run(["--lake", lake.uri, "features", "build-training", "--labels", "plan_codes", "--view", "usage_req",
                "--name", "t_codes"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "label dataset 'plan_codes': request field 'plan' has type Int64; feature view 'usage_req' declares it String" in err
    assert not lake.exists("data/t_codes")


def test_null_request_fields_are_null_inputs_online_and_offline(world):
    lake, srv = world
    loaded = registry.load("req", lake=lake)
    rows = (datasets.load("churn", lake=lake).head(12).with_columns(pl.lit(NOW).alias("signup_at"))
            .with_columns(pl.when(pl.int_range(pl.len()) % 2 == 0).then(None).otherwise(pl.col("plan")).alias("plan"),
                          pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("monthly_charges"))
                          .alias("monthly_charges")))
    req_names = [f["name"] for f in loaded.signature["features"]
                 if f["name"] not in loaded.signature["feature_views"][0]["features"]]
    body = [{**{n: r[n] for n in req_names}, "customer_id": r["customer_id"]} for r in rows.iter_rows(named=True)]
    resp = httpx.post(f"{srv.url}/v1/models/req/predict", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    offline = features.with_view_features(rows, loaded.signature, lake=lake)
    assert offline["charges_per_call_30d"].null_count() == 4
    assert np.abs(np.asarray(resp.json()["scores"]) - loaded.model.predict(offline)).max() <= 1e-12
    # the values the model saw, as logged, are the offline ones (null as NaN)
    from tests.test_features_serving import _logged

    log = _logged(lake, resp.json()["prediction_ids"], model="req")
    logged = log.sort("prediction_id").select(pl.col("features").struct.field("charges_per_call_30d"))
    order = np.argsort(np.asarray(resp.json()["prediction_ids"]))
    want = offline["charges_per_call_30d"].to_numpy()[order]
    got = logged.to_series().to_numpy()
    assert np.array_equal(np.isnan(want), np.isnan(got)) and np.allclose(want[~np.isnan(want)], got[~np.isnan(got)], rtol=0, atol=0)
