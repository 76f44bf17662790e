"""Feature-store benchmark: the point-in-time join, online lookups inside prediction requests, materialisation.

Run: ``python bench/features.py [--quick] [--only pit,online,materialize]`` (``--quick``: a tenth
of the sizes). Everything on 127.0.0.1.

1. **Point-in-time join**: ``--labels`` label rows (1M) x 10 features from ``--events`` source
   rows (10M, 100k entities with string keys, a year of times), each variant in a fresh process
   (CPU seconds = user + system of all its threads; peak RSS = its VmHWM; the data is read from
   Parquet first and the reading is not timed). Latest-value features: ``core.features.point_in_time``
   against the floor, polars' own ``join_asof`` by hand (both frames sorted by time, backward,
   by entity). Windowed aggregates (30-day sums and means): the store against the hand-written
   polars way (labels appended to the events, ``rolling_sum_by``/``rolling_mean_by`` over each
   entity, label rows kept).
2. **Online lookup in a prediction request**: one ``lakeops serve`` process serving two models
   with the same features: ``churn`` trained on the demo's usage view (a request sends the
   customer's id, the service fills the 4 usage features) and ``plain`` (the same training
   frame as a plain dataset: the request sends the 4 values itself); plus the HTTP floor. wrk at
   concurrency 1, 1 and 100 rows; server CPU per request. Also in-process: ``OnlineCodec.decode``
   against ``Codec.decode`` of the same request, and of a model whose view adds two request
   features (computed per request from its fields: ``FeatureView.request_values``).
3. **Materialisation**: ``--entities`` (1M) entities with 5 events each over two years; a full materialisation of
   a 6-feature view, then an incremental one after 1 % new events; each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T0 = 1_700_000_000_000_000
YEAR_US = 365 * 86_400 * 1_000_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _child(target: str, args: dict[str, Any], q: Any) -> None:
    try:
        q.put(globals()[target](**args))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        q.put({"error": f"{type(exc).__name__}: {exc}"})


def in_fresh_process(target: str, **args: Any) -> dict[str, Any]:
    """Run ``target(**args)`` in a spawned process; add its peak RSS (MB) to what it returns."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(target, args, q))
    p.start()
    out = q.get()
    p.join()
    if "error" in out:
        raise RuntimeError(out["error"])
    return out


