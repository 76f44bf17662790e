from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from core import datasets, demo, registry, training
from core.config import Settings, load_settings
from core.errors import ConfigError, PromotionRefusedError, RegistryError
from core.flows import promote
from core.flows.train import train_model
from core.gating import Policy
from core.lake import Lake


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One lake with two dataset versions and three small trained runs, shared by the tests."""
    lake = Lake(tmp_path_factory.mktemp("promote") / "lake")
    settings = Settings(lake_uri=lake.uri, actor="tester")
    data = demo.generate(n=3000, seed=3)
    datasets.ingest("churn", data.head(2000), lake=lake, settings=settings)
    datasets.ingest("churn", data.tail(1000), lake=lake, settings=settings)
    datasets.ingest("raw", data, lake=lake, validate=False, settings=settings)
    runs = {
        "a": train_model(
            "churn", target="churned", version=1, params={"num_iterations": 20}, lake=lake
        , settings=settings).run_id,
        "b": train_model(
            "churn", target="churned", version=2, params={"num_iterations": 40}, seed=1, lake=lake
        , settings=settings).run_id,
        "c": train_model(
            "churn", target="churned", version=2, params={"num_iterations": 5, "num_leaves": 2}, lake=lake
        , settings=settings).run_id,
        "raw": train_model("raw", target="churned", params={"num_iterations": 10}, lake=lake, settings=settings).run_id,
    }
    return lake, runs


def _settings(lake: Lake, model: str, **policy):
    return load_settings(
        env={}, lake_uri=lake.uri, actor="alice", sections={"models": {model: {"policy": policy}}}
    )


def test_first_version_passes_with_no_champion_and_is_promoted(world, settings):
    lake, runs = world
    registry.register("m1", runs["a"], lake=lake, actor="alice")
    report = promote.evaluate("m1", 1, lake=lake, settings=_settings(lake, "m1"))
    assert report.passed and report.champion_version is None
    check = next(c for c in report.checks if c.name == "beat_champion:auc")
    assert check.detail == "no champion"
    assert {c.name for c in report.checks} >= {
        "validated_data",
        "max_size_bytes",
        "max_p95_latency_ms:1",
        "max_p95_latency_ms:100",
    }
    assert report.eval_dataset == "churn" and report.eval_dataset_version == 1 and report.eval_rows == 400
    assert promote.latest_gate("m1", 1, lake=lake) == report
    change = promote.promote("m1", 1, reason="launch", lake=lake, actor="alice", settings=settings)
    assert change.applied and registry.champion_version("m1", lake) == 1
    with pytest.raises(PromotionRefusedError, match="already the champion"):
        promote.promote("m1", 1, reason="again", lake=lake, settings=settings)


def test_champion_is_rescored_on_the_candidates_holdout(world):
    lake, runs = world
    registry.register("m2", runs["a"], lake=lake, actor="tester")  # trained on churn v1
    registry.register("m2", runs["b"], lake=lake, actor="tester")  # trained on churn v2
    registry.set_alias("m2", "champion", 1, actor="t", reason="seed", lake=lake)
    report = promote.evaluate(
        "m2", 2, lake=lake, settings=_settings(lake, "m2", beat_champion={"metric": "auc", "margin": 0.0})
    )
    # recompute by hand: the champion's own model on the candidate's (dataset v2) holdout
    frame = datasets.load("churn", 2, lake=lake)
    _, holdout = training.split(frame, "churned", time_column="signup_at", seed=1, valid_fraction=0.2)
    champ = registry.load("m2", version=1, alias=None, lake=lake)
    y = holdout["churned"].cast(pl.Float64).to_numpy()
    expected = training.compute_metrics("binary", y, champ.model.predict(holdout))["auc"]
    assert report.champion_metrics["auc"] == pytest.approx(expected, abs=1e-12)
    assert report.champion_metrics["auc"] != pytest.approx(
        registry.get_version("m2", 1, lake=lake).metrics["auc"]
    )
    check = next(c for c in report.checks if c.name == "beat_champion:auc")
    assert check.threshold == pytest.approx(expected)
    assert check.passed == (report.metrics["auc"] >= expected)
    assert report.metrics["auc"] == pytest.approx(registry.get_version("m2", 2, lake=lake).metrics["auc"])


def test_failed_gate_refuses_promotion_unless_forced(world):
    lake, runs = world
    registry.register("m3", runs["c"], lake=lake, actor="tester")
    settings = _settings(lake, "m3", min={"auc": 0.99}, max={"brier": 0.01})
    report = promote.evaluate("m3", 1, lake=lake, settings=settings)
    assert not report.passed
    assert {c.name for c in report.failed} == {"min:auc", "max:brier"}
    with pytest.raises(PromotionRefusedError, match="failed its gate: min:auc"):
        promote.promote("m3", 1, reason="try", lake=lake, settings=settings)
    with pytest.raises(RegistryError, match="needs a reason"):
        promote.promote("m3", 1, reason="", force=True, lake=lake, settings=settings)
    promote.promote(
        "m3", 1, reason="hotfix, accepted risk", force=True, lake=lake, settings=settings, actor="bob"
    )
    hist = registry.history("m3", "champion", lake=lake).row(0, named=True)
    assert hist["forced"] and hist["actor"] == "bob" and hist["reason"] == "hotfix, accepted risk"


def test_approval_required_and_reject(world):
    lake, runs = world
    registry.register("m4", runs["a"], lake=lake, actor="tester")
    settings = _settings(lake, "m4", require_approval=True)
    promote.evaluate("m4", 1, lake=lake, settings=settings)
    with pytest.raises(PromotionRefusedError, match="requires approval"):
        promote.promote("m4", 1, reason="go", lake=lake, settings=settings)
    promote.reject("m4", 1, reason="bias review pending", lake=lake, settings=settings)
    assert registry.statuses("m4", lake=lake)[1] == "rejected"
    with pytest.raises(PromotionRefusedError, match="was rejected"):
        promote.promote("m4", 1, reason="go", lake=lake, settings=settings)
    promote.approve("m4", 1, reason="bias review ok", lake=lake, settings=settings)
    assert registry.statuses("m4", lake=lake)[1] == "approved"
    promote.promote("m4", 1, reason="go", lake=lake, settings=settings)
    assert registry.statuses("m4", lake=lake)[1] == "champion"


def test_stale_gate_and_rollback(world, settings):
    lake, runs = world
    for r in ("a", "b", "c"):
        registry.register("m5", runs[r], lake=lake, actor="tester")
    s = _settings(lake, "m5", beat_champion=False)
    promote.evaluate("m5", 1, lake=lake, settings=s)
    promote.promote("m5", 1, reason="v1", lake=lake, settings=s)
    promote.evaluate("m5", 2, lake=lake, settings=s)
    promote.evaluate("m5", 3, lake=lake, settings=s)
    promote.promote("m5", 2, reason="v2", lake=lake, settings=s)
    with pytest.raises(PromotionRefusedError, match="gated against champion v1, but the champion is now v2"):
        promote.promote("m5", 3, reason="v3", lake=lake, settings=s)
    promote.evaluate("m5", 3, lake=lake, settings=s)
    promote.promote("m5", 3, reason="v3", lake=lake, settings=s)
    back = promote.rollback("m5", reason="latency incident", lake=lake, actor="oncall", settings=settings)
    assert (back.version, back.previous_version, back.action) == (2, 3, "rollback")
    assert registry.champion_version("m5", lake) == 2
    promote.rollback("m5", reason="still bad", lake=lake, settings=settings)
    assert registry.champion_version("m5", lake) == 1
    with pytest.raises(PromotionRefusedError, match="no previous champion"):
        promote.rollback("m5", reason="again", lake=lake, settings=settings)
    assert registry.statuses("m5", lake=lake) == {1: "champion", 2: "archived", 3: "archived"}
    when = registry.history("m5", "champion", lake=lake)["at"][2] + timedelta(microseconds=1)
    held = registry.alias_at("m5", "champion", when, lake=lake)
    assert held.version == 3 and held.reason == "v3"


def test_unvalidated_training_data_fails_the_gate(world):
    lake, runs = world
    registry.register("m6", runs["raw"], lake=lake, actor="tester")
    report = promote.evaluate("m6", 1, lake=lake, settings=_settings(lake, "m6"))
    check = next(c for c in report.checks if c.name == "validated_data")
    assert not check.passed and check.value == "skipped" and not report.passed


def test_auto_promote_and_aliases(world, settings):
    lake, runs = world
    registry.register("m7", runs["a"], lake=lake, actor="tester")
    registry.register("m7", runs["b"], lake=lake, actor="tester")
    off = promote.evaluate_and_maybe_promote(
        "m7", 1, reason="retrain", lake=lake, settings=_settings(lake, "m7")
    )
    assert not off.promoted and "auto_promote is off" in off.why
    on = promote.evaluate_and_maybe_promote(
        "m7", 1, reason="retrain", lake=lake, settings=_settings(lake, "m7", auto_promote=True)
    )
    assert on.promoted and registry.champion_version("m7", lake) == 1
    promote.alias("m7", "challenger", 2, reason="shadow traffic", lake=lake, settings=settings)
    assert registry.aliases("m7", lake=lake) == {"champion": 1, "challenger": 2}
    with pytest.raises(PromotionRefusedError, match="only through 'promote'"):
        promote.alias("m7", "champion", 2, reason="sneak", lake=lake, settings=settings)
    promote.alias("m7", "challenger", None, delete=True, reason="done", lake=lake, settings=settings)
    assert registry.aliases("m7", lake=lake) == {"champion": 1}


def test_policy_from_file_and_bad_keys(tmp_path, lake, settings):
    f = tmp_path / "p.toml"
    f.write_text("[policy]\nmin = {auc = 0.7}\nrequire_approval = true\nmax_p95_latency_ms = {1 = 5}\n")
    pol = promote.load_policy("churn", path=f, settings=settings, lake=lake)
    assert pol == Policy(min={"auc": 0.7}, require_approval=True, max_p95_latency_ms={1: 5.0})
    f.write_text("min = {auc = 'high'}\n")
    with pytest.raises(ConfigError, match="min.auc must be a number"):
        promote.load_policy("churn", path=f, settings=settings, lake=lake)
    bad = load_settings(env={}, sections={"models": {"churn": {"policy": {"beat": 1}}}})
    with pytest.raises(ConfigError, match=r"\[models.churn.policy\]: unknown key\(s\) beat"):
        promote.load_policy("churn", settings=bad, lake=lake)


def test_rejecting_the_champion_is_refused_until_it_is_replaced(world):
    lake, runs = world
    for r in ("a", "b"):
        registry.register("m8", runs[r], lake=lake, actor="tester")
    s = _settings(lake, "m8", beat_champion=False)
    promote.evaluate("m8", 1, lake=lake, settings=s)
    promote.promote("m8", 1, reason="v1", lake=lake, settings=s)
    events_before = registry.events("m8", lake=lake).height
    with pytest.raises(PromotionRefusedError, match="is the champion.*roll back or promote another version"):
        promote.reject("m8", 1, reason="bad calibration", lake=lake, settings=s)
    assert registry.events("m8", lake=lake).height == events_before
    assert registry.statuses("m8", lake=lake)[1] == "champion"
    promote.evaluate("m8", 2, lake=lake, settings=s)
    promote.promote("m8", 2, reason="replace v1", lake=lake, settings=s)
    promote.reject("m8", 1, reason="bad calibration", lake=lake, settings=s)
    assert registry.statuses("m8", lake=lake) == {1: "rejected", 2: "champion"}
    assert promote.approval("m8", 1, lake=lake) == "rejected"
