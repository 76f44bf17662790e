"""Serving benchmark: wrk against lakeops serve (logging on/off), the HTTP floor and the model floor.

Run: ``python bench/serving.py [--quick] [--duration S]`` (narrower: ``--servers a,c --rows 1
--conc 1,64 --lake <seeded lake>``). Auth and replicas: ``--servers a,e,w2`` adds (e) server a with
auth on (wrk sends a bearer token; the predict fast path checks its cached verification) and (w2)
server a with ``--workers 2``; ``--baseline /path/to/other/checkout`` adds (a0) server a run from
that checkout's code, for before/after figures in one interleaved run. Everything on 127.0.0.1; wrk (Debian) posts the body with
``bench/wrk/post.lua``. Servers: (a) lakeops serve with the default config (logging on,
``wal_sync = "write"``), (a') the same with ``wal_sync = "fsync"``, (b) logging off, (c) the HTTP
floor, (d) ``booster.predict`` on one thread in this process (the model floor), (d')
``Model.predict_matrix``, the cheaper C-API path the server scores with, (d'') the same with the CPU caches
cold (each call after a 32 MB scan, only the call timed): what a call costs in a server, (t, t')
the model's trees compiled to machine code (lleaves), hot and cold: what a hot model scores with in
the server (``[serving] predictor = "auto"``; the warm-up scores past ``compile_after_rows`` and waits
for every worker's ``lakeops_model_compiled``), and (l) server a with ``predictor = "lightgbm"``
(before/after the compiled trees, in the same interleaved run). Server CPU per request
is the server process's user+system CPU time (all its threads: event loop, WAL fsync, lake
writer, poller) over the run, divided by the requests wrk completed; the lake writer flushes
every ``flush_interval_s`` (5 s), so short cells see its cost unevenly: prefer ``--duration`` >= 6.
All servers run at once and the cells go round-robin ``--reps`` times (medians reported), so the
shared machine's drifting speed hits every server alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import psutil
from litestar import Litestar, Request, Response, post

if TYPE_CHECKING:
    import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LUA = ROOT / "bench" / "wrk" / "post.lua"


def floor_app():  # noqa: ANN201 - uvicorn factory for the HTTP floor
    """A constant-JSON Litestar endpoint: reads the body, answers a fixed document."""
    payload = b'{"model":"churn","version":1,"prediction_ids":["x"],"scores":[0.5],"labels":[0]}'

    @post("/v1/models/churn/predict", status_code=200)
    async def const(request: Request) -> Response:
        await request.body()
        return Response(content=payload, media_type="application/json")

    return Litestar(route_handlers=[const])


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def build_lake(root: Path) -> Path:
    """A lake holding the demo churn champion (seeded like ``lakeops up`` does)."""
    from core.config import Settings
    from core.flows.seed import seed_demo
    from core.lake import Lake

    lake_path = root / "lake"
    settings = Settings(lake_uri=str(lake_path), actor="bench")
    seed_demo(lake=Lake(str(lake_path)), rows=5000, features=False, settings=settings)  # a model whose requests carry every feature
    return lake_path


def start_lakeops(lake: Path, root: Path, name: str, serving: dict, *, workers: int = 1, env: dict | None = None,
                  code: Path = ROOT) -> tuple[subprocess.Popen, str]:
    port = _port()
    cfg = root / f"{name}.toml"
    lines = ["[serving]"] + [f"{k} = {json.dumps(v)}" for k, v in serving.items()]
    lines.append(f'wal_dir = "{root / "wal" / name}"')
    cfg.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "LAKEOPS_LAKE": str(lake), "LAKEOPS_CONFIG": str(cfg), "PYTHONPATH": str(code), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/health", proc)
    if workers > 1:  # every worker up (each publishes its model-version gauge)
        deadline = time.time() + 60
        while time.time() < deadline:
            text = httpx.get(url + "/metrics", timeout=5).text
            if sum(line.startswith("lakeops_model_version{") for line in text.splitlines()) >= workers:
                break
            time.sleep(0.2)
    return proc, url


def start_floor() -> tuple[subprocess.Popen, str]:
    port = _port()
    code = (
        f"import uvicorn; uvicorn.run('serving:floor_app', factory=True, app_dir={str(ROOT / 'bench')!r}, "
        f"host='127.0.0.1', port={port}, loop='uvloop', http='httptools', log_level='warning', access_log=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/", proc)
    return proc, url


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


ARROW = "application/vnd.apache.arrow.stream"


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def run_wrk(url: str, body: Path, conc: int, duration: float, proc: subprocess.Popen, ctype: str = "application/json",
            auth: str = "") -> dict:
    threads = 1 if conc == 1 else 2
    ps = psutil.Process(proc.pid)
    procs = [ps, *ps.children(recursive=True)]  # the workers of --workers N too
    env = {**os.environ, "BODY": str(body), "CTYPE": ctype, "AUTH": auth}
    cmd = ["wrk", f"-t{threads}", f"-c{conc}", f"-d{duration:g}s", "--latency", "-s", str(LUA), url]
    c0 = _cpu(procs)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    cpu = _cpu(procs) - c0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu / max(total, 1) * 1e6, "errors": int(non2xx.group(1)) if non2xx else 0}


def model_floor(lake: Path, rows: dict[int, list[dict]], seconds: float) -> dict[int, dict[str, dict]]:
    """The model floor in this process: ``booster.predict`` on one thread (the issue's floor; its
    default threading costs ~1 ms per small call) and lakeops' own ``Model.predict_matrix``
    (LightGBM's C API without the Python wrapper: the floor the server actually runs on)."""
    import polars as pl

    from core import registry
    from core.lake import Lake

    model = registry.load("churn", lake=Lake(str(lake))).model
    booster = model._booster  # noqa: SLF001 - the raw LightGBM booster is the floor

    def measure(fn) -> dict:  # noqa: ANN001
        fn()
        lat = []
        c0 = time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            fn()
            lat.append(time.perf_counter() - t)
        cpu = time.process_time() - c0
        arr = np.array(lat) * 1000
        return {"rps": len(lat) / seconds, "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
                "cpu_us": cpu / len(lat) * 1e6, "errors": 0}

    # The floors above run in a tight loop, with the trees and the matrix hot in the CPU caches; a
    # server always does other work between two calls. "cold": each call after a 32 MB scan that
    # evicts the caches; only the call itself is timed (thread CPU clock around it).
    junk = np.random.default_rng(0).random(4_000_000)

    def measure_cold(fn) -> dict:  # noqa: ANN001
        fn()
        lat, cpu = [], 0.0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            junk.sum()
            c, t = time.thread_time(), time.perf_counter()
            fn()
            lat.append(time.perf_counter() - t)
            cpu += time.thread_time() - c
        arr = np.array(lat) * 1000
        return {"rps": len(lat) / seconds, "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
                "cpu_us": cpu / len(lat) * 1e6, "errors": 0}

    from core.training import compile_model

    trees = compile_model(model, None)
    out = {}
    for n, body in rows.items():
        X = model.encode(pl.DataFrame(body))
        cold = measure_cold(lambda X=X: model.predict_matrix(X))
        trees_cold = measure_cold(lambda X=X: trees.predict_matrix(X))
        out[n] = {"booster": measure(lambda X=X: booster.predict(X, num_threads=1)),
                  "matrix": measure(lambda X=X: model.predict_matrix(X)),
                  "cold": cold,
                  "trees": measure(lambda X=X: trees.predict_matrix(X)),
                  "trees_cold": trees_cold}
    return out


A, A2, B, C = (
    "a lakeops, log on (wal_sync=write)", "a' lakeops, log on (wal_sync=fsync)",
    "b lakeops, log off", "c HTTP floor (const JSON)",
)
AA = "a arrow body (Arrow IPC stream)"
AA0 = "a0 arrow body, baseline checkout"
A0, E, W2 = "a0 baseline checkout, log on", "e lakeops, log on, auth on", "w2 lakeops, log on, 2 workers"
L, AL = "l lakeops, log on, predictor=lightgbm", "l arrow body, predictor=lightgbm"
BOOST, MAT, COLD = "d model floor (booster.predict, 1 thread)", "d' predict_matrix (lakeops)", "d'' predict_matrix, caches cold"
TREES, TREES_COLD = "t compiled trees (lleaves, 1 thread)", "t' compiled trees, caches cold"
Cell = tuple[str, int, int]  # (server, rows, concurrency)
Server = tuple[subprocess.Popen, str]  # (process, base URL)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 s per cell instead of 6")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--servers", default="a,a',b,c", help="subset of a (log on, default wal_sync=write), "
                    "a' (log on, wal_sync=fsync), b (log off), c (HTTP floor), l (a scoring through LightGBM only: "
                    "predictor = lightgbm), e, w2 (see above); d and t always run")
    ap.add_argument("--rows", default="1,100", help="payload sizes, e.g. 1")
    ap.add_argument("--conc", default="1,8,64", help="concurrencies, e.g. 1,64")
    ap.add_argument("--lake", default=None, help="reuse a seeded lake (skips seeding)")
    ap.add_argument("--reps", type=int, default=3, help="round-robin repetitions per cell (median reported)")
    ap.add_argument("--baseline", default=None, help="another checkout (e.g. /work/main): its server a runs as a0")
    ap.add_argument("--arrow", action="store_true", help="also post the bodies as Arrow IPC streams to server a "
                    "(categoricals dictionary-encoded): the 'a arrow' cells")
    return ap.parse_args()


