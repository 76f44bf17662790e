"""The Dask engine at scale on this machine: a drift check of a large prediction-log window and a large
training run, on a 2-worker LocalCluster (127.0.0.1) whose workers are limited to less memory than the
data, and the same work on the local engine where it fits.

Prints, per step and engine: wall seconds, CPU seconds (the driving process, and each worker's),
peak RSS of the driving process and of each worker (VmHWM: every step gets fresh processes), and
what the step produced. Each step runs in its own process.

Data (made once under --lake, reused by later runs):
  data/scale       --train-rows rows x 25 features (20 numeric of five shapes, 5 categorical of
                   5-50 levels), a time column, an id and a 0/1 target; one ingest
  predictions/m    --rows rows of prediction log (the same features, half of the days shifted,
                   scores drawn from a beta distribution), one commit per day of 1,000,000 rows

    python bench/scale.py                       # 20M-row drift check, 5M-row training
    python bench/scale.py --rows 2000000 --train-rows 500000 --worker-memory 600MB
    python bench/scale.py --steps drift-local,drift-dask --window-days 5     # a 5M-row window, both engines
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUMERIC = [f"x{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
LEVELS = [5, 10, 20, 35, 50]
DAY = 1_000_000
START = datetime(2025, 1, 1, tzinfo=UTC)
PARAMS = {"num_iterations": 100, "num_leaves": 31, "early_stopping_round": 20}


def _features(n: int, seed: int, shift: bool) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for i, name in enumerate(NUMERIC):
        mu = 0.3 if (shift and i % 4 == 0) else 0.0
        kind = i % 5
        if kind == 0:
            v = rng.normal(mu, 1.0, n)
        elif kind == 1:
            v = rng.lognormal(mu, 0.8, n)
        elif kind == 2:
            v = np.round(rng.normal(50 + 10 * mu, 10, n))
        elif kind == 3:
            v = rng.exponential(1.0 + mu, n)
        else:
            v = np.round(rng.uniform(0, 100, n), 2)
        cols[name] = v
    for j, (name, k) in enumerate(zip(CATEGORICAL, LEVELS, strict=True)):
        p = rng.dirichlet(np.ones(k) * (0.5 if shift and j % 2 == 0 else 2.0))
        cols[name] = np.array([f"{name}_{i}" for i in range(k)])[rng.choice(k, n, p=p)]
    return cols


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker_stats() -> dict[str, float]:
    return {"cpu_s": round(_cpu(), 1), "peak_mb": round(_peak_mb())}


# ---------------------------------------------------------------------------- data
def make(lake_dir: str, rows: int, train_rows: int, log: bool = True) -> dict:
    from core import datasets, registry
    from core.catalog import FEATURES_COLUMN
    from core.config import Settings
    from core.flows import promote
    from core.flows.train import train_model
    from core.ids import new_ids
    from core.lake import Lake
    from core.serving.schemas import prediction_schema

    lake = Lake(lake_dir)
    settings = Settings(lake_uri=lake.uri, actor="bench")
    out: dict = {}
    if not lake.exists("data/scale"):
        t = time.time()
        cols = _features(train_rows, 1, False)
        x = np.column_stack([cols[c] for c in NUMERIC[:4]])
        logit = 0.8 * x[:, 0] - 0.5 * np.log(x[:, 1]) + 0.02 * (x[:, 2] - 50) - 0.3 * x[:, 3]
        rng = np.random.default_rng(7)
        y = (rng.random(train_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        frame = pl.DataFrame(cols).with_columns(
            pl.Series("id", [f"r{i}" for i in range(train_rows)]),
            (pl.lit(START) + pl.duration(seconds=pl.int_range(train_rows) * 5)).alias("at"),
            pl.Series("target", y),
        )
        datasets.ingest("scale", frame, lake=lake, validate=False, settings=Settings())
        del frame, cols
        out["ingest_s"] = round(time.time() - t, 1)
    if log and not lake.exists("predictions/m"):
        # a champion for the drift check: trained locally on a 200k sample (not measured)
        small = datasets.load("scale", lake=lake).sample(200_000, seed=0)
        datasets.ingest("scale_small", small, lake=lake, validate=False, settings=Settings())
        run = train_model("scale_small", target="target", params={"num_iterations": 30}, lake=lake, settings=settings)
        mv = registry.register("m", run.run_id, lake=lake, actor="bench")
        promote.promote("m", mv.version, reason="bench", force=True, lake=lake, actor="bench", settings=settings)
        feats = registry.load("m", lake=lake).signature.features
        schema = prediction_schema(feats)
        t = time.time()
        for d in range(max(1, rows // DAY)):
            n = min(DAY, rows - d * DAY)
            cols = _features(n, 100 + d, shift=d % 2 == 1)
            day = START + timedelta(days=d)
            stamps = np.datetime64(day.replace(tzinfo=None), "us") + np.arange(n) * np.timedelta64(80, "ms")
            at = pl.Series("at", stamps.astype("datetime64[us]")).dt.replace_time_zone("UTC")
            scores = np.random.default_rng(d).beta(2, 5, n)
            log = pl.DataFrame({
                "prediction_id": new_ids(n), "at": at, "model_version": [mv.version] * n, "score": scores,
                "predicted_label": (scores >= 0.5).astype(np.int64), "latency_ms": [1.0] * n,
            }).with_columns(pl.col("at").dt.date().alias("day"), pl.DataFrame(cols).to_struct(FEATURES_COLUMN))
            lake.append("predictions/m", log.select(schema.names), schema=schema, partition_by=["day"],
                        unique_columns=["prediction_id", "at", "score"])
        out["log_s"] = round(time.time() - t, 1)
    return out


# ---------------------------------------------------------------------------- steps
def _settings(lake_dir: str, engine: str, workers: int, memory: str):
    from core.config import load_settings

    return load_settings(env={}, lake_uri=lake_dir, actor="bench", sections={
        "compute": {"engine": engine, "scheduler": f"local:{workers}", "memory_limit": memory},
        "models": {"m": {"monitoring": {"min_rows": 100}}},
    })


def step(mode: str, lake_dir: str, workers: int, memory: str, rows: int, days: int | None = None) -> dict:
    from core.lake import Lake

    lake = Lake(lake_dir)
    engine = "dask" if mode.endswith("dask") else "local"
    settings = _settings(lake_dir, engine, workers, memory)
    cluster = None
    client = None
    if engine == "dask":
        import distributed

        from core import compute

        cluster = compute.local_cluster(workers, memory_limit=memory)
        client = distributed.Client(cluster)
        ctx = compute.use(client)
        ctx.__enter__()
        base = client.run(_worker_stats)
    out: dict = {}
    if mode.startswith("drift"):
        from core.monitoring import measure_drift
        from core.monitoring.references import reference

        reference("m", lake=lake, settings=settings)  # built once per champion (not measured)
        now = START + timedelta(days=max(1, rows // DAY))  # the end of the last day
        hours = 24 * (days or 400)
        c0, w0 = _cpu(), time.time()
        rep = measure_drift("m", lake=lake, settings=settings, now=now, window_hours=hours, window_rows=None)
        out.update(wall_s=round(time.time() - w0, 1), cpu_s=round(_cpu() - c0, 1), rows=rep.window_rows,
                   drifted=rep.drifted_features, verdict=rep.drifted)
        sk = [f.stats.get("wasserstein_norm_bound") for f in rep.result.features if f.kind == "numeric"]
        out["max_w_norm_bound"] = max([b for b in sk if b is not None], default=None)
    else:
        from core.flows.train import train_model

        c0, w0 = _cpu(), time.time()
        res = train_model("scale", target="target", params=PARAMS, lake=lake, engine=engine, settings=settings)
        out.update(wall_s=round(time.time() - w0, 1), cpu_s=round(_cpu() - c0, 1), auc=round(res.metrics["auc"], 4),
                   best_iteration=res.best_iteration)
    out["driver_peak_mb"] = round(_peak_mb())
    if client is not None:
        after = client.run(_worker_stats)
        out["workers"] = {w.rsplit(":", 1)[-1]: {"cpu_s": round(after[w]["cpu_s"] - base[w]["cpu_s"], 1),
                                                 "peak_mb": after[w]["peak_mb"]} for w in after}
        ctx.__exit__(None, None, None)
        client.close()
        cluster.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--train-rows", type=int, default=5_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-memory", default="1.5GB")
    ap.add_argument("--lake", default="/tmp/lakeops-scale")
    ap.add_argument("--steps", default="drift-dask,train-dask,drift-local,train-local")
    ap.add_argument("--window-days", type=int, default=None, help="drift window: the last N days (default all)")
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(step(args.child, args.lake, args.workers, args.worker_memory, args.rows, args.window_days)))
        return
    log = any(m.startswith("drift") for m in args.steps.split(","))  # the 20M-row log only for drift steps
    print(f"data: {json.dumps(make(args.lake, args.rows, args.train_rows, log))}", flush=True)
    for mode in args.steps.split(","):
        cmd = [sys.executable, __file__, "--child", mode, "--lake", args.lake, "--rows", str(args.rows),
               "--workers", str(args.workers), "--worker-memory", args.worker_memory,
               *(["--window-days", str(args.window_days)] if args.window_days else [])]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            print(f"{mode}: failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        print(f"{mode}: {lines[-1]}", flush=True)


if __name__ == "__main__":
    main()