def _peak_mb() -> float:
    """This process image's peak RSS (VmHWM). Not ``ru_maxrss``: that survives fork+exec, so a
    child would report at least its parent's size at the fork (the benchmark's generated data)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- 1. point-in-time join
def make_pit_data(root: Path, events: int, labels: int, entities: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    keys = pl.Series([f"E{i:07d}" for i in range(entities)])
    ev = pl.DataFrame({
        "entity": keys.gather(rng.integers(0, entities, events)),
        "at": pl.Series(T0 + rng.integers(0, YEAR_US, events)).cast(pl.Datetime("us", "UTC")),
        **{f"x{i}": rng.normal(size=events) for i in range(10)},
    }).unique(["entity", "at"])
    lab = pl.DataFrame({
        "entity": keys.gather(rng.integers(0, entities, labels)),
        "ts": pl.Series(T0 + rng.integers(0, YEAR_US, labels)).cast(pl.Datetime("us", "UTC")),
        "y": rng.integers(0, 2, labels),
    })
    ep, lp = root / "events.parquet", root / "labels.parquet"
    ev.write_parquet(ep)
    lab.write_parquet(lp)
    return ep, lp


def pit_run(kind: str, events: str, labels: str) -> dict[str, Any]:
    import warnings

    warnings.simplefilter("ignore")  # join_asof by groups cannot check sortedness: a warning, not an error
    from core.features import Feature, FeatureView, point_in_time

    ev, lab = pl.read_parquet(events), pl.read_parquet(labels)
    loaded = _rss_mb()
    c, w = _cpu(), time.perf_counter()
    if kind == "floor_latest":
        out = lab.sort("ts").join_asof(ev.sort("at"), left_on="ts", right_on="at", by="entity", strategy="backward")
    elif kind == "store_latest":
        view = FeatureView("b", "events", "entity", "at", tuple(Feature(f"f{i}", f"pl.col('x{i}')") for i in range(10)))
        out = point_in_time(view, ev, lab, time_column="ts")
    elif kind == "floor_window":
        both = pl.concat([ev.with_columns(pl.lit(False).alias("_lab")),
                          lab.rename({"ts": "at"}).drop("y").with_columns(pl.lit(True).alias("_lab"))], how="diagonal")
        both = both.sort(["entity", "at"])
        aggs = [(pl.col(f"x{i}").rolling_sum_by("at", "30d") if i % 2 else pl.col(f"x{i}").rolling_mean_by("at", "30d"))
                .over("entity").alias(f"f{i}") for i in range(10)]
        out = both.with_columns(aggs).filter(pl.col("_lab"))
    elif kind == "store_window":
        view = FeatureView("b", "events", "entity", "at", tuple(
            Feature(f"f{i}", f"pl.col('x{i}')", agg="sum" if i % 2 else "mean", window="30d") for i in range(10)))
        out = point_in_time(view, ev, lab, time_column="ts")
    else:
        raise ValueError(kind)
    return {"kind": kind, "cpu_s": _cpu() - c, "wall_s": time.perf_counter() - w, "rows": out.height,
            "peak_mb": _peak_mb(), "loaded_mb": loaded}


def bench_pit(root: Path, events: int, labels: int, reps: int) -> None:
    t = time.time()
    ep, lp = make_pit_data(root, events, labels, max(1, events // 100))
    print(f"# data: {events:,} events x 10 values, {labels:,} labels ({time.time() - t:.0f} s to generate)")
    samples: dict[str, list[dict[str, Any]]] = {}
    for _ in range(reps):  # round-robin: the shared machine's drift hits every variant alike
        for kind in ("floor_latest", "store_latest", "floor_window", "store_window"):
            r = in_fresh_process("pit_run", kind=kind, events=str(ep), labels=str(lp))
            samples.setdefault(kind, []).append(r)
            print(f"  {kind:13s} cpu {r['cpu_s']:6.2f} s  wall {r['wall_s']:6.2f} s  peak {r['peak_mb']:7.0f} MB "
                  f"(data loaded: {r['loaded_mb']:.0f} MB)", flush=True)
    med = {k: {m: float(np.median([r[m] for r in v])) for m in ("cpu_s", "wall_s", "peak_mb", "loaded_mb")} for k, v in samples.items()}
    print(f"\n## point-in-time join, medians of {reps}: {labels:,} labels x 10 features from {events:,} events")
    for kind, r in med.items():
        print(f"{kind:13s} cpu {r['cpu_s']:6.2f} s  wall {r['wall_s']:6.2f} s  peak RSS {r['peak_mb']:7.0f} MB "
              f"(+{r['peak_mb'] - r['loaded_mb']:.0f} MB over the loaded data)")
    ratio = med["store_latest"]["cpu_s"] / med["floor_latest"]["cpu_s"]
    print(f"latest values: store / join_asof floor = {ratio:.2f}x CPU (goal <= 1.5x), "
          f"{(med['store_latest']['peak_mb'] - med['store_latest']['loaded_mb']) / max(1.0, med['floor_latest']['peak_mb'] - med['floor_latest']['loaded_mb']):.2f}x extra memory")
    print(f"30-day windows: store / polars rolling by hand = {med['store_window']['cpu_s'] / med['floor_window']['cpu_s']:.2f}x CPU")


# ---------------------------------------------------------------------------- 2. online lookup
def build_serving_lake(root: Path, rows: int) -> Path:
    """The demo (churn on the usage view) plus ``plain``: the same training frame as a plain dataset."""
    from core import datasets, registry
    from core.config import Settings
    from core.flows.promote import promote
    from core.flows.seed import seed_demo
    from core.flows.train import train_model
    from core.lake import Lake

    lake = Lake(str(root / "lake"))
    settings = Settings(lake_uri=lake.uri, actor="bench")
    seed_demo(lake=lake, rows=rows, settings=settings)
    datasets.ingest("churn_training_plain", datasets.load("churn_training", lake=lake), lake=lake, settings=Settings())
    out = train_model("churn_training_plain", target="churned", lake=lake, settings=settings)
    mv = registry.register("plain", out.run_id, lake=lake, actor="bench")
    promote("plain", mv.version, reason="bench", actor="bench", force=True, lake=lake, settings=settings)
    # ``reqf``: the same view plus two request features (computed per request from its fields)
    from core import demo, features

    features.register(features.parse_view({**demo.USAGE_VIEW, **REQ_EXTRA}), lake=lake)
    features.build_training_set("churn_training_req", labels="churn", views=[REQ_EXTRA["name"]], lake=lake,
                                settings=settings)
    out = train_model("churn_training_req", target="churned", lake=lake, settings=settings)
    mv = registry.register("reqf", out.run_id, lake=lake, actor="bench")
    promote("reqf", mv.version, reason="bench", actor="bench", force=True, lake=lake, settings=settings)
    features.materialize(REQ_EXTRA["name"], lake=lake)
    return root / "lake"


REQ_EXTRA = {
    "name": "churn_usage_req",
    "request": {"monthly_charges": "Float64", "plan": "String"},
    "request_features": [
        {"name": "charges_per_call_30d", "expr": "pl.col('monthly_charges') / (pl.col('calls_30d') + 1)"},
        {"name": "premium_data_7d", "expr": "pl.when(pl.col('plan') == 'premium').then(pl.col('data_gb_7d')).otherwise(0.0)"},
    ],
}
"""The demo's usage view plus two request features (``reqf``)."""