def _bodies(frame: pl.DataFrame, rows: dict[int, list[dict]], root: Path, arrow: bool,
            ) -> tuple[dict[int, Path], dict[int, Path]]:
    """The request bodies per payload size: JSON, and Arrow IPC streams when ``arrow``."""
    bodies, arrow_bodies = {}, {}
    for n, body in rows.items():
        bodies[n] = root / f"body{n}.json"
        bodies[n].write_text(json.dumps(body))
        if arrow:
            import polars as pl
            import pyarrow as pa

            table = frame.head(n).with_columns(pl.col(pl.String).cast(pl.Categorical)).to_arrow()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            arrow_bodies[n] = root / f"body{n}.arrow"
            arrow_bodies[n].write_bytes(sink.getvalue().to_pybytes())
    return bodies, arrow_bodies


def _servers(lake: Path, root: Path, args: argparse.Namespace) -> dict[str, tuple[str, Callable[[], Server]]]:
    """Each server's name -> (its --servers key, a function starting it)."""
    return {
        A: ("a", lambda: start_lakeops(lake, root, "log_on", {})),
        A0: ("a0", lambda: start_lakeops(lake, root, "baseline", {}, code=Path(args.baseline))),
        E: ("e", lambda: start_lakeops(lake, root, "auth_on", {}, env={"LAKEOPS_AUTH": "tokens"})),
        W2: ("w2", lambda: start_lakeops(lake, root, "two_workers", {}, workers=2)),
        A2: ("a'", lambda: start_lakeops(lake, root, "log_fsync", {"wal_sync": "fsync"})),
        B: ("b", lambda: start_lakeops(lake, root, "log_off", {"log_predictions": False})),
        L: ("l", lambda: start_lakeops(lake, root, "lightgbm", {"predictor": "lightgbm"})),
        C: ("c", start_floor),
    }


