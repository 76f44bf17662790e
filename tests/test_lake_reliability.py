"""Reliability of the lake under concurrent writers, SIGKILLed writers, and of CLI exit codes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from core.ids import utcnow
from core.lake import Lake

_SCHEMA = """
import pyarrow as pa
SCHEMA = pa.schema([
    pa.field("batch_id", pa.string(), nullable=False),
    pa.field("writer", pa.int64()),
    pa.field("row", pa.int64()),
    pa.field("x", pa.float64()),
])
"""

CONCURRENT_WRITER = (
    _SCHEMA
    + """
import sys, time, pathlib
from core.lake import Lake
uri, w, n, rows, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lake = Lake(uri)
print("ready", flush=True)
while not pathlib.Path(go).exists():
    time.sleep(0.002)
for i in range(n):
    batch = pa.table({"batch_id": [f"{w}-{i}"] * rows, "writer": [w] * rows, "row": list(range(rows)),
                      "x": [float(i)] * rows})
    lake.append("data/conc", batch, schema=SCHEMA, metadata={"actor": f"writer-{w}"})
print("done", flush=True)
"""
)

BIG_WRITER = (
    _SCHEMA
    + """
import sys
import numpy as np
from core.lake import Lake
from core.ids import new_id
uri, rows = sys.argv[1], int(sys.argv[2])
lake = Lake(uri)
rng = np.random.default_rng()
print("ready", flush=True)
while True:
    bid = new_id()
    batch = pa.table({"batch_id": pa.array([bid] * rows), "writer": np.full(rows, 0), "row": np.arange(rows),
                      "x": rng.random(rows)})
    lake.append("data/crash", batch, schema=SCHEMA)
    print("committed", bid, flush=True)
"""
)


def _python(script: str, *args: object, **kw: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        **kw,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_four_processes_appending_at_once_lose_and_duplicate_nothing(tmp_path: Path):
    uri, go, writers, appends, rows = tmp_path / "lake", tmp_path / "go", 4, 200, 3
    procs = [_python(CONCURRENT_WRITER, uri, w, appends, rows, go) for w in range(writers)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.touch()  # all start together, and race to create the table too
    for p in procs:
        out, err = p.communicate(timeout=280)
        assert p.returncode == 0 and out.strip() == "done", err[-2000:]
    lake = Lake(uri)
    frame = lake.read("data/conc")
    assert frame.height == writers * appends * rows
    per_batch = frame.group_by("batch_id").agg(pl.len().alias("n"), pl.col("row").n_unique().alias("u"))
    assert per_batch.height == writers * appends
    assert per_batch["n"].to_list() == [rows] * per_batch.height  # no batch twice, none partial
    assert per_batch["u"].min() == rows
    expected = {f"{w}-{i}" for w in range(writers) for i in range(appends)}
    assert set(per_batch["batch_id"].to_list()) == expected
    assert lake.version("data/conc") == writers * appends  # version 0 is the create: one commit each


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_writer_killed_mid_write_20_times_leaves_only_whole_batches(tmp_path: Path):
    uri, rows = tmp_path / "lake", 200_000
    acknowledged: list[str] = []
    rng = random.Random(7)
    for _ in range(20):
        p = _python(BIG_WRITER, uri, rows)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(rng.uniform(0.05, 0.9))
        p.send_signal(signal.SIGKILL)
        out, _err = p.communicate(timeout=30)
        assert p.returncode == -signal.SIGKILL
        acknowledged += [line.split()[1] for line in out.splitlines() if line.startswith("committed ")]
    lake = Lake(uri)
    assert lake.exists("data/crash"), "no writer ever committed: the kills came too early"
    frame = lake.read("data/crash")
    counts = frame.group_by("batch_id").agg(pl.len().alias("n"))
    assert counts["n"].to_list() == [rows] * counts.height  # whole batches only
    assert set(acknowledged) <= set(counts["batch_id"].to_list())  # every acknowledged batch is there
    assert lake.version("data/crash") == counts.height  # one commit per batch, none lost in the log
    # the next writer works, in a fresh process as well as here
    before = counts.height
    p = _python(BIG_WRITER, uri, 10)
    assert p.stdout.readline().strip() == "ready"
    assert p.stdout.readline().startswith("committed ")
    p.kill()
    p.communicate(timeout=30)
    assert lake.append("data/crash", [{"batch_id": "last", "row": 0}]) >= before + 2
    assert Lake(uri).read("data/crash").filter(pl.col("batch_id") == "last").height == 1


def _lakeops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lakeops", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cli_exit_codes_are_trustworthy_30_times(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    lake.append("feedback", [{"prediction_id": f"p{i}", "label": 1.0, "at": utcnow()} for i in range(7)])
    ok = ["--lake", lake.uri, "sql", "select count(*) as n from feedback"]
    bad = ["--lake", lake.uri, "sql", "select * from nosuch"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        oks = list(pool.map(lambda _: _lakeops(*ok), range(30)))
        bads = list(pool.map(lambda _: _lakeops(*bad), range(10)))
    assert [r.returncode for r in oks] == [0] * 30, [r.stderr for r in oks if r.returncode]
    assert all(r.stdout.splitlines()[2].strip() == "7" and r.stderr == "" for r in oks)
    assert [r.returncode for r in bads] == [2] * 10, [r.stderr for r in bads if r.returncode != 2]
    for r in bads:
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("lakeops: error:") and "nosuch" in lines[0]
        assert r.stdout == ""
    assert lake.version("feedback") == 1


def test_cli_process_ends_with_os_exit_after_flushing(tmp_path: Path):
    """The CLI entry point ends with os._exit (LAKE-FACTS: deltalake may abort at exit with 134)."""
    lake = Lake(tmp_path / "lake")
    lake.append("feedback", [{"prediction_id": "p", "at": utcnow()}])
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('atexit ran\\n'))\n"
        "from core.cli import main\n"
        f"main(['--lake', {lake.uri!r}, 'sql', 'select count(*) as n from feedback', '--format', 'csv'])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert r.returncode == 0
    assert r.stdout == "n\n1\n"  # flushed before the exit
    assert "atexit ran" not in r.stderr  # interpreter teardown (where the abort happens) is skipped
