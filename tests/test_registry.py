from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from datetime import timedelta
from pathlib import Path

import pytest

from core import registry, sql
from core.errors import (
    ArtifactIntegrityError,
    ModelNotFoundError,
    ModelVersionNotFoundError,
    RegistryError,
)
from core.ids import utcnow
from core.lake import Lake


@pytest.fixture(scope="module")
def tiny_model():
    from core import demo, training

    frame = demo.generate(n=1500, seed=1).drop("customer_id")
    result = training.train(frame, "churned", params={"num_iterations": 15}, time_column="signup_at")
    return result.model, result.metrics


def _reg(lake: Lake, model, metrics, name: str = "churn", **kw):
    return registry._register_files(
        lake,
        name,
        "run-x",
        model.text.encode(),
        json.dumps(model.signature).encode(),
        metrics=metrics,
        dataset_name="churn",
        dataset_version=1,
        actor="tester",
        **kw,
    )


def _fake(lake: Lake, name: str = "m") -> registry.ModelVersion:
    return registry._register_files(
        lake,
        name,
        None,
        b"not a model",
        b"{}",
        metrics={"auc": 0.5},
        dataset_name=None,
        dataset_version=None,
        actor="tester",
    )


def test_register_copies_artifact_with_sha_and_numbers_versions(lake, tiny_model):
    model, metrics = tiny_model
    v1 = _reg(lake, model, metrics, description="first", tags={"team": "growth"})
    v2 = _reg(lake, model, metrics)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.sha256 == model.sha256 and v1.size_bytes == len(model.text.encode())
    assert v1.tags == {"team": "growth"} and v1.description == "first"
    assert v1.metrics["auc"] == pytest.approx(metrics["auc"])
    assert lake.get_bytes("artifacts/models/churn/2/model.txt") == model.text.encode()
    assert json.loads(lake.get_bytes("artifacts/models/churn/1/signature.json")) == model.signature
    frame = registry.versions("churn", lake=lake)
    assert frame["version"].to_list() == [1, 2]
    assert frame["status"].to_list() == ["candidate", "candidate"]
    assert "auc" in frame.columns
    assert registry.list_models(lake=lake).row(0, named=True)["latest_version"] == 2
    loaded = registry.load("churn", version=1, alias=None, lake=lake)
    assert loaded.sha256 == model.sha256 and loaded.model.num_trees == model.num_trees


def test_tampered_or_missing_artifact_is_refused(lake, tiny_model):
    model, metrics = tiny_model
    _reg(lake, model, metrics)
    path = Path(lake.uri) / "artifacts/models/churn/1/model.txt"
    tampered = model.text.replace("Tree=0", "Tree=0 ", 1)
    path.write_text(tampered)
    with pytest.raises(ArtifactIntegrityError) as err:
        registry.load("churn", version=1, lake=lake)
    msg = str(err.value)
    assert "artifacts/models/churn/1/model.txt" in msg and model.sha256 in msg
    assert hashlib.sha256(tampered.encode()).hexdigest() in msg
    path.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        registry.load("churn", version=1, lake=lake)


def test_aliases_statuses_history_and_alias_at(lake):
    for _ in range(3):
        _fake(lake)
    assert registry.champion_version("m", lake) is None
    t0 = utcnow()
    registry.set_alias("m", "champion", 1, actor="ann", reason="first launch", lake=lake)
    t1 = utcnow()
    registry.set_alias("m", "champion", 2, actor="bob", reason="better auc", lake=lake)
    registry.set_alias("m", "challenger", 3, actor="bob", reason="shadow", action="alias", lake=lake)
    t2 = utcnow()
    registry.record_event("m", "reject", version=3, actor="cy", reason="bias", lake=lake)
    assert registry.aliases("m", lake=lake) == {"champion": 2, "challenger": 3}
    assert registry.statuses("m", lake=lake) == {1: "archived", 2: "champion", 3: "rejected"}
    assert registry.champion_version("m", lake) == 2
    assert registry.alias_at("m", "champion", t0 - timedelta(seconds=1), lake=lake) is None
    at1 = registry.alias_at("m", "champion", t1, lake=lake)
    assert (at1.version, at1.actor, at1.reason) == (1, "ann", "first launch")
    at2 = registry.alias_at("m", "champion", t2, lake=lake)
    assert (at2.version, at2.previous_version, at2.actor) == (2, 1, "bob")
    # rollback pops the champion stack back to v1 in one step
    back = registry.set_alias(
        "m", "champion", 1, actor="ann", reason="incident", action="rollback", expected=2, lake=lake
    )
    assert back.applied and registry.state("m", lake=lake).champion_stack == (1,)
    hist = registry.history("m", "champion", lake=lake)
    assert hist["version"].to_list() == [1, 2, 1]
    assert hist["previous_version"].to_list() == [None, 1, 2]
    assert hist["action"].to_list() == ["promote", "promote", "rollback"]