def _bodies(lake_path: Path, root: Path) -> dict[tuple[str, int], Path]:
    from core import datasets, demo, features
    from core.lake import Lake

    lake = Lake(str(lake_path))
    view = ["calls_30d", "active_30d", "long_calls_30d", "data_gb_7d"]
    current, _ = features.current_values("churn_usage", 1, lake=lake)
    # customers the online table knows, with the very values it holds: both models get the same matrix
    online = (datasets.load("churn_training", lake=lake).drop(view).tail(100)
              .join(current.select(demo.ID_COLUMN, *view), on=demo.ID_COLUMN, how="inner"))
    out = {}
    for n in (1, 100):
        part = online.head(n)
        # the same pass-through field in both (logged alike): only the source of the 4 values differs
        bodies = {"churn": part.select(*demo.FEATURES, demo.ID_COLUMN), "plain": part.select(*demo.FEATURES, *view, demo.ID_COLUMN)}
        for model, frame in bodies.items():
            path = root / f"{model}{n}.json"
            path.write_text(json.dumps(frame.to_dicts()))
            out[(model, n)] = path
        out[("reqf", n)] = out[("churn", n)]  # the same request: key + fields; the service adds 4 + 2 features
    return out


def codec_cost(lake_path: str, bodies: dict[str, str], seconds: float) -> dict[str, Any]:
    """In-process: microseconds per decode of the same rows through OnlineCodec (churn) and Codec (plain)."""
    from core import registry
    from core.lake import Lake
    from core.serving.online import OnlineStores, codec_for

    lake = Lake(lake_path)
    stores = OnlineStores(lake)
    out = {}
    for key, path in bodies.items():
        model = key.split(":")[0]
        codec = codec_for(registry.load(model, lake=lake).signature, stores=stores, unknown_category="missing", max_rows=10_000)
        body = Path(path).read_bytes()
        codec.decode(body)
        n, c0 = 0, time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            codec.decode(body)
            n += 1
        out[key] = (time.process_time() - c0) / n * 1e6
    return out


