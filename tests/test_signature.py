"""The model signature struct: its stored JSON form, older forms, clear errors, and a real model's use of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import polars as pl
import pytest

from core import registry, training
from core.errors import SignatureError
from core.lake import Lake
from core.serving.schemas import Codec, json_schema
from core.signature import Feature, FeatureViewRef, PassThrough, Signature, as_signature

FAST = {"num_iterations": 30, "num_leaves": 7, "min_data_in_leaf": 10}

# a run's model/signature.json as lakeops wrote it before the struct existed (a demo model trained on
# the churn_usage feature view: log_dict's sort_keys and indent, pass-through fields, feature views)
STORED_TODAY = """{
  "feature_views": [{"defaults": {"active_30d": 0, "calls_30d": 0}, "entity": "customer_id",
    "features": ["calls_30d", "active_30d"], "hash": "985a3a0be0890b8cc95d501ca5f0cd4e143a0797b32b9fdfafd9e92daf808e2b",
    "missing": "default", "version": 1, "view": "churn_usage"}],
  "features": [
    {"dtype": "Int64", "kind": "numeric", "name": "tenure_months"},
    {"dtype": "String", "kind": "categorical", "levels": ["basic", "premium", "standard"], "name": "plan"},
    {"dtype": "Int64", "kind": "numeric", "name": "calls_30d"},
    {"dtype": "Int64", "kind": "numeric", "name": "active_30d"}
  ],
  "feedback_key": null,
  "passthrough": [{"name": "signup_at", "role": "event_time", "type": "datetime"},
                  {"name": "customer_id", "role": "id", "type": "string"}],
  "target": "churned",
  "task": "binary",
  "threshold": 0.5,
  "time_column": "signup_at"
}"""

# the first releases' form: no pass-through fields, feedback key or feature views
STORED_OLDEST = (b'{"task": "regression", "target": "price", "threshold": 0.5, "time_column": null, '
                 b'"features": [{"name": "rooms", "kind": "numeric", "dtype": "Int64"}, '
                 b'{"name": "city", "kind": "categorical", "dtype": "String", "levels": ["a", "b"]}]}')


def test_stored_signature_of_today_reads_and_writes_back_the_same_json():
    sig = Signature.from_json(STORED_TODAY)
    assert sig.task == "binary" and sig.target == "churned" and sig.threshold == 0.5 and sig.binary
    assert sig.time_column == "signup_at" and sig.feedback_key is None
    assert sig.names == ["tenure_months", "plan", "calls_30d", "active_30d"]
    assert sig.feature("plan") == Feature("plan", "categorical", "String", ("basic", "premium", "standard"))
    assert sig.passthrough[1] == PassThrough("customer_id", "string", "id")
    assert sig.passthrough_names == ["signup_at", "customer_id"]
    view = sig.feature_views[0]
    assert isinstance(view, FeatureViewRef) and view.version == 1 and view.missing == "default"
    assert view.features == ("calls_30d", "active_30d") and view.defaults == {"active_30d": 0, "calls_30d": 0}
    assert sig.view_features == {"calls_30d", "active_30d"}
    assert sig.to_dict() == json.loads(STORED_TODAY)  # the stored form is unchanged
    assert Signature.from_json(sig.to_json()) == sig
    assert as_signature(json.loads(STORED_TODAY)) == sig and as_signature(sig) is sig
    with pytest.raises(AttributeError):
        sig.target = "other"  # type: ignore[misc]  # immutable


def test_oldest_stored_form_loads_with_the_defaults():
    sig = as_signature(STORED_OLDEST)
    assert sig.task == "regression" and not sig.binary
    assert sig.passthrough == () and sig.feedback_key is None and sig.feature_views == ()
    assert sig.feature("rooms").levels == () and sig.feature("city").categorical
    # written back: the keys every release writes, no feature_views for a model without views
    out = sig.to_dict()
    assert set(out) == {"task", "target", "threshold", "time_column", "features", "passthrough", "feedback_key"}
    assert "levels" not in out["features"][0] and out["features"][1]["levels"] == ["a", "b"]
    minimal = Signature.from_dict({"task": "binary", "target": "y",
                                   "features": [{"name": "x", "kind": "numeric", "dtype": "Float64"}]})
    assert minimal.threshold == 0.5 and minimal.time_column is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("target"), "missing required field `target`"),
    (lambda d: d.update(targets="y"), "unknown field `targets`"),
    (lambda d: d["features"][1].pop("kind"), r"missing required field `kind` - at `\$.features\[1\]`"),
    (lambda d: d["features"][0].update(kind="text"), r"Invalid enum value 'text' - at `\$.features\[0\].kind`"),
    (lambda d: d["passthrough"][0].update(role="owner"), r"at `\$.passthrough\[0\].role`"),
    (lambda d: d["feature_views"][0].pop("entity"), r"missing required field `entity` - at `\$.feature_views\[0\]`"),
    (lambda d: d.update(threshold="high"), r"Expected `float`, got `str` - at `\$.threshold`"),
])
def test_a_wrong_key_is_an_error_naming_it(change, message):
    stored = json.loads(STORED_TODAY)
    change(stored)
    with pytest.raises(SignatureError, match=message):
        Signature.from_dict(stored)
    with pytest.raises(SignatureError, match="not valid JSON"):
        Signature.from_json(b"{")
    with pytest.raises(SignatureError, match="JSON object, not list"):
        Signature.from_dict([])  # type: ignore[arg-type]


def test_registration_refuses_a_signature_that_does_not_read(lake: Lake):
    with pytest.raises(SignatureError, match="missing required field `features`"):
        registry._register_files(lake, "m", None, b"x", b'{"task": "binary", "target": "y"}', metrics={},
                                 dataset_name=None, dataset_version=None, actor="tester")
    assert not lake.exists("registry_versions") or lake.read("registry_versions").height == 0


def _frame(n: int = 600, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, size=n)
    plan = rng.choice(["basic", "standard", "promo"], size=n)
    logit = -0.04 * tenure + np.where(plan == "promo", 1.0, 0.0) + rng.normal(size=n)
    return pl.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)],
        "signup_at": [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(n)],
        "tenure_months": tenure, "plan": plan, "churned": (logit > -0.5).astype(np.int64),
    })


def test_a_trained_model_carries_the_struct_and_serving_scores_from_it(lake: Lake):
    frame = _frame()
    res = training.train(frame, "churned", params=FAST, seed=1, time_column="signup_at", feedback_key="customer_id")
    sig = res.model.signature
    assert isinstance(sig, Signature) and sig.names == ["tenure_months", "plan"]
    assert sig.feature("plan").levels == ("basic", "promo", "standard")
    assert sig.feedback_key == "customer_id" and {p.role for p in sig.passthrough} == {"id", "event_time"}
    # registered through its stored JSON, it comes back equal, and serving's codec scores from it
    mv = registry._register_files(lake, "churn", None, res.model.text.encode(), sig.to_json(), metrics={},
                                  dataset_name=None, dataset_version=None, actor="tester")
    assert mv.signature == sig
    loaded = registry.load("churn", version=mv.version, alias=None, lake=lake)
    assert loaded.signature == sig and loaded.model.signature == sig
    rows = frame.head(20)
    body = [{"tenure_months": r["tenure_months"], "plan": r["plan"], "customer_id": r["customer_id"]}
            for r in rows.iter_rows(named=True)]
    body[3]["plan"] = "unheard-of"  # an unknown level: NaN, as training's encoder does
    codec = Codec(loaded.signature, unknown_category="missing", max_rows=100)
    decoded = codec.decode(msgspec.json.encode(body))
    expected = loaded.model.encode(rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("plan")).alias("plan")))
    np.testing.assert_array_equal(decoded.X, expected)
    assert decoded.passthrough == {"customer_id": [r["customer_id"] for r in body]}  # only the fields sent
    np.testing.assert_allclose(loaded.model.predict_matrix(decoded.X), res.model.predict(rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("plan")).alias("plan"))))
    schema = json_schema(sig, 100)
    assert "tenure_months" in json.dumps(schema) and "customer_id" in json.dumps(schema)



def test_no_key_reads_left():
    """The struct is read by attribute: the old dict's ``sig["key"]`` is a TypeError, not a silent default."""
    sig = Signature.from_json(STORED_TODAY)
    with pytest.raises(TypeError):
        sig["target"]  # type: ignore[index]
    assert not hasattr(sig, "get") and not hasattr(sig.features[0], "get")
