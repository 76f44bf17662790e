"""The Features page, run with Streamlit's AppTest against a temporary lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core import datasets, demo, features
from tests.pages_support import run_page

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def test_empty_lake_shows_hint(ui_lake):
    at = run_page("pages/features.py")
    assert "No feature view yet" in at.info[0].value


def test_views_definition_freshness_entity_and_training_sets(ui_lake, settings):
    churn = demo.generate(400, seed=2, start=NOW - timedelta(days=120), days=120, campaign_start=NOW + timedelta(days=999))
    datasets.ingest("churn", churn, lake=ui_lake, settings=settings)
    datasets.ingest("churn_usage", demo.usage_events(churn, until=NOW), lake=ui_lake, settings=settings)
    features.register(features.parse_view(demo.USAGE_VIEW), lake=ui_lake)
    features.build_training_set("churn_training", labels="churn", views=["churn_usage"], lake=ui_lake, settings=settings)
    features.materialize("churn_usage", as_of=NOW, lake=ui_lake)
    features.register(features.parse_view({**demo.USAGE_VIEW, "missing": "error"}), lake=ui_lake)

    at = run_page("pages/features.py")
    assert at.dataframe[0].value["name"].tolist() == ["churn_usage"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Features"] == "4" and metrics["Unknown entity"] == "422 error"  # v2, the latest, first
    assert any(i.value.startswith("churn_usage v2 has no online values yet") for i in at.info)
    at.selectbox(key="view_version").set_value(1).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Unknown entity"] == "default" and metrics["Last run"].startswith("full, ")
    assert metrics["Source"] == "churn_usage" and metrics["Source version"] == "v1"
    definition = at.dataframe[1].value
    assert definition["feature"].tolist() == ["calls_30d", "active_30d", "long_calls_30d", "data_gb_7d"]
    assert definition["window"].tolist() == ["30d", "30d", "30d", "7d"]
    at.text_input(key="entity_key").set_value("C0000001").run()
    vector = [d.value for d in at.dataframe if "feature" in d.value.columns and "value" in d.value.columns]
    assert vector and vector[0]["feature"].tolist() == definition["feature"].tolist()
    at.text_input(key="entity_key").set_value("NOBODY").run()
    assert any("has no online values in churn_usage v1" in e.value for e in at.error)
    sets = [d.value for d in at.dataframe if "label_dataset" in d.value.columns]
    assert sets and sets[0]["dataset"].tolist() == ["churn_training"]


def test_a_view_with_request_features_shows_them_and_their_fields(ui_lake, settings):
    churn = demo.generate(300, seed=3, start=NOW - timedelta(days=120), days=120, campaign_start=NOW + timedelta(days=999))
    datasets.ingest("churn_usage", demo.usage_events(churn, until=NOW), lake=ui_lake, settings=settings)
    doc = {**demo.USAGE_VIEW, "request": {"monthly_charges": "Float64"},
           "request_features": [{"name": "charges_per_call_30d", "expr": "pl.col('monthly_charges') / (pl.col('calls_30d') + 1)"}]}
    features.register(features.parse_view(doc), lake=ui_lake)
    at = run_page("pages/features.py")
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Features"] == "5"
    definition = at.dataframe[1].value
    assert definition["feature"].tolist()[-1] == "charges_per_call_30d"
    assert definition["aggregate"].tolist()[-1] == "per request"
    assert any("`monthly_charges` (Float64)" in c.value for c in at.caption)