def _warm(running: dict[str, Server], bodies: dict[int, Path], sizes: list[int], bearer: str) -> None:
    """One checked request and a 1 s wrk run per server and payload size."""
    for name, (proc, url) in running.items():
        target = url + "/v1/models/churn/predict"
        hdr = {"authorization": bearer} if name == E else {}
        for n in sizes:
            httpx.post(target, content=bodies[n].read_bytes(),
                       headers={"content-type": "application/json", **hdr}).raise_for_status()
            run_wrk(target, bodies[n], 8, 1.0, proc, auth=bearer if name == E else "")  # warm-up
    if 100 in sizes:  # the warm-up scored past compile_after_rows: wait for the compiled trees
        for name, (_proc, url) in running.items():
            if name != C:
                print(f"# {name}: {_predictor(url, name == L)}", flush=True)


def _predictor(url: str, never: bool, timeout: float = 90.0) -> str:
    """Wait until every worker of the server scores through its compiled trees (``lakeops_model_compiled``)."""
    if never:
        return "scores through LightGBM (predictor = lightgbm)"
    t0 = time.time()
    while time.time() - t0 < timeout:
        values = [float(line.rsplit(" ", 1)[1]) for line in httpx.get(url + "/metrics", timeout=10).text.splitlines()
                  if line.startswith("lakeops_model_compiled{")]
        if values and min(values) == 1.0:
            return f"compiled trees in use after {time.time() - t0:.1f} s"
        time.sleep(0.2)
    return "STILL LightGBM (not compiled in time)"


def _round_robin(running: dict[str, Server], bodies: dict[int, Path], arrow_bodies: dict[int, Path],
                 args: argparse.Namespace, sizes: list[int], concs: list[int], duration: float, bearer: str,
                 ) -> dict[Cell, list[dict]]:
    """Every cell ``--reps`` times, server innermost: each cell's runs."""
    samples: dict[Cell, list[dict]] = {}
    for rep in range(args.reps):
        for n in sizes:
            for conc in concs:
                cells = [(name, proc, url, bodies[n], "application/json") for name, (proc, url) in running.items()]
                if args.arrow and A in running:
                    cells.append((AA, running[A][0], running[A][1], arrow_bodies[n], ARROW))
                if args.arrow and L in running:
                    cells.append((AL, running[L][0], running[L][1], arrow_bodies[n], ARROW))
                if args.arrow and A0 in running:  # the same Arrow body to the baseline's code
                    cells.append((AA0, running[A0][0], running[A0][1], arrow_bodies[n], ARROW))
                for name, proc, url, body, ctype in cells:
                    r = run_wrk(url + "/v1/models/churn/predict", body, conc, duration, proc, ctype,
                                auth=bearer if name == E else "")
                    samples.setdefault((name, n, conc), []).append(r)
                    print(f"[{rep + 1}/{args.reps}] {name:38s} rows={n:<3d} c={conc:<2d} {r['rps']:9.0f} req/s  "
                          f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  cpu {r['cpu_us']:7.0f} us/req  "
                          f"errors {r['errors']}", flush=True)
    return samples


