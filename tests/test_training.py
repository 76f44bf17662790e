from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core import training
from core.errors import DataValidationError, TrainingError

FAST = {"num_iterations": 25, "num_leaves": 7, "min_data_in_leaf": 10}


def _frame(n: int = 1200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    plan = rng.choice(["basic", "premium", "promo"], size=n)
    logit = 1.5 * x + np.where(plan == "promo", 1.2, 0.0) - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in range(n)],
            "signup_at": [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(n)],
            "x": x,
            "calls": rng.integers(0, 5, size=n),
            "plan": pl.Series(plan).set(pl.Series(rng.random(n) < 0.05), None),
            "churned": y,
        }
    )


def test_split_is_deterministic_whatever_the_row_order():
    df = _frame()
    a_train, a_valid = training.split(df, "churned", seed=4)
    b_train, b_valid = training.split(df.sample(fraction=1.0, shuffle=True, seed=9), "churned", seed=4)
    assert a_train.equals(b_train) and a_valid.equals(b_valid)
    assert a_train.height + a_valid.height == df.height
    # stratified: both parts keep the class ratio
    assert abs(a_train["churned"].mean() - a_valid["churned"].mean()) < 0.02
    c_train, _ = training.split(df, "churned", seed=5)
    assert not c_train.equals(a_train)


def test_time_split_puts_the_latest_rows_in_valid():
    df = _frame()
    train, valid = training.split(df, "churned", time_column="signup_at", valid_fraction=0.25)
    assert valid.height == 300
    assert train["signup_at"].max() <= valid["signup_at"].min()


def test_compute_metrics_binary_and_regression():
    y = np.array([0, 0, 1, 1])
    m = training.compute_metrics("binary", y, np.array([0.1, 0.4, 0.35, 0.8]))
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean((np.array([0.1, 0.4, 0.35, 0.8]) - y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])))
    r = training.compute_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert r["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert r["mae"] == pytest.approx(1 / 3)
    assert r["r2"] == pytest.approx(0.5)


def test_train_binary_signature_and_determinism():
    df = _frame()
    res = training.train(df, "churned", params=FAST, seed=1, time_column="signup_at")
    sig = res.model.signature
    assert isinstance(sig, training.Signature)
    assert sig.task == "binary" and sig.target == "churned" and sig.time_column == "signup_at"
    assert sig.names == ["x", "calls", "plan"]
    assert sig.features[2].to_dict() == {
        "name": "plan",
        "kind": "categorical",
        "dtype": "String",
        "levels": ["basic", "premium", "promo"],
    }
    assert set(res.excluded) == {"customer_id", "signup_at"}
    assert res.metrics["auc"] > 0.7
    assert set(res.metrics) == {"auc", "log_loss", "accuracy", "precision", "recall", "f1", "brier"}
    assert {"train.auc", "valid.auc", "valid.binary_logloss"} <= set(res.history)
    assert len(res.history["valid.auc"]) >= res.best_iteration
    assert res.params["deterministic"] is True and res.params["num_threads"] == 1
    again = training.train(df.reverse(), "churned", params=FAST, seed=1, time_column="signup_at")
    assert again.model.sha256 == res.model.sha256
    other = training.train(
        df,
        "churned",
        params={**FAST, "bagging_fraction": 0.7, "bagging_freq": 1},
        seed=2,
        time_column="signup_at",
    )
    assert other.model.sha256 != res.model.sha256


def test_model_roundtrip_and_encoding():
    res = training.train(_frame(), "churned", params=FAST, seed=0)
    model = training.Model.from_text(res.model.text, res.model.signature)
    assert model.sha256 == res.model.sha256
    rows = pl.DataFrame(
        {"x": [0.5, None], "calls": [1, 2], "plan": ["promo", "unknown-plan"], "extra": [1, 2]}
    )
    X = model.encode(rows)
    assert X.dtype == np.float64 and X.shape == (2, 3)
    assert X[0].tolist() == [0.5, 1.0, 2.0]
    assert math.isnan(X[1, 0]) and math.isnan(X[1, 2])
    scores = model.predict(rows)
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    assert np.allclose(scores, res.model.predict(rows))
    imp = model.importance()
    assert imp.columns == ["feature", "gain", "split"] and imp["feature"][0] == "x"
    with pytest.raises(DataValidationError, match="plan"):
        model.encode(rows.drop("plan"))


def test_regression_task():
    df = _frame().with_columns(value=pl.col("x") * 3 + pl.col("calls"))
    res = training.train(df.drop("churned"), "value", params=FAST, seed=0)
    assert res.model.signature.task == "regression"
    assert set(res.metrics) == {"rmse", "mae", "r2"} and res.metrics["r2"] > 0.8


def test_params_validation():
    assert training.validate_params({"n_estimators": 10, "num_leaves": 8}) == {
        "num_iterations": 10,
        "num_leaves": 8,
    }
    with pytest.raises(TrainingError, match="unknown training parameter 'num_leafs'.*num_leaves"):
        training.validate_params({"num_leafs": 8})
    with pytest.raises(TrainingError, match="output_model"):
        training.validate_params({"output_model": "/tmp/x"})
    with pytest.raises(TrainingError, match="seed"):
        training.validate_params({"seed": 3})
    with pytest.raises(TrainingError, match="valid_fraction"):
        training.validate_params({"valid_fraction": 1.5})


def test_bad_targets():
    df = _frame(200)
    with pytest.raises(TrainingError, match="'nope' is not a column"):
        training.train(df, "nope")
    with pytest.raises(TrainingError, match="single value"):
        training.train(df.with_columns(churned=pl.lit(1)), "churned")
    with pytest.raises(TrainingError, match="type String"):
        training.train(df, "plan")
    with pytest.raises(TrainingError, match="not 0/1"):
        training.train(df, "calls", task="binary")
