from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core import datasets, tracking
from core.errors import DatasetNotFoundError, TrainingError
from core.flows import train as flow

FAST = {"num_iterations": 30, "num_leaves": 7, "min_data_in_leaf": 10, "early_stopping_round": 5}


def churn_frame(n: int = 1500, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, size=n)
    plan = rng.choice(["basic", "standard", "promo"], size=n)
    logit = -0.04 * tenure + np.where(plan == "promo", 1.0, 0.0) + rng.normal(size=n)
    return pl.DataFrame(
        {
            "customer_id": [f"cust-{i}" for i in range(n)],
            "signup_at": [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(n)],
            "tenure_months": tenure,
            "monthly_charges": rng.uniform(20, 100, size=n).round(2),
            "plan": plan,
            "churned": (logit > -0.5).astype(np.int64),
        }
    )


@pytest.fixture
def churn_lake(lake, settings):
    datasets.ingest("churn", churn_frame(), lake=lake, settings=settings)
    return lake


def _no_running(lake) -> bool:
    if not lake.exists("runs"):
        return True
    return tracking.search_runs(filter="attributes.status = 'running'", lake=lake).height == 0


def test_train_model_records_everything_and_reproduces(churn_lake, settings):
    lake = churn_lake
    out = flow.train_model("churn", target="churned", params=FAST, seed=3, lake=lake, settings=settings)
    assert out.dataset_version == 1 and out.metrics["auc"] > 0.7
    info = tracking.get_run(out.run_id, lake=lake)
    assert info.status == "finished" and (info.dataset_name, info.dataset_version, info.seed) == (
        "churn",
        1,
        3,
    )
    assert info.experiment == "churn"
    assert info.params["split_method"] == "time" and info.params["time_column"] == "signup_at"
    assert (
        info.params["num_leaves"] == "7"
        and info.params["seed"] == "3"
        and info.params["deterministic"] == "True"
    )
    assert "customer_id" in info.params["excluded_columns"]
    assert set(out.metrics) <= set(info.metrics) and "train_auc" in info.metrics
    assert info.tags["model_sha256"] == out.model.sha256
    assert set(info.artifacts) == {"model/model.txt", "model/signature.json", "model/importance.json", "model/leakage.json"}
    model_bytes = tracking.read_artifact(out.run_id, "model/model.txt", lake=lake)
    assert hashlib.sha256(model_bytes).hexdigest() == out.model.sha256
    curve = tracking.metric_history(out.run_id, ["valid.auc", "train.binary_logloss"], lake=lake)
    steps = curve.filter(pl.col("key") == "valid.auc")["step"].to_list()
    assert steps[0] == 1 and steps == sorted(steps) and len(steps) >= out.best_iteration
    loaded = flow.run_model(out.run_id, lake=lake)
    frame = churn_frame(50, seed=9)
    assert np.allclose(loaded.predict(frame), out.model.predict(frame))
    assert loaded.signature["features"][-1]["levels"] == ["basic", "promo", "standard"]
    imp = flow.feature_importance(out.run_id, lake=lake)
    assert set(imp["feature"]) == {"tenure_months", "monthly_charges", "plan"} and imp["gain"].sum() > 0

    rep = flow.reproduce(out.run_id, lake=lake, settings=settings)
    assert rep.matches and rep.new_sha256 == out.model.sha256 and rep.new_run_id != out.run_id
    assert tracking.get_run(rep.new_run_id, lake=lake).tags["reproduces"] == out.run_id


def test_version_pinning(churn_lake, settings):
    lake = churn_lake
    datasets.ingest("churn", churn_frame(300, seed=5), lake=lake, settings=settings)
    old = flow.train_model("churn", target="churned", version=1, params=FAST, lake=lake, settings=settings)
    new = flow.train_model("churn", target="churned", params=FAST, lake=lake, settings=settings)
    assert (old.dataset_version, new.dataset_version) == (1, 2)
    assert old.model.sha256 != new.model.sha256


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dataset": "nope", "target": "churned"}, DatasetNotFoundError, "'nope'"),
        (
            {"dataset": "churn", "target": "churned", "version": 7},
            DatasetNotFoundError,
            "versions 1-1; asked for 7",
        ),
        ({"dataset": "churn", "target": "churn"}, TrainingError, "target 'churn' is not a column"),
        ({"dataset": "churn", "target": "plan"}, TrainingError, "type String"),
        ({"dataset": "churn", "target": "plan", "task": "regression"}, TrainingError, "numeric target"),
        ({"dataset": "churn", "target": "churned", "params": {"num_leavez": 3}}, TrainingError, "num_leavez"),
        ({"dataset": "churn", "target": "tenure_months", "task": "binary"}, TrainingError, "not 0/1"),
    ],
)
def test_bad_input(churn_lake, settings, kwargs, error, match):
    name = kwargs.pop("dataset")
    with pytest.raises(error, match=match):
        flow.train_model(name, lake=churn_lake, settings=settings, **kwargs)
    assert _no_running(churn_lake)


def test_one_class_target_and_failure_inside_the_run(lake, settings):
    frame = churn_frame(400)
    datasets.ingest("one", frame.with_columns(churned=pl.lit(0, dtype=pl.Int64)), lake=lake, settings=settings)
    with pytest.raises(TrainingError, match="single value"):
        flow.train_model("one", target="churned", lake=lake, settings=settings)
    # the latest 20% (validation by time) hold a single class: found only once training started
    late = pl.int_range(pl.len()) >= 320
    datasets.ingest(
        "late", frame.with_columns(churned=pl.when(late).then(0).otherwise(pl.col("churned"))), lake=lake
    , settings=settings)
    with pytest.raises(TrainingError, match="validation set has a single class"):
        flow.train_model("late", target="churned", params=FAST, lake=lake, settings=settings)
    runs = tracking.search_runs(lake=lake)
    assert runs["status"].to_list() == ["failed"]
    assert "single class" in runs["error"][0]
    assert _no_running(lake)


def test_params_file(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[params]\nnum_leaves = 15\nn_estimators = 40\n")
    assert flow.load_params_file(good) == {"num_leaves": 15, "num_iterations": 40}
    bad = tmp_path / "bad.toml"
    bad.write_text("num_leaves = 15\nlearnin_rate = 0.1\n")
    with pytest.raises(
        TrainingError, match="bad.toml: unknown training parameter 'learnin_rate'.*learning_rate"
    ):
        flow.load_params_file(bad)