def _measure(lake: Path, root: Path, args: argparse.Namespace, bodies: dict[int, Path], arrow_bodies: dict[int, Path],
             sizes: list[int], concs: list[int], duration: float) -> tuple[dict[Cell, list[dict]], set[str]]:
    """Start the wanted servers, warm them, run the cells, stop them: each cell's runs and the servers that ran."""
    wanted = set(args.servers.split(","))
    bearer = ""
    if "e" in wanted:
        from core import auth
        from core.lake import Lake

        bearer = "Bearer " + auth.create_token("bench", ["predict"], actor="bench", lake=Lake(str(lake)))[0]
    # Every server runs for the whole benchmark and the cells go round-robin (server innermost),
    # repeated --reps times; each figure is the median of its repetitions. This machine's speed
    # drifts by up to 2x over minutes (shared host), which one pass per server turns into bias.
    running: dict[str, Server] = {}
    try:
        if args.baseline:
            wanted.add("a0")
        for name, (key, start) in _servers(lake, root, args).items():
            if key in wanted:
                running[name] = start()
        _warm(running, bodies, sizes, bearer)
        samples = _round_robin(running, bodies, arrow_bodies, args, sizes, concs, duration, bearer)
    finally:
        for proc, _url in running.values():
            proc.terminate()
            proc.wait(timeout=60)
    return samples, set(running)


def _medians(samples: dict[Cell, list[dict]], reps: int, duration: float) -> dict[Cell, dict]:
    results: dict[Cell, dict] = {
        cell: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for cell, rs in samples.items()
    }
    print(f"\n## medians of {reps} round-robin repetitions, {duration:g} s each")
    for (name, n, conc), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        print(f"{name:38s} rows={n:<3d} c={conc:<2d} {r['rps']:9.0f} req/s  p50 {r['p50']:7.2f} ms  "
              f"p99 {r['p99']:7.2f} ms  cpu {r['cpu_us']:7.0f} us/req  errors {r['errors']:.0f}")
    return results


def _add_model_floor(results: dict[Cell, dict], lake: Path, rows: dict[int, list[dict]], sizes: list[int],
                     duration: float) -> None:
    floor = model_floor(lake, {n: rows[n] for n in sizes}, duration / 2)
    for n, r in floor.items():
        for label, key in ((BOOST, "booster"), (MAT, "matrix"), (COLD, "cold"), (TREES, "trees"),
                           (TREES_COLD, "trees_cold")):
            results[(label, n, 1)] = r[key]
            print(f"{label:42s} rows={n:<3d} {r[key]['rps']:9.0f} calls/s p50 {r[key]['p50']:7.3f} ms  "
                  f"p99 {r[key]['p99']:7.3f} ms  cpu {r[key]['cpu_us']:7.1f} us/call")


def _field(results: dict[Cell, dict], key: str, name: str, n: int, conc: int) -> float:
    return results[(name, n, conc)][key] if (name, n, conc) in results else float("nan")


def _report_goals(results: dict[Cell, dict], sizes: list[int], concs: list[int], arrow: bool) -> None:
    def cpu(name: str, n: int, conc: int) -> float:
        return _field(results, "cpu_us", name, n, conc)

    def rps(name: str, n: int, conc: int) -> float:
        return _field(results, "rps", name, n, conc)

    print("\n## goals (server CPU per request)")
    for conc in concs:
        parts = [f"c={conc:<2d}"]
        if 1 in sizes:
            parts.append(f"1-row vs HTTP floor: {cpu(A, 1, conc) / cpu(C, 1, conc):.2f}x (goal <= 1.5x)")
        if 100 in sizes:
            r1 = cpu(A, 100, conc) / (cpu(BOOST, 100, 1) + cpu(C, 100, conc))
            r2 = cpu(A, 100, conc) / (cpu(MAT, 100, 1) + cpu(C, 100, conc))
            parts.append(f"100-row vs model+HTTP floor: {r1:.2f}x (goal <= 1.3x; {r2:.2f}x with predict_matrix as floor)")
            if arrow:
                ra = cpu(AA, 100, conc) / (cpu(BOOST, 100, 1) + cpu(C, 100, conc))
                rc = cpu(AA, 100, conc) / (cpu(COLD, 100, 1) + cpu(C, 100, conc))
                rt = cpu(AA, 100, conc) / (cpu(TREES_COLD, 100, 1) + cpu(C, 100, conc))
                parts.append(f"Arrow 100-row vs model+HTTP floor: {ra:.2f}x (goal <= 1.3x; {rc:.2f}x with the "
                             f"cache-cold model call as floor, {rt:.2f}x with the cache-cold compiled trees)")
        print("; ".join(parts))
    for n in sizes:
        for conc in concs:
            off = rps(B, n, conc)
            print(f"rows={n:<3d} c={conc:<2d} logging cost: wal_sync=write {100 * (1 - rps(A, n, conc) / off):5.1f} % "
                  f"of throughput, wal_sync=fsync {100 * (1 - rps(A2, n, conc) / off):5.1f} % (goal < 10 %)")


