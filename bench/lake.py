"""Lake figures (issues 2 and 21): append latency, SQL vs polars on a 10M-row prediction log,
read cost after many small commits before and after maintenance, the append latency tail with
many writers, reads of a table while it is written.

Run ``python bench/lake.py`` (full) or ``python bench/lake.py --quick`` (smaller sizes);
``--contention [--procs 8 --appends 200]`` for the many-writers figures only, ``--stress N`` for
N SQL queries while 4 writers append. Uses a temporary local lake unless ``--lake DIR`` is given.
Numbers are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.catalog import prediction_common_fields  # noqa: E402
from core.lake import Lake  # noqa: E402
from core.sql import query  # noqa: E402

SMALL = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float64()), pa.field("s", pa.string())])


def _timed(fn, repeat: int) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _small(n: int, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + n)
    return pa.table({"id": ids, "x": ids * 0.5, "s": pa.array([f"s{i % 97}" for i in range(n)])})


def bench_append(lake: Lake, repeat: int) -> None:
    print(f"\n== append latency per commit (median of {repeat}, one Lake object, local folder)")
    lake.append("data/append_bench", _small(1), schema=SMALL)
    for n in (1, 1_000, 100_000):
        batch = _small(n)
        sec, _ = _timed(lambda b=batch: lake.append("data/append_bench", b), repeat)
        print(f"  {n:>7,} rows: {sec * 1000:8.1f} ms/commit  ({n / sec:,.0f} rows/s)")


def build_predictions(lake: Lake, rows: int, days: int, appends: int) -> str:
    name = "predictions/bench"
    schema = pa.schema(prediction_common_fields())
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    per = rows // appends
    t0 = time.perf_counter()
    for a in range(appends):
        offs = rng.integers(0, days * 86_400_000_000, per)
        at = pl.Series("at", offs).cast(pl.Duration("us")) + pl.lit(start)
        frame = pl.DataFrame(
            {
                "prediction_id": pl.int_range(a * per, (a + 1) * per, eager=True).cast(pl.String),
                "model_version": rng.integers(1, 6, per),
                "score": rng.random(per),
            }
        ).with_columns(at.alias("at"))
        frame = frame.with_columns(pl.col("at").dt.replace_time_zone("UTC"))
        frame = frame.with_columns(pl.col("at").dt.date().alias("day"))
        lake.append(name, frame, schema=schema, partition_by=["day"], metadata={"actor": "bench"})
    sec = time.perf_counter() - t0
    print(
        f"  built {rows:,} rows in {appends} appends, {days} day partitions: {sec:.1f} s, "
        f"{lake.file_count(name)} files"
    )
    return name


def bench_predictions(lake: Lake, rows: int, repeat: int) -> None:
    print(
        f"\n== {rows:,}-row prediction log: DuckDB (core.sql.query) vs polars lake.scan (median of {repeat})"
    )
    name = build_predictions(lake, rows, days=30, appends=5)
    q1 = "select count(*) as n, avg(score) as avg_score from predictions where model_version = ?"
    q2 = "select day, count(*) as n, avg(score) as avg_score from predictions group by day order by day"
    s1, r1 = _timed(lambda: query(lake, q1, [3]), repeat)
    s2, r2 = _timed(lambda: query(lake, q2), repeat)

    def p1() -> pl.DataFrame:
        return (
            lake.scan(name)
            .filter(pl.col("model_version") == 3)
            .select(pl.len().alias("n"), pl.col("score").mean().alias("avg_score"))
            .collect()
        )

    def p2() -> pl.DataFrame:
        return (
            lake.scan(name)
            .group_by("day")
            .agg(pl.len().alias("n"), pl.col("score").mean().alias("avg_score"))
            .sort("day")
            .collect()
        )

    t1, o1 = _timed(p1, repeat)
    t2, o2 = _timed(p2, repeat)
    assert r1["n"].item() == o1["n"].item() and r2.height == o2.height == 30
    print(
        f"  count+avg where model_version=?: DuckDB {s1:6.3f} s | polars {t1:6.3f} s  (n={o1['n'].item():,})"
    )
    print(f"  group by day (30 groups):        DuckDB {s2:6.3f} s | polars {t2:6.3f} s")
    s3, _ = _timed(
        lambda: query(lake, "select count(*) from predictions where day = ?", [datetime(2026, 1, 7).date()]),
        repeat,
    )
    print(f"  count where day = ? (partition pruning, DuckDB): {s3:6.3f} s")


def bench_small_commits(lake: Lake, commits: int, repeat: int) -> None:
    print(f"\n== reading a table after {commits:,} one-row commits, before and after lake.maintain()")
    name = "data/small_commits"
    lake.append(name, _small(1), schema=SMALL)
    t0 = time.perf_counter()
    for i in range(1, commits):
        lake.append(name, _small(1, start=i))
    print(
        f"  {commits:,} commits took {time.perf_counter() - t0:.1f} s "
        f"({commits / (time.perf_counter() - t0):.1f} commits/s, one writer)"
    )
    mid = datetime.now(UTC) - timedelta(seconds=1)

    def measure(label: str) -> None:
        a, _ = _timed(lambda: lake.read(name), repeat)
        b, _ = _timed(lambda: query(lake, f"select count(*) from {name.replace('/', '_')}"), repeat)
        c, _ = _timed(lambda: lake.scan(name).select(pl.len()).collect(), repeat)
        d, _ = _timed(lambda: lake.read(name, version=commits // 2), repeat)
        e, _ = _timed(lambda: lake.read(name, as_of=mid), repeat)
        print(
            f"  {label:<7} files={lake.file_count(name):>5}  lake.read {a:6.3f} s | SQL count {b:6.3f} s | "
            f"polars scan count {c:6.3f} s | read(version) {d:6.3f} s | read(as_of) {e:6.3f} s"
        )

    measure("before")
    t = time.perf_counter()
    (report,) = lake.maintain([name])
    print(f"  maintain: {time.perf_counter() - t:.1f} s, files {report.files_before} -> {report.files_after}")
    measure("after")


_WRITER = """
import json, sys, time
from pathlib import Path
import pyarrow as pa
from core.errors import LakeopsError
from core.lake import Lake
uri, table, me, n, go, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), float(sys.argv[6])
lake = Lake(uri)
while not go.exists():
    time.sleep(0.005)
