"""Ingest + validate + profile of 1M rows x 25 columns: seconds and peak memory.

Usage: python bench/datasets.py [--quick] [--rows N]

The data (demo churn columns + 6 extra) is written to Parquet first; each measured step then runs
in a fresh child process so that its peak RSS (``resource.getrusage`` max RSS) is its own:

1. first ingest of the file into an empty lake (read + normalise + declared rules + write +
   profile + content hash);
2. a second batch of the same size appended and validated against version 1's stored profile
   (inferred rules: schema, types, nulls, ranges, domains, PSI), then profiled and hashed over
   the whole 2N-row version;
3. the pure pieces on an in-memory frame: profile, validation, content hash.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make(rows: int, seed: int) -> pl.DataFrame:
    from core import demo

    frame = demo.generate(rows, seed=seed)
    rng = np.random.default_rng(seed + 100)
    return frame.with_columns(
        pl.Series("score_a", rng.normal(0, 1, rows)),
        pl.Series("score_b", rng.gamma(2.0, 3.0, rows)),
        pl.Series("visits", rng.poisson(4, rows)),
        pl.Series("device", rng.choice(["ios", "android", "web", "tv"], rows)),
        pl.Series("segment", rng.choice([f"s{i:02d}" for i in range(30)], rows)),
        pl.Series("note", rng.choice(["", "vip", "moved", "complaint", "upsell"], rows)),
    )


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(step: str, lake_dir: str, path: str) -> None:
    if step == "make":
        rows = int(lake_dir)
        make(rows, 1).write_parquet(Path(path, "a.parquet"))
        make(rows, 2).write_parquet(Path(path, "b.parquet"))
        return
    from core import datasets, profiling, validation
    from core.config import Settings
    from core.lake import Lake

    lake = Lake(lake_dir)
    out: dict[str, float | int | str] = {"step": step}
    start_mb = _rss_mb()
    t = time.perf_counter()
    if step in ("first", "second"):
        dv = datasets.ingest("bench", path, lake=lake, spec={"unique": []}, source=Path(path).name, settings=Settings())
        out.update(version=dv.version, rows=dv.rows, total_rows=dv.total_rows, status=dv.validation_status)
    else:
        frame = pl.read_parquet(path)
        start_mb = _rss_mb()
        t0 = time.perf_counter()
        prof = profiling.profile(frame)
        out["profile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = validation.validate(frame, validation.infer_rules(prof))
        out["validate_s"] = time.perf_counter() - t0
        out["rules"] = len(report.results)
        t0 = time.perf_counter()
        datasets.content_hash(frame)
        out["hash_s"] = time.perf_counter() - t0
    out["seconds"] = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime  # whole child process, imports included
    out["peak_rss_mb"] = _peak_mb()
    out["rss_at_start_mb"] = start_mb
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--child", nargs=3, metavar=("STEP", "LAKE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="lakeops-bench-") as tmp:
        t = time.perf_counter()
        a, b = Path(tmp, "a.parquet"), Path(tmp, "b.parquet")
        # generate in a child too: the max-RSS high-water mark survives fork+exec, so the parent stays small
        subprocess.run([sys.executable, __file__, "--child", "make", str(rows), tmp], check=True)
        cols = pl.read_parquet_schema(a)
        print(f"data: {rows:,} rows x {len(cols)} columns per batch, {a.stat().st_size / 2**20:.1f} MiB parquet "
              f"(generated in {time.perf_counter() - t:.1f} s)")
        lake = str(Path(tmp, "lake"))
        for step, path in (("first", a), ("second", b), ("pure", a)):
            res = subprocess.run([sys.executable, __file__, "--child", step, lake, str(path)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            if step == "pure":
                print(f"pure, in memory ({rows:,} rows): profile {r['profile_s']:.2f} s, validate ({r['rules']} inferred "
                      f"rules) {r['validate_s']:.2f} s, content hash {r['hash_s']:.2f} s (wall); peak RSS {r['peak_rss_mb']:,.0f} MB "
                      f"(frame loaded: {r['rss_at_start_mb']:,.0f} MB)")
            else:
                print(f"ingest {step:6s}: version {r['version']}, {r['rows']:,} rows -> {r['total_rows']:,} in version, "
                      f"validation {r['status']}: {r['seconds']:.2f} s wall ({r['cpu_s']:.1f} s CPU in the process), peak RSS {r['peak_rss_mb']:,.0f} MB "
                      f"(RSS before ingest {r['rss_at_start_mb']:,.0f} MB)")


if __name__ == "__main__":
    main()