def bench_online(root: Path, rows: int, duration: float, reps: int) -> None:
    import importlib.util  # bench/serving.py (wrk, the lakeops server, the HTTP floor), loaded by path

    spec = importlib.util.spec_from_file_location("bench_serving", Path(__file__).with_name("serving.py"))
    assert spec is not None and spec.loader is not None
    sb = sys.modules["bench_serving"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sb)

    t = time.time()
    lake = build_serving_lake(root, rows)
    print(f"# lake: demo with {rows:,} customers + plain model ({time.time() - t:.0f} s)")
    bodies = _bodies(lake, root)
    costs = in_fresh_process("codec_cost", lake_path=str(lake), bodies={f"{m}:{n}": str(p) for (m, n), p in bodies.items()},
                             seconds=max(1.0, duration / 2))
    bodies = {k: v for k, v in bodies.items() if k[0] != "reqf"}  # in-process only
    print("## in-process decode, us per request (OnlineCodec fills the view features; Codec gets them sent)")
    for n in (1, 100):
        print(f"rows={n:<3d} OnlineCodec {costs[f'churn:{n}']:8.1f} us  Codec {costs[f'plain:{n}']:8.1f} us  "
              f"added {costs[f'churn:{n}'] - costs[f'plain:{n}']:+8.1f} us  | with 2 request features "
              f"{costs[f'reqf:{n}']:8.1f} us (+{costs[f'reqf:{n}'] - costs[f'churn:{n}']:.1f} us over the lookup)")
    server, url = sb.start_lakeops(lake, root, "features", {})
    floor, furl = sb.start_floor()
    try:
        for (model, _n), body in bodies.items():
            sb.run_wrk(f"{url}/v1/models/{model}/predict", body, 8, 1.0, server)  # warm-up
        samples: dict[tuple[str, int], list[dict]] = {}
        for _ in range(reps):
            for n in (1, 100):
                for model in ("churn", "plain"):
                    r = sb.run_wrk(f"{url}/v1/models/{model}/predict", bodies[(model, n)], 1, duration, server)
                    samples.setdefault((model, n), []).append(r)
                r = sb.run_wrk(f"{furl}/v1/models/churn/predict", bodies[("plain", n)], 1, duration, floor)
                samples.setdefault(("floor", n), []).append(r)
                print(f"  rows={n:<3d} " + "  ".join(f"{k[0]} {v[-1]['cpu_us']:6.0f} us" for k, v in samples.items() if k[1] == n),
                      flush=True)
    finally:
        for proc in (server, floor):
            proc.terminate()
            proc.wait(timeout=60)
    med = {k: {m: float(np.median([r[m] for r in v])) for m in ("cpu_us", "p50", "rps", "errors")} for k, v in samples.items()}
    print(f"\n## server CPU per request at c=1, medians of {reps} ({duration:g} s each)")
    for n in (1, 100):
        f, p, h = med[("churn", n)], med[("plain", n)], med[("floor", n)]
        added = f["cpu_us"] - p["cpu_us"]
        print(f"rows={n:<3d} with lookup {f['cpu_us']:6.0f} us (p50 {f['p50']:.2f} ms)  values sent {p['cpu_us']:6.0f} us  "
              f"HTTP floor {h['cpu_us']:6.0f} us  added {added:+6.0f} us = {100 * added / h['cpu_us']:+5.1f} % of the floor"
              + ("  (goal <= 20 %)" if n == 1 else "") + f"  errors {f['errors']:.0f}/{p['errors']:.0f}")


# ---------------------------------------------------------------------------- 3. materialisation
MAT_VIEW = {
    "name": "bench_view", "source": "bench_events", "entity": "entity", "event_time": "at", "missing": "default",
    "features": [
        {"name": "x_sum_30d", "expr": "pl.col('x')", "agg": "sum", "window": "30d"},
        {"name": "x_mean_90d", "expr": "pl.col('x')", "agg": "mean", "window": "90d"},
        {"name": "n_30d", "agg": "count", "window": "30d"},
        {"name": "y_max_7d", "expr": "pl.col('y')", "agg": "max", "window": "7d"},
        {"name": "last_x", "expr": "pl.col('x')"},
        {"name": "last_ratio", "expr": "pl.col('x') / (pl.col('y').abs() + 1)"},
    ],
}


