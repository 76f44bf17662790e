"""Prediction log flush benchmark: the CPU one sealed WAL segment costs to become lake rows.

Run: ``python bench/predlog_write.py [--requests 6000] [--rows 100] [--reps 3]``.

A segment of ``--requests`` predict records of ``--rows`` demo rows each (the serving bench's
body: 16 features, some unseen categorical levels; about what 4 s of one worker at full speed
writes) is written with the server's own record format, then committed by
``PredictionLog.commit_segment`` (decode, Arrow tables, one Delta append) into a copy of a lake
holding the demo champion. Printed per 100-row request: process user and system CPU (all
threads: the Python decode and tabling, delta-rs's Parquet writer), wall time, and the Parquet
bytes written, for

- ``parts``: the default, the flush built and written 64k rows at a time (``TableParts``);
- ``one table``: the whole flush as one Arrow table (what releases before the parts did).

Medians of ``--reps`` interleaved repeats. Nothing here talks to the network.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _segment(root: Path, lake_path: Path, requests: int, rows: int) -> Path:
    """Write ``requests`` records the way ``Service.predict`` does; return the sealed segment."""
    from core import demo, registry
    from core.lake import Lake
    from core.serving.schemas import Codec
    from core.serving.service import batch_ids_json
    from core.serving.wal import PredictionRecord, WriteAheadLog, claim_slot

    lake = Lake(str(lake_path))
    mv = registry.get_version("churn", 1, lake=lake)
    codec = Codec(mv.signature, unknown_category="missing", max_rows=rows)
    frame = demo.generate(n=rows, seed=7).select(demo.FEATURES)
    decoded = codec.decode(msgspec.json.encode(frame.to_dicts()))
    header = {"k": "h", "m": "churn", "v": 1, "fn": codec.names, "lv": codec.levels, "thr": 0.5,
              "pt": [{"name": n, "type": k} for n, k in codec._pt]}  # noqa: SLF001 - the server's header
    wal_header = (("churn", 1), msgspec.msgpack.encode(header))
    scores = np.random.default_rng(0).random(rows)
    slot = claim_slot(root / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None)
    try:
        for _ in range(requests):
            idb, _ = batch_ids_json(rows)
            rec = PredictionRecord("churn", 1, time.time_ns() // 1000, 0.4, rows, idb, scores.tobytes(),
                                   decoded.X.tobytes(), decoded.unknown, decoded.passthrough, "champion")
            wal.append(msgspec.msgpack.encode(rec), wal_header)
        seg = wal.seal()
    finally:
        wal.close()
    assert seg is not None
    kept = root / "segment.wal"
    shutil.move(seg, kept)
    slot.close()
    return kept


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _commit(seg: Path, lake_src: Path, work: Path, whole: bool) -> dict[str, float]:
    from core.lake import Lake
    from core.serving import predlog
    from core.serving.wal import claim_slot

    lake_path = work / "lake"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(lake_src, lake_path)
    slot = claim_slot(work / "wal")
    copy = slot.path / seg.name.replace("segment", "seg-bench-000001")
    shutil.copy(seg, copy)
    log = predlog.PredictionLog.offline(Lake(str(lake_path)), work / "wal", actor="bench")
    log._uncertain = set()  # noqa: SLF001 - a fresh segment: no "was it committed?" check
    saved = predlog._PART_ROWS  # noqa: SLF001
    predlog._PART_ROWS = 1 << 40 if whole else saved  # noqa: SLF001 - "one table" = a single part
    try:
        u0, s0 = _usage()
        t0 = time.perf_counter()
        rows = log.commit_segment(copy, slot)
        wall = time.perf_counter() - t0
        u1, s1 = _usage()
    finally:
        predlog._PART_ROWS = saved  # noqa: SLF001
        slot.close()
    per = rows / 100
    written = sum(p.stat().st_size for p in (lake_path / "predictions" / "churn").rglob("*.parquet"))
    return {"user": (u1 - u0) / per * 1e6, "sys": (s1 - s0) / per * 1e6, "wall": wall / per * 1e6,
            "MB": written / 1e6, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from bench.serving import build_lake  # the serving bench's lake: the demo champion

    root = Path(tempfile.mkdtemp(prefix="lakeops-predlog-"))
    try:
        lake_src = build_lake(root)
        seg = _segment(root, lake_src, args.requests, args.rows)
        print(f"segment: {args.requests} records x {args.rows} rows, {seg.stat().st_size / 1e6:.1f} MB")
        samples: dict[str, list[dict[str, float]]] = {"parts": [], "one table": []}
        for _ in range(args.reps):
            for name in samples:
                samples[name].append(_commit(seg, lake_src, root / "work", whole=name == "one table"))
        print(f"{'flush as':12s} {'user us':>8s} {'sys us':>8s} {'cpu us':>8s} {'wall us':>8s} (per 100-row request) {'MB':>6s}")
        for name, runs in samples.items():
            m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{name:12s} {m['user']:8.1f} {m['sys']:8.1f} {m['user'] + m['sys']:8.1f} {m['wall']:8.1f}"
                  f"{'':22s}{m['MB']:6.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    os._exit(0)  # delta-rs's runtime threads can abort the interpreter's exit


if __name__ == "__main__":
    main()