took, failed = [], 0
for i in range(n):
    t = time.perf_counter()
    try:
        lake.append(table, pa.table({"id": [me * 1_000_000 + i], "x": [0.5], "s": ["w"]}))
    except LakeopsError:
        failed += 1
    took.append(time.perf_counter() - t)
    time.sleep(pause)
print(json.dumps({"took": took, "failed": failed}))
"""


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _writers(lake: Lake, name: str, procs: int, appends: int, pause: float = 0.0) -> tuple[list[Any], Path]:
    """Start ``procs`` writer processes waiting on a start file; return them and the file."""
    import os
    import subprocess

    go = Path(tempfile.mkdtemp(prefix="lakeops-go-")) / "go"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs_ = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, lake.uri, name, str(k + 1), str(appends), str(go), str(pause)],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        for k in range(procs)
    ]
    time.sleep(3.0)  # every writer has imported and waits
    return procs_, go


def bench_contention(lake: Lake, procs: int, appends: int) -> None:
    """N processes appending one-row commits to one table at once: the append latency tail and
    lost or failed commits; then reads of a table while it is written, before and after compaction."""
    import json
    import os

    print(f"\n== contention: {procs} processes x {appends} one-row appends to one table, {os.cpu_count()} cores")
    name = "data/contention"
    lake.append(name, _small(1), schema=SMALL)
    writers, go = _writers(lake, name, procs, appends)
    t0 = time.perf_counter()
    go.touch()
    results = [json.loads(w.communicate()[0]) for w in writers]
    wall = time.perf_counter() - t0
    took = [t for r in results for t in r["took"]]
    failed = sum(r["failed"] for r in results)
    rows = lake.read(name).height - 1
    print(
        f"  {len(took):,} appends in {wall:.1f} s ({len(took) / wall:.1f} commits/s); failed {failed}, "
        f"rows {rows:,} (lost {len(took) - failed - rows})"
    )
    print(
        f"  append latency: p50 {_pct(took, 50):.3f} s | p95 {_pct(took, 95):.3f} s | p99 {_pct(took, 99):.3f} s"
        f" | max {max(took):.3f} s"
    )
    worst = max(results, key=lambda r: max(r["took"]))
    print(f"  slowest writer: {sum(worst['took']):.1f} s for its {len(worst['took'])} appends")
    files = lake.file_count(name)
    parquet = len([f for f in lake.list_files(name) if f.endswith(".parquet")])
    print(f"  files: {files} live, {parquet - files} orphaned parquet files (data written by failed attempts)")

    sql = f"select count(*) from {name.replace('/', '_')}"
    idle, _ = _timed(lambda: query(lake, sql), 5)
    writers, go = _writers(lake, name, 4, 10_000)
    go.touch()
    busy, _ = _timed(lambda: query(lake, sql), 15)
    t = time.perf_counter()
    lake.compact(name)
    spent = time.perf_counter() - t
    compacted, _ = _timed(lambda: query(lake, sql), 15)
    (go.parent / "stop").touch()
    for w in writers:
        w.kill()
        w.wait()
    print(
        f"  SQL count(*) on the table ({files} files): idle {idle:.3f} s | while 4 writers append "
        f"{busy:.3f} s | after lake.compact ({spent:.1f} s, {lake.file_count(name)} files, writers still on) "
        f"{compacted:.3f} s  (medians)"
    )


def bench_query_stress(lake: Lake, queries: int) -> None:
    """Many SQL queries on a many-small-file table while 4 writers append (issue 21's deadlock was
    seen once in about 1,500 such queries): every query must answer; latency percentiles."""
    print(f"\n== {queries} SQL queries on a many-small-file table while 4 processes append (each pausing 0.5 s between appends)")
    name = "data/stress"
    lake.append(name, _small(1), schema=SMALL)
    for i in range(1, 300):
        lake.append(name, _small(1, start=i))
    writers, go = _writers(lake, name, 4, 1_000_000, pause=0.5)
    go.touch()
    took, errors = [], []
    sql = f"select count(*) as n, sum(x) as s from {name.replace('/', '_')}"
    try:
        for _ in range(queries):
            t = time.perf_counter()
            try:
                query(lake, sql, timeout_s=60)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                errors.append(str(exc))
            took.append(time.perf_counter() - t)
    finally:
        for w in writers:
            w.kill()
            w.wait()
    print(
        f"  {len(took)} queries, {len(errors)} failed; latency p50 {_pct(took, 50):.3f} s | p99 "
        f"{_pct(took, 99):.3f} s | max {max(took):.3f} s; table ended with {lake.file_count(name)} files"
    )
    for e in errors[:3]:
        print(f"  error: {e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--lake", help="lake folder to use (default: a temporary folder, removed after)")
    ap.add_argument("--contention", action="store_true", help="only the many-writers figures")
    ap.add_argument("--procs", type=int, default=8, help="writer processes for --contention (default 8)")
    ap.add_argument("--appends", type=int, default=200, help="appends per writer for --contention (default 200)")
    ap.add_argument("--stress", type=int, default=0, metavar="N", help="only N SQL queries while 4 writers append")
    args = ap.parse_args()
    rows, commits, repeat = (1_000_000, 200, 3) if args.quick else (10_000_000, 2_000, 5)
    root = Path(args.lake) if args.lake else Path(tempfile.mkdtemp(prefix="lakeops-bench-"))
    lake = Lake(root)
    print(f"lakeops lake bench ({'quick' if args.quick else 'full'}), lake {lake.uri}")
    try:
        if args.stress:
            bench_query_stress(lake, args.stress)
            return
        if args.contention:
            bench_contention(lake, args.procs, args.appends)
            return
        bench_append(lake, repeat=7 if not args.quick else 5)
        bench_predictions(lake, rows, repeat=3)
        bench_small_commits(lake, commits, repeat=3)
        bench_contention(lake, 8 if not args.quick else 4, 200 if not args.quick else 50)
    finally:
        if not args.lake:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
