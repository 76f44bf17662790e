from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from core import drift, monitoring, registry
from core.errors import ConfigError, ModelVersionNotFoundError
from core.ids import utcnow
from core.training import compute_metrics
from tests.monitor_world import (
    MODEL,
    Receiver,
    build_champion,
    clone,
    log_predictions,
    send_feedback,
    settings_for,
    traffic,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_champion(tmp_path_factory.mktemp("mon") / "lake")


@pytest.fixture
def lake(base, tmp_path):
    return clone(base, tmp_path / "lake")


def test_reference_is_built_once_stored_and_reloaded(lake):
    s = settings_for(lake)
    ref = monitoring.reference(MODEL, lake=lake, settings=s)
    again = monitoring.reference(MODEL, lake=lake, settings=s)
    rows = lake.read("drift_references").sort("kind")
    assert rows["kind"].to_list() == ["estimator", "features:training", "sample:training", "scores"]
    assert again.path == ref.path
    for row in rows.iter_rows(named=True):
        assert hashlib.sha256(lake.get_bytes(row["path"])).hexdigest() == row["sha256"]
    mv = registry.get_version(MODEL, 1, lake=lake)
    assert (ref.dataset, ref.dataset_version) == (mv.dataset_name, mv.dataset_version)
    assert ref.path.startswith(f"artifacts/drift/datasets/churn/v{mv.dataset_version}/")
    assert set(ref.kinds) == set(mv.signature.names)
    assert ref.kinds["plan"] == "categorical" and ref.kinds["age"] == "numeric"
    assert ref.rows == 3000 and ref.mode == "training"  # the training distribution, not the 20 % holdout
    assert ref.holdout_rows == 600 and ref.score.n == 600  # the scores stay the holdout's (what the gate measured)
    assert ref.calibration is not None and ref.contrib_mean is not None and ref.contrib_rows == 600
    assert ref.sample is not None and ref.sample.height == 3000 and set(ref.sample.columns) == set(ref.kinds)
    monitoring.clear_cache()  # another process: read back from the lake
    back = monitoring.reference(MODEL, lake=lake, settings=s)
    np.testing.assert_array_equal(back.features["age"].values, ref.features["age"].values)
    np.testing.assert_array_equal(back.score.values, ref.score.values)
    np.testing.assert_array_equal(back.calibration.y, ref.calibration.y)
    np.testing.assert_array_equal(back.contrib_mean, ref.contrib_mean)
    assert back.sample.equals(ref.sample)
    assert lake.read("drift_references").height == 4
    # another model version trained on the same dataset version and split reuses the features
    registry.register(MODEL, mv.run_id, lake=lake, actor="tester")
    v2 = monitoring.reference(MODEL, version=2, lake=lake, settings=s)
    assert v2.path == ref.path and v2.scores_path != ref.scores_path
    assert lake.read("drift_references")["kind"].to_list().count("scores") == 2
    assert lake.read("drift_references").height == 6  # + v2's scores and estimator


def test_drift_check_without_shift_writes_one_commit(lake):
    s = settings_for(lake)
    log_predictions(lake, traffic(1500, seed=11, campaign=False))
    rep = monitoring.measure_drift(MODEL, window_rows=1000, lake=lake, settings=s)
    assert rep.status == "ok" and rep.window_rows == 1000 and rep.drifted is False
    assert rep.result is not None and rep.result.share < 0.5
    rows = lake.read("drift_reports")
    commits = [h for h in lake.history("drift_reports") if h.get("report_id")]
    assert [c["report_id"] for c in commits] == [rep.report_id]  # one commit for the whole report
    assert rows.height == len(rep.result.features) + 3
    assert set(rows["feature"]) >= {"age", "plan", monitoring.SCORE_ROW, monitoring.DATASET_ROW, monitoring.MULTIVARIATE_ROW}
    assert rows["report_id"].n_unique() == 1 and (rows["window_rows"] == 1000).all()
    age = rows.filter(pl.col("feature") == "age").row(0, named=True)
    assert age["test"] == "ks" and age["p_value"] is not None  # a 1000-row window: small sample
    assert json.loads(age["stats_json"])["n_cur"] == 1000
    assert json.loads(age["stats_json"])["status"] == "ok" and json.loads(age["stats_json"])["quality"]["null_share"] == 0.0
    assert rep.multivariate is not None and rep.multivariate.drifted is False  # same population
    assert rep.attribution is not None and abs(rep.attribution.score_shift) < 0.2


def test_drift_check_flags_campaign_features_and_score(lake):
    s = settings_for(lake, drift={"small_sample": 100})
    log_predictions(lake, traffic(2000, seed=12, campaign=True))
    rep = monitoring.measure_drift(MODEL, lake=lake, settings=s)
    assert rep.drifted is True
    assert {"age", "tenure_months", "plan", "signup_channel"} <= set(rep.drifted_features)
    assert "region" not in rep.drifted_features  # region is the same in both populations
    assert rep.score is not None and rep.score.drifted and rep.score.test == "wasserstein"
    ref = monitoring.reference(MODEL, lake=lake, settings=s)
    cur = monitoring.features_of(monitoring.window(MODEL, rows=5000, lake=lake))
    from scipy.stats import wasserstein_distance

    expected = wasserstein_distance(ref.features["age"].values, cur["age"].to_numpy()) / ref.features["age"].std
    age = next(f for f in rep.result.features if f.feature == "age")
    assert age.statistic == pytest.approx(expected, rel=1e-9)


def test_small_window_gives_no_verdict_and_records_it(lake):
    log_predictions(lake, traffic(50, seed=13, campaign=True))
    rep = monitoring.measure_drift(MODEL, lake=lake, settings=settings_for(lake))
    assert rep.status == "insufficient_data" and rep.drifted is None and rep.window_rows == 50
    rows = monitoring.drift_history(MODEL, lake=lake)
    assert rows["feature"].to_list() == [monitoring.DATASET_ROW] and rows["status"].to_list() == ["insufficient"]
    assert rows["drifted"].to_list() == [None] and "min_rows" in rows["stats_json"][0]


def test_window_by_hours_and_version(lake):
    now = utcnow()
    log_predictions(lake, traffic(300, seed=14, campaign=False), at=now - timedelta(hours=5))
    log_predictions(lake, traffic(200, seed=15, campaign=False), at=now)
    assert monitoring.window(MODEL, hours=1, lake=lake).height == 200
    assert monitoring.window(MODEL, hours=6, lake=lake).height == 500
    assert monitoring.window(MODEL, rows=250, lake=lake).height == 250
    assert monitoring.window(MODEL, rows=250, version=2, lake=lake).height == 0
    last = monitoring.window(MODEL, rows=10, lake=lake)
    assert last["at"].is_sorted() and last["at"].max() == monitoring.window(MODEL, lake=lake)["at"].max()


def test_performance_uses_only_labelled_rows(lake):
    s = settings_for(lake, models={MODEL: {"monitoring": {"min_labels": 100}}})
    logged = log_predictions(lake, traffic(1000, seed=16, campaign=False))
    rep = monitoring.measure_performance(MODEL, lake=lake, settings=s)
    assert rep.status == "insufficient_labels" and rep.labelled == 0 and rep.predictions == 1000
    n = send_feedback(lake, logged, share=0.4)
    rep = monitoring.measure_performance(MODEL, lake=lake, settings=s)
    assert rep.status == "ok" and rep.labelled == n and rep.coverage == pytest.approx(n / 1000)
    joined, _ = monitoring.labelled_window(MODEL, lake=lake)
    expected = compute_metrics("binary", joined["truth"].to_numpy(), joined["score"].to_numpy())
    assert rep.metrics == pytest.approx(expected)
    assert rep.metric == "auc" and rep.baseline_source == "gate" and rep.baseline is not None
    assert rep.degraded is False


def test_performance_drop_under_concept_drift(lake):
    s = settings_for(lake, models={MODEL: {"monitoring": {"min_labels": 100, "tolerance": 0.03}}})
    send_feedback(lake, log_predictions(lake, traffic(1500, seed=17, campaign=True)))
    rep = monitoring.measure_performance(MODEL, lake=lake, settings=s)
    assert rep.status == "ok" and rep.degraded is True
    assert rep.value < rep.baseline - 0.03


def test_alerts_are_deduplicated_resolved_and_posted(lake):
    receiver = Receiver()
    try:
        s = settings_for(lake, alerts={"webhook_url": receiver.url})
        first = monitoring.raise_alert("drift", MODEL, message="m1", evidence={"x": 1}, lake=lake, settings=s)
        assert first is not None and first.status == "open"
        assert monitoring.raise_alert("drift", MODEL, message="m2", evidence={}, lake=lake, settings=s) is None
        assert monitoring.alerts(MODEL, lake=lake).height == 1
        resolved = monitoring.resolve_alert("drift", MODEL, message="ok", lake=lake, settings=s)
        assert resolved is not None and monitoring.alerts(MODEL, lake=lake).height == 0
        assert monitoring.resolve_alert("drift", MODEL, message="ok", lake=lake, settings=s) is None
        again = monitoring.raise_alert("drift", MODEL, message="m3", evidence={}, lake=lake, settings=s)
        assert again is not None
        hist = monitoring.alert_history(MODEL, lake=lake)
        assert hist["status"].to_list() == ["open", "resolved", "open"]
        assert [b["status"] for b in receiver.bodies] == ["open", "resolved", "open"]
        assert receiver.bodies[0]["evidence"] == {"x": 1} and receiver.bodies[0]["model"] == MODEL
    finally:
        receiver.close()
    bad = settings_for(lake, alerts={"webhook_url": "http://127.0.0.1:9/none", "timeout_s": 1})
    assert monitoring.raise_alert("performance", MODEL, message="x", evidence={}, lake=lake, settings=bad) is not None


def test_views_for_the_page(lake, settings):
    s = settings_for(lake)
    logged = log_predictions(lake, traffic(600, seed=18, campaign=True))
    send_feedback(lake, logged, share=0.5)
    monitoring.measure_drift(MODEL, lake=lake, settings=s)
    hist = monitoring.drift_history(MODEL, lake=lake)
    assert hist["report_id"].n_unique() == 1 and monitoring.DATASET_ROW in hist["feature"].to_list()
    dist = monitoring.feature_distribution(MODEL, "age", lake=lake, settings=s)
    assert set(dist["source"]) == {"reference", "current"}
    for src in ("reference", "current"):
        assert dist.filter(pl.col("source") == src)["share"].sum() == pytest.approx(1.0)
    cat = monitoring.feature_distribution(MODEL, "plan", lake=lake, settings=s)
    assert "promo" in cat["bin"].to_list()  # a level new in the campaign traffic
    assert cat.filter((pl.col("source") == "reference") & (pl.col("bin") == "promo"))["share"][0] == 0.0
    scores = monitoring.score_over_time(MODEL, lake=lake)
    assert scores["n"].sum() == 600 and {"p10", "p50", "p90"} <= set(scores.columns)
    perf = monitoring.performance_over_time(MODEL, lake=lake, settings=settings)
    assert perf["labelled"][0] > 0 and 0 < perf["coverage"][0] < 1
    assert "auc" in perf["metric"].to_list()


def test_config_errors_and_no_champion(lake, tmp_path):
    with pytest.raises(ConfigError, match="bogus"):
        monitoring.monitor_config(MODEL, settings_for(lake, models={MODEL: {"monitoring": {"bogus": 1}}}))
    with pytest.raises(ConfigError, match="reference"):
        monitoring.monitor_config(MODEL, settings_for(lake, models={MODEL: {"monitoring": {"reference": "x"}}}))
    with pytest.raises(ConfigError, match="unknown test"):
        monitoring.monitor_config(MODEL, settings_for(lake, models={MODEL: {"drift": {"numeric_test": "x"}}}))
    cfg = monitoring.monitor_config(MODEL, settings_for(lake, models={MODEL: {"drift": {"share": 0.25}}}))
    assert cfg.policy.share == 0.25 and isinstance(cfg.policy, drift.DriftPolicy)
    registry.register("other", registry.get_version(MODEL, 1, lake=lake).run_id, lake=lake, actor="tester")
    with pytest.raises(ModelVersionNotFoundError, match="no champion"):
        monitoring.measure_drift("other", lake=lake, settings=settings_for(lake))
