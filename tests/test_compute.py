"""The Dask engine: lake snapshots read by workers, drift checks equal to the local engine, training and
scoring on a LocalCluster on 127.0.0.1 (two worker processes, closed after the module)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core import compute, datasets, demo, registry, tracking, trainsets
from core.compute.frames import dataset_parts, log_filter, log_parts, to_dask
from core.config import load_settings
from core.errors import ConfigError
from core.lake import Lake
from tests.monitor_world import MODEL, build_champion, clone, log_predictions, settings_for, traffic

distributed = pytest.importorskip("distributed")

T0 = datetime(2025, 3, 1, tzinfo=UTC)
NOW = datetime(2025, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def client():
    """Two worker processes on 127.0.0.1; every compute.session in the module uses them; closed at the end."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = compute.local_cluster(2, memory_limit="1.5GB")
        c = distributed.Client(cluster, timeout=60)
        try:
            with compute.use(c):
                yield c
        finally:
            c.close(timeout=30)
            cluster.close(timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A champion trained on demo data and three hours of logged traffic (the last two in a campaign)."""
    root = tmp_path_factory.mktemp("world")
    lake = build_champion(root / "lake", rows=3000)
    for i in range(3):
        log_predictions(lake, traffic(700, seed=10 + i, campaign=i > 0), at=T0.replace(hour=i + 1), spread_s=600)
    return lake


def test_compute_settings_are_checked_and_named():
    base = {"lake_uri": "/tmp/x", "env": {}}
    for section, word in (({"engine": "spark"}, "engine"), ({"scheduler": "localhost:8786"}, "scheduler"),
                          ({"engine": "dask", "workers": 2}, "workers"), ({"scheduler": "local:0"}, "local:0")):
        with pytest.raises(ConfigError, match=word):
            compute.compute_config(load_settings(**base, sections={"compute": section}))
    cfg = compute.compute_config(load_settings(**base, sections={"compute": {"engine": "dask", "scheduler": "local:3"}}))
    assert (cfg.engine, cfg.local_workers) == ("dask", 3)
    assert compute.compute_config(load_settings(**base), engine="dask").engine == "dask"
    assert compute.compute_config(load_settings(**base)).engine == "local"


def test_partitions_come_from_the_delta_log_not_the_folder(tmp_path, settings):
    lake = Lake(tmp_path / "lake")
    data = demo.generate(900, seed=2)
    datasets.ingest("churn", data.slice(0, 400), lake=lake, settings=settings)
    datasets.ingest("churn", data.slice(400, 500), lake=lake, settings=settings)
    # a stray file (a crashed writer's, or someone's copy) in the table folder is not part of any version
    data.slice(0, 50).write_parquet(Path(lake.uri) / "data" / "churn" / "stray.parquet")
    v1, v2 = dataset_parts("churn", 1, lake=lake), dataset_parts("churn", lake=lake)
    assert (v1.version, v2.version, len(v1), len(v2)) == (1, 2, 1, 2)
    assert all("stray" not in f.path for f in v2.fragments)
    got = pl.from_pandas(to_dask(v2).compute(scheduler="sync"))
    want = datasets.load("churn", lake=lake)
    assert got.height == want.height == 900
    assert datasets.content_hash(got.select(want.columns).cast(want.schema)) == datasets.content_hash(want)
    # a prediction-log window prunes whole days by partition value, never reading their files
    lake2 = build_champion(tmp_path / "lake2", rows=1200)
    for day in (1, 2, 3):
        log_predictions(lake2, traffic(50, seed=day, campaign=False), at=T0.replace(day=day, hour=5))
    since = T0.replace(day=2)
    parts = log_parts(MODEL, lake=lake2, filter=log_filter(since=since))
    assert {f.path.split("/")[0] for f in parts.fragments} == {"day=2025-03-02", "day=2025-03-03"}


def _pairs(local, other):
    feats_l = [*local.result.features, local.score, local.multivariate]
    feats_o = [*other.result.features, other.score, other.multivariate]
    assert [f.feature for f in feats_l] == [f.feature for f in feats_o]
    return list(zip(feats_l, feats_o, strict=True))


def test_drift_check_on_the_cluster_equals_the_local_engine(client, world):
    lake = world
    local = compute_check(lake, {})
    exact = compute_check(lake, {"engine": "dask"})
    sketch = compute_check(lake, {"engine": "dask", "exact_values": 0})
    assert local.drifted is exact.drifted is sketch.drifted is True
    assert (exact.window_rows, exact.window_start, exact.window_end) == (local.window_rows, local.window_start, local.window_end)
    for a, b in _pairs(local, exact):  # windows up to exact_values: the same numbers
        assert (a.status, a.test, a.drifted, a.n_cur, a.n_ref) == (b.status, b.test, b.drifted, b.n_cur, b.n_ref), a.feature
        assert b.statistic == pytest.approx(a.statistic, rel=1e-12, abs=1e-15), a.feature
        assert a.quality == b.quality
    bounded = 0
    for a, b in _pairs(local, sketch):  # merged grid summaries: counts exact, distances within the stated bound
        assert (a.status, a.drifted, a.n_cur) == (b.status, b.drifted, b.n_cur), a.feature
        if a.kind == "numeric" or a.kind == "score":
            st = b.stats
            assert st["psi"] == pytest.approx(a.stats["psi"], rel=1e-12)
            assert st["wasserstein"] - 1e-12 <= a.stats["wasserstein"] <= st["wasserstein"] + st["wasserstein_bound"] + 1e-12
            bounded += st["wasserstein_bound"] > 0
            assert a.quality == b.quality, a.feature
        else:
            assert b.statistic == a.statistic, a.feature
            assert b.stats == a.stats
    assert bounded > 0  # the continuous features really took the bounded path
    # the report says which engine computed it
    rows = lake.read("drift_reports").filter(pl.col("report_id") == sketch.report_id)
    verdict = json.loads(rows.filter(pl.col("feature") == "__dataset__")["stats_json"][0])
    assert (verdict["engine"], verdict["exact"]) == ("dask", False)


def _champion_of_files(root, files=3, rows=1000, seed=4):
    """A champion trained on a dataset version of ``files`` Parquet files (so the cluster merges partitions)."""
    from core.flows import promote
    from core.flows.train import train_model
    from tests.monitor_world import FAR

    lake = Lake(root)
    data = demo.generate(files * rows, seed=seed, campaign_start=FAR)
    for i in range(files):
        datasets.ingest("churn", data.slice(i * rows, rows), lake=lake, settings=settings_for(lake))
    out = train_model("churn", target="churned", params={"num_iterations": 20, "num_leaves": 15}, lake=lake,
                      settings=settings_for(lake))
    mv = registry.register(MODEL, out.run_id, lake=lake, actor="tester")
    promote.promote(MODEL, mv.version, reason="first champion", force=True, lake=lake, actor="tester",
                    settings=settings_for(lake))
    return lake


def _same_reference(a, b):
    from core.drift import NumericReference

    assert (a.rows, a.holdout_rows, a.contrib_rows, a.kinds) == (b.rows, b.holdout_rows, b.contrib_rows, b.kinds)
    for name, ra in a.features.items():
        rb = b.features[name]
        assert type(ra) is type(rb), name
        if isinstance(ra, NumericReference):  # sorted values, edges, bin counts, moments, quality counts: exact
            assert np.array_equal(ra.values, rb.values) and np.array_equal(ra.edges, rb.edges), name
            assert np.array_equal(ra.bin_counts, rb.bin_counts), name
            assert (ra.mean, ra.std, ra.rows, ra.nulls, ra.nonfinite) == (rb.mean, rb.std, rb.rows, rb.nulls, rb.nonfinite)
        else:
            assert (ra.levels, ra.rows, ra.nulls) == (rb.levels, rb.rows, rb.nulls) and np.array_equal(ra.counts, rb.counts)
    assert np.array_equal(a.score.values, b.score.values) and a.score.mean == b.score.mean
    assert a.sample.equals(b.sample)
    assert np.array_equal(a.calibration.x, b.calibration.x) and np.array_equal(a.calibration.y, b.calibration.y)
    assert (a.calibration.applied, a.calibration.ece_after) == (b.calibration.applied, b.calibration.ece_after)
    assert np.allclose(a.contrib_mean, b.contrib_mean, rtol=1e-12, atol=1e-15)


def test_the_reference_built_on_the_cluster_is_the_local_one(client, tmp_path):
    from core.monitoring import references

    local = _champion_of_files(tmp_path / "lake")
    other = clone(local, tmp_path / "other")
    # below the rows: the reference, the classifier's sample and the attribution rows are seeded samples
    sections = {"models": {MODEL: {"monitoring": {"reference_rows": 2000}}},
                "drift": {"multivariate_sample": 500, "attribution_sample": 300}}
    a = references.reference(MODEL, lake=local, settings=settings_for(local, **sections))
    with distributed.get_task_stream(client) as stream:
        b = references.reference(MODEL, lake=other, settings=settings_for(other, compute={"engine": "dask"}, **sections))
    assert sum("_summarise" in str(t["key"]) for t in stream.data) == 3  # a summary per file, on the cluster
    assert a.rows == 2000 and a.sample.height == 500 and a.contrib_rows == 300 and a.holdout_rows == 600
    assert sum(r.nulls for r in a.features.values()) > 0  # the quality counts were really merged
    _same_reference(a, b)
    stored = other.read("drift_references")
    assert stored.filter(pl.col("kind") == "features:training")["rows"].to_list() == [2000]
    # the holdout as reference, every row of it
    sections["models"][MODEL]["monitoring"] = {"reference": "holdout", "reference_rows": 10_000}
    a = references.reference(MODEL, lake=local, settings=settings_for(local, **sections))
    b = references.reference(MODEL, lake=other, settings=settings_for(other, compute={"engine": "dask"}, **sections))
    assert a.rows == 600
    _same_reference(a, b)
    # the same traffic on both lakes: the same verdicts and statistics, local check against local reference,
    # cluster check against the cluster's reference
    for lake in (local, other):
        log_predictions(lake, traffic(800, seed=21, campaign=True), at=T0.replace(hour=1), spread_s=600)
    sections["models"][MODEL]["monitoring"] = {"reference_rows": 2000}
    from core.monitoring import measure_drift

    ra = measure_drift(MODEL, lake=local, settings=settings_for(local, **sections), now=NOW, window_rows=800)
    rb = measure_drift(MODEL, lake=other, settings=settings_for(other, compute={"engine": "dask"}, **sections), now=NOW,
                     window_rows=800)
    assert ra.drifted is rb.drifted is True
    for x, y in _pairs(ra, rb):
        assert (x.status, x.drifted, x.n_ref, x.n_cur) == (y.status, y.drifted, y.n_ref, y.n_cur), x.feature
        assert y.statistic == pytest.approx(x.statistic, rel=1e-12, abs=1e-15), x.feature


def compute_check(lake, section, **kw):
    from core.monitoring import measure_drift

    return measure_drift(MODEL, lake=lake, settings=settings_for(lake, compute=section), now=NOW, window_rows=1500, **kw)


def test_training_on_the_cluster_is_tracked_like_a_local_run_and_splits_the_same_rows(client, tmp_path, settings):
    lake = Lake(tmp_path / "lake")
    data = demo.generate(12000, seed=3)
    for i in range(3):  # three versions: the last one is three files
        datasets.ingest("churn", data.slice(i * 4000, 4000), lake=lake, settings=settings)
    params = {"num_iterations": 25, "num_leaves": 15}
    out = _train(lake, params, engine="dask")
    local = _train(lake, params, engine="local")
    info = tracking.get_run(out.run_id, lake=lake)
    assert (info.params["engine"], info.params["workers"], info.tags["engine"]) == ("dask", "2", "dask")
    assert (info.params["rows_train"], info.params["rows_valid"]) == ("9600", "2400")
    assert out.model.signature == local.model.signature
    curve = tracking.metric_history(out.run_id, ["valid.binary_logloss"], lake=lake).sort("step")
    assert curve.height >= out.best_iteration > 0
    # the curve is the whole holdout's loss (every worker's share added up): at the best round it is the final loss
    at_best = curve.filter(pl.col("step") == out.best_iteration)["value"][0]
    assert at_best == pytest.approx(out.metrics["log_loss"], rel=1e-9)
    # the holdout the gate and the drift reference rebuild locally is the one the cluster validated on
    frames = trainsets.run_frames(dataset="churn", version=3, params=info.params, signature=out.model.signature,
                                  seed=0, lake=lake)
    from core.training import compute_metrics

    y = frames.holdout["churned"].cast(pl.Float64).to_numpy()
    assert compute_metrics("binary", y, out.model.predict(frames.holdout)) == pytest.approx(out.metrics, rel=1e-12)
    assert out.metrics["auc"] > 0.7
    mv = registry.register("churn", out.run_id, lake=lake, actor="tester")
    assert mv.sha256 == out.model.sha256 == info.tags["model_sha256"]
    # a retrain's explicit (training rows, holdout), as core.trainsets makes them, trains there too
    from core.compute.train import train_on_cluster

    res = train_on_cluster(client, compute.compute_config(load_settings(env={}, lake_uri=lake.uri)),
                           frames=(frames.train, frames.holdout), target="churned", task=None, params=params, seed=0,
                           time_column="signup_at").result
    assert (res.rows["train"], res.rows["valid"], res.split["method"]) == (9600, 2400, "explicit")
    assert compute_metrics("binary", y, res.model.predict(frames.holdout)) == pytest.approx(res.metrics, rel=1e-12)


def _train(lake, params, engine):
    from core.flows.train import train_model

    return train_model("churn", target="churned", params=params, lake=lake, engine=engine,
                       settings=load_settings(env={}, lake_uri=lake.uri))


def test_batch_scoring_on_the_cluster_writes_a_dataset_version_with_lineage(client, world):
    from core.flows.score import score_dataset

    lake = world
    out = score_dataset("churn", model=MODEL, engine="dask", lake=lake, settings=settings_for(lake))
    local = score_dataset("churn", model=MODEL, engine="local", output="churn_local_scores", lake=lake,
                          settings=settings_for(lake))
    got = datasets.load(out.output, out.output_version, lake=lake)
    want = datasets.load(local.output, lake=lake)
    assert got.height == want.height == datasets.load("churn", lake=lake).height
    key = "customer_id"
    joined = got.join(want, on=key, suffix="_local")
    assert joined.height == got.height
    assert np.array_equal(joined["score"].to_numpy(), joined["score_local"].to_numpy())
    row = datasets.versions(out.output, lake=lake).row(0, named=True)
    champion = registry.load(MODEL, lake=lake)
    assert f"model {MODEL} v{champion.version} (sha256 {champion.sha256})" in row["source"]
    run = tracking.get_run(out.run_id, lake=lake)
    assert (run.dataset_name, run.dataset_version) == ("churn", out.dataset_version)
    assert (run.tags["model_sha256"], run.tags["output_version"], run.tags["engine"]) == (
        champion.sha256, str(out.output_version), "dask")


def test_cli_scores_on_the_cluster_and_names_bad_input_in_one_line(client, world, capsys):
    from core.cli import run

    code = run(["score", "--dataset", "churn", "--model", f"{MODEL}@champion", "--engine", "dask",
                "--output", "cli_scores", "--lake", world.uri])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "on the dask engine: dataset cli_scores@v" in out.out
    assert datasets.load("cli_scores", lake=world).height == datasets.load("churn", lake=world).height
    assert run(["score", "--dataset", "churn", "--model", "nosuch@champion", "--lake", world.uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch" in err
    assert run(["train", "--dataset", "churn", "--target", "churned", "--engine", "spark", "--lake", world.uri]) == 2


class _KillOnce(distributed.WorkerPlugin):
    """A worker plugin that ends its worker's process when a ``task`` task starts (fault injection)."""

    def __init__(self, flag: str, always: bool, task: str = "_summarise") -> None:
        self.flag, self.always, self.task = flag, always, task

    def transition(self, key, start, finish, **kwargs):  # noqa: ANN001
        name = key[0] if isinstance(key, tuple) else str(key)
        if finish != "executing" or self.task not in str(name):
            return
        if self.always == "first":
            # every attempt of one task (the first seen): Dask gives up on it after allowed-failures
            _claim(self.flag, str(key))
            if Path(self.flag).read_text() == str(key):
                os._exit(1)
        elif self.always or _claim(self.flag, str(key)):
            os._exit(1)


def _claim(flag: str, key: str) -> bool:
    """Create ``flag`` holding ``key`` if nobody has yet: atomic (O_EXCL), so of two workers starting
    the task at the same moment exactly one wins (a check-then-touch let both die in CI)."""
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return True


def test_a_lost_worker_is_retried_or_the_job_run_fails_with_nothing_written(client, world, tmp_path):
    from core.jobruns import run_job

    lake = world
    settings = settings_for(lake, compute={"engine": "dask"}, jobs={"drift_check": {"args": {"window_rows": 1500}}})
    before = _reports(lake)  # 0 when run alone: an earlier test's drift check made the table
    client.register_plugin(_KillOnce(str(tmp_path / "once"), always=False), name="kill-once")
    try:
        ok = run_job("drift_check", lake=lake, settings=settings)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert (tmp_path / "once").exists()  # a worker did die mid-check
    assert ok.status == "finished", ok.error
    assert _reports(lake) > before
    client.wait_for_workers(2, timeout=60)
    written = _reports(lake)
    client.register_plugin(_KillOnce(str(tmp_path / "always"), always=True), name="kill-always")
    try:
        failed = run_job("drift_check", lake=lake, settings=settings)
    finally:
        client.unregister_worker_plugin("kill-always")
        client.wait_for_workers(2, timeout=60)
    assert failed.status == "failed" and "Dask cluster failed" in (failed.error or "")
    assert _reports(lake) == written  # nothing half-written


def _reports(lake: Lake) -> int:
    return lake.read("drift_reports").height if lake.exists("drift_reports") else 0


def test_a_worker_lost_during_a_retrain_job_is_retried_or_the_job_fails_with_nothing_registered(client, world, tmp_path):
    """A worker process dies while a retrain on the cluster spreads its rows over the workers (``_take``):
    killed once, Dask runs the task again and the retrain finishes; killed every time, the job run
    fails, the training run is recorded failed, and no model version is registered."""
    from core.jobruns import run_job
    from tests.monitor_world import send_feedback

    lake = clone(world, tmp_path / "lake")
    logged = log_predictions(lake, traffic(1200, seed=31, campaign=True), at=T0.replace(hour=5), spread_s=600)
    send_feedback(lake, logged)
    settings = settings_for(lake, compute={"engine": "dask"})
    versions = registry.versions(MODEL, lake=lake).height
    client.register_plugin(_KillOnce(str(tmp_path / "once"), always=False, task="_take"), name="kill-take-once")
    try:
        ok = run_job("retrain", trigger="manual", lake=lake, settings=settings)
    finally:
        client.unregister_worker_plugin("kill-take-once")
    assert (tmp_path / "once").exists(), (ok.status, ok.error)  # a worker did die mid-retrain
    assert ok.status == "finished", ok.error
    client.wait_for_workers(2, timeout=180)
    out = ok.outputs["models"][MODEL]
    run = tracking.get_run(out["run_id"], lake=lake)
    assert (run.status, run.params["engine"], run.params["rows_valid"]) == ("finished", "dask", str(out["holdout_rows"]))
    assert registry.get_version(MODEL, out["version"], lake=lake).sha256 == run.tags["model_sha256"]
    assert registry.versions(MODEL, lake=lake).height == versions + 1
    client.register_plugin(_KillOnce(str(tmp_path / "always"), always="first", task="_take"), name="kill-take-always")
    try:
        failed = run_job("retrain", trigger="manual", lake=lake, settings=settings)
    finally:
        client.unregister_worker_plugin("kill-take-always")
        client.wait_for_workers(2, timeout=180)
    assert failed.status == "failed" and "Dask cluster failed" in (failed.error or ""), failed.error
    assert registry.versions(MODEL, lake=lake).height == versions + 1  # nothing registered
    runs = tracking.search_runs(lake=lake, max_results=None).sort("started_at")
    assert runs["status"][-1] == "failed"  # the training run is closed as failed, not left running

