"""The Dask engine on data larger than a worker's memory limit (a fresh ``local:2`` cluster of its own)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from core import datasets, registry, tracking
from core.config import load_settings
from core.flows.train import IMPORTANCE_PATH, SIGNATURE_PATH
from core.lake import Lake

pytest.importorskip("distributed")


@pytest.mark.slow
def test_training_on_data_larger_than_a_worker_memory_limit_is_tracked_like_a_local_run(tmp_path):
    """2,200,000 rows whose frame (845 MB: eight long-named categorical features) is larger than each
    worker's 800 MB limit: each worker reads its share in bounded batches and holds only its encoded
    rows, so training succeeds on a fresh ``local:2`` cluster and the run records what a local one does."""
    from core.flows.train import train_model

    n, limit = 2_200_000, 800_000_000
    rng = np.random.default_rng(5)
    cols = {f"x{i}": rng.normal(0, 1, n) for i in range(4)}
    for j in range(8):
        levels = pl.Series([f"segment-{j}-level-{k:03d}-of-a-long-category-name" for k in range(30)])
        cols[f"c{j}"] = levels.gather(rng.integers(0, 30, n))
    logit = cols["x0"] - 0.5 * cols["x1"] + cols["c0"].str.ends_with("7-of-a-long-category-name").cast(pl.Float64).to_numpy()
    cols["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    lake = Lake(tmp_path / "lake")
    settings = load_settings(env={}, lake_uri=lake.uri, sections={
        "compute": {"engine": "dask", "scheduler": "local:2", "memory_limit": str(limit)}})
    datasets.ingest("wide", pl.DataFrame(cols), lake=lake, validate=False, settings=settings)
    del cols
    assert datasets.load("wide", lake=lake).estimated_size() > limit  # the data as one machine reads it
    out = train_model("wide", target="y", params={"num_iterations": 10, "num_leaves": 15}, lake=lake,
                      settings=settings)
    info = tracking.get_run(out.run_id, lake=lake)
    assert (info.status, info.dataset_name, info.dataset_version) == ("finished", "wide", 1)
    assert (info.params["engine"], info.params["workers"]) == ("dask", "2")
    assert int(info.params["rows_train"]) + int(info.params["rows_valid"]) == n
    curve = tracking.metric_history(out.run_id, ["valid.binary_logloss"], lake=lake)
    assert curve.height == 10  # a value per round, as a local run logs
    assert out.metrics["auc"] > 0.6
    sig = out.model.signature
    assert [f.name for f in sig.features if f.categorical] == [f"c{j}" for j in range(8)]
    assert info.tags["model_sha256"] == out.model.sha256
    assert json.loads(tracking.read_artifact(out.run_id, SIGNATURE_PATH, lake=lake)) == sig.to_dict()
    imp = json.loads(tracking.read_artifact(out.run_id, IMPORTANCE_PATH, lake=lake))
    assert {d["feature"] for d in imp} == set(sig.names)
    mv = registry.register("wide", out.run_id, lake=lake, actor="tester")
    assert (mv.sha256, mv.dataset_name, mv.dataset_version) == (out.model.sha256, "wide", 1)