def _report_comparisons(results: dict[Cell, dict], sizes: list[int], concs: list[int], arrow: bool, ran: set[str]) -> None:
    def cpu(name: str, n: int, conc: int) -> float:
        return _field(results, "cpu_us", name, n, conc)

    def rps(name: str, n: int, conc: int) -> float:
        return _field(results, "rps", name, n, conc)

    for n in sizes:
        for conc in concs:
            if E in ran:
                print(f"rows={n:<3d} c={conc:<2d} auth on vs off: {cpu(E, n, conc) - cpu(A, n, conc):+6.1f} us CPU/req, "
                      f"p50 {results[(E, n, conc)]['p50'] - results[(A, n, conc)]['p50']:+.3f} ms, "
                      f"throughput {100 * (rps(E, n, conc) / rps(A, n, conc) - 1):+5.1f} %")
            if A0 in ran and arrow:
                print(f"rows={n:<3d} c={conc:<2d} Arrow body, this checkout vs baseline: "
                      f"{cpu(AA, n, conc) - cpu(AA0, n, conc):+6.1f} us CPU/req "
                      f"({cpu(AA0, n, conc):.0f} -> {cpu(AA, n, conc):.0f})")
            if A0 in ran:
                print(f"rows={n:<3d} c={conc:<2d} this checkout vs baseline (auth off): "
                      f"{cpu(A, n, conc) - cpu(A0, n, conc):+6.1f} us CPU/req, "
                      f"throughput {100 * (rps(A, n, conc) / rps(A0, n, conc) - 1):+5.1f} %")
            if L in ran:
                print(f"rows={n:<3d} c={conc:<2d} compiled trees vs LightGBM (server a vs l): "
                      f"{cpu(A, n, conc) - cpu(L, n, conc):+6.1f} us CPU/req JSON"
                      + (f", {cpu(AA, n, conc) - cpu(AL, n, conc):+6.1f} us Arrow" if arrow else "")
                      + f", throughput {100 * (rps(A, n, conc) / rps(L, n, conc) - 1):+5.1f} %")
            if W2 in ran:
                print(f"rows={n:<3d} c={conc:<2d} 2 workers vs 1: throughput x{rps(W2, n, conc) / rps(A, n, conc):.2f} "
                      f"({rps(A, n, conc):.0f} -> {rps(W2, n, conc):.0f} req/s)")


def main() -> None:
    args = _args()
    sizes = [int(x) for x in args.rows.split(",")]
    concs = [int(x) for x in args.conc.split(",")]
    duration = args.duration or (2.0 if args.quick else 6.0)

    from core import demo

    root = Path(tempfile.mkdtemp(prefix="lakeops-bench-"))
    t0 = time.time()
    lake = Path(args.lake) if args.lake else build_lake(root)
    print(f"# lake seeded in {time.time() - t0:.1f} s at {lake}")
    frame = demo.generate(n=100, seed=7).select(demo.FEATURES)
    rows = {1: frame.head(1).to_dicts(), 100: frame.to_dicts()}
    bodies, arrow_bodies = _bodies(frame, rows, root, args.arrow)
    samples, ran = _measure(lake, root, args, bodies, arrow_bodies, sizes, concs, duration)
    results = _medians(samples, args.reps, duration)
    _add_model_floor(results, lake, rows, sizes, duration)
    _report_goals(results, sizes, concs, args.arrow)
    _report_comparisons(results, sizes, concs, args.arrow, ran)
    print(f"# total {time.time() - t0:.0f} s; machine: {os.cpu_count()} cores, shared")


if __name__ == "__main__":
    main()