def build_mat_lake(root: Path, entities: int) -> tuple[Path, int]:
    from core import datasets, features
    from core.config import Settings
    from core.lake import Lake

    rng = np.random.default_rng(1)
    n = entities * 5
    keys = pl.Series([f"E{i:07d}" for i in range(entities)])
    ev = pl.DataFrame({
        "entity": keys.gather(np.repeat(np.arange(entities), 5)),
        "at": pl.Series(T0 + rng.integers(0, 2 * YEAR_US, n)).cast(pl.Datetime("us", "UTC")),  # two years
        "x": rng.normal(size=n), "y": rng.normal(size=n),
    }).unique(["entity", "at"])
    lake = Lake(str(root / "matlake"))
    datasets.ingest("bench_events", ev, lake=lake, validate=False, settings=Settings())
    features.register(features.parse_view(MAT_VIEW), lake=lake)
    return root / "matlake", int(ev["at"].max().timestamp() * 1e6)


def mat_run(lake_path: str, as_of_us: int, full: bool) -> dict[str, Any]:
    from datetime import UTC, datetime

    from core import features
    from core.lake import Lake

    lake = Lake(lake_path)
    c, w = _cpu(), time.perf_counter()
    m = features.materialize("bench_view", as_of=datetime.fromtimestamp(as_of_us / 1e6, tz=UTC), full=full, lake=lake)
    return {"cpu_s": _cpu() - c, "wall_s": time.perf_counter() - w, "peak_mb": _peak_mb(), "mode": m.mode,
            "entities": m.entities}


def add_events(lake_path: Path, entities: int, as_of_us: int) -> None:
    from core import datasets
    from core.config import Settings
    from core.lake import Lake

    rng = np.random.default_rng(2)
    n = entities // 100
    new = pl.DataFrame({
        "entity": [f"E{i:07d}" for i in rng.integers(0, entities, n)],
        "at": pl.Series(as_of_us + rng.integers(1, 3_600_000_000, n)).cast(pl.Datetime("us", "UTC")),
        "x": rng.normal(size=n), "y": rng.normal(size=n),
    }).unique(["entity", "at"])
    datasets.ingest("bench_events", new, lake=Lake(str(lake_path)), validate=False, settings=Settings())


def bench_materialize(root: Path, entities: int) -> None:
    t = time.time()
    lake, as_of = build_mat_lake(root, entities)
    print(f"# lake: {entities:,} entities x 5 events ({time.time() - t:.0f} s to build)")
    full = in_fresh_process("mat_run", lake_path=str(lake), as_of_us=as_of, full=True)
    add_events(lake, entities, as_of)
    inc = in_fresh_process("mat_run", lake_path=str(lake), as_of_us=as_of + 3_600_000_000, full=False)
    print(f"\n## materialisation of {entities:,} entities ({entities * 5:,} source rows, 6 features)")
    for name, r in (("full", full), ("incremental after 1 % new events", inc)):
        print(f"{name:34s} {r['mode']:11s} {r['entities']:9,} entities  cpu {r['cpu_s']:6.2f} s  wall {r['wall_s']:6.2f} s  "
              f"peak RSS {r['peak_mb']:6.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes, shorter wrk runs")
    ap.add_argument("--only", default="pit,online,materialize")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=20_000, help="demo customers for the serving part")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per wrk cell")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.events, args.labels, args.entities, args.duration = args.events // 10, args.labels // 10, args.entities // 10, 2.0
    root = Path(tempfile.mkdtemp(prefix="lakeops-bench-features-"))
    t0 = time.time()
    wanted = set(args.only.split(","))
    if "pit" in wanted:
        bench_pit(root, args.events, args.labels, args.reps)
    if "online" in wanted:
        bench_online(root, args.customers, args.duration, args.reps)
    if "materialize" in wanted:
        bench_materialize(root, args.entities)
    print(f"# total {time.time() - t0:.0f} s; machine: {os.cpu_count()} cores, shared")


if __name__ == "__main__":
    main()