def test_bad_names_give_clear_errors(lake):
    _fake(lake)
    with pytest.raises(ModelNotFoundError, match="'nope' is not registered; registered models: m"):
        registry.get_version("nope", 1, lake=lake)
    with pytest.raises(ModelVersionNotFoundError, match="has versions 1; asked for 7"):
        registry.get_version("m", 7, lake=lake)
    with pytest.raises(ModelVersionNotFoundError, match="no alias 'champion'"):
        registry.load("m", lake=lake)
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.set_alias("m", "champion", 1, actor="a", reason="  ", lake=lake)
    with pytest.raises(RegistryError, match="invalid"):
        registry._register_files(
            lake, "bad/name", None, b"x", b"{}", metrics={}, dataset_name=None, dataset_version=None
        , actor="tester")


def test_superseded_alias_change_is_recorded_but_not_applied(lake):
    for _ in range(3):
        _fake(lake)
    registry.set_alias("m", "champion", 1, actor="a", reason="r", expected=None, lake=lake)
    a = registry.set_alias("m", "champion", 2, actor="a", reason="r", expected=1, lake=lake)
    b = registry.set_alias(
        "m", "champion", 3, actor="b", reason="r", expected=1, lake=lake
    )  # saw stale state
    assert a.applied and not b.applied
    assert registry.champion_version("m", lake) == 2
    assert registry.history("m", lake=lake)["applied"].to_list() == [True, True, False]


def _worker(uri: str, start: float, n_claims: int, targets: list[int], barrier, out) -> None:
    """Register ``n_claims`` versions of "m", then move its champion through ``targets``, racing."""
    try:
        lake = Lake(uri)
        time.sleep(max(0.0, start - time.time()))
        claimed = [_fake(lake).version for _ in range(n_claims)]
        barrier.wait(120)  # both have registered; now race on the alias
        ids = []
        for v in targets:
            cur = registry.champion_version("m", lake)
            change = registry.set_alias("m", "champion", v, actor=f"p{v}", reason="race", expected=cur, lake=lake)
            ids.append(change.event_id)
        out.put((claimed, ids))
    except BaseException:
        import traceback

        out.put(traceback.format_exc())
        raise


def test_two_processes_register_and_move_aliases_at_the_same_moment(lake):
    _fake(lake)
    registry.set_alias("m", "champion", 1, actor="a", reason="init", lake=lake)
    start = time.time() + 3.0
    ctx = mp.get_context("spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(2)
    args = [(lake.uri, start, 3, [2, 3, 4]), (lake.uri, start, 3, [5, 6, 7, 2])]
    procs = [ctx.Process(target=_worker, args=(*a, barrier, out)) for a in args]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    assert all(isinstance(r, tuple) for r in results), results
    (claims_a, ids_a), (claims_b, ids_b) = results
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # registrations: distinct numbers, no gap, one row per version
    assert sorted(claims_a + claims_b) == [2, 3, 4, 5, 6, 7]
    assert registry.versions("m", lake=lake)["version"].to_list() == list(range(1, 8))
    assert sql.query(lake, "select count(*) as n from registered_versions")["n"][0] == 7
    # alias changes: every event recorded, and the applied ones form one serial chain
    hist = registry.history("m", "champion", lake=lake)
    assert set(ids_a + ids_b) <= set(hist["event_id"].to_list()) and hist.height == 8
    applied = hist.filter("applied")
    versions = applied["version"].to_list()
    assert applied["previous_version"].to_list()[1:] == versions[:-1]
    assert registry.champion_version("m", lake) == versions[-1]
