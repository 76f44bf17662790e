"""The pool of SQL worker processes of this process, and one exchange with a worker.

A query runs in a worker (``core.sql._worker``) so that nothing it does can take the calling
process down: this side stops the worker when the query passes its deadline (even when DuckDB
cannot be interrupted) or when the worker's anonymous memory grows more than the query's bound
(DuckDB's ``memory_limit`` does not cover every allocation: ``repeat('x', 2000000000)`` built a
4 GB value outside it). At most ``MAX_WORKERS`` queries run at once; an idle worker is reused,
a stopped one replaced.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.errors import SqlError

__all__ = ["MAX_WORKERS", "Limits", "Worker", "acquire", "exchange", "parse_size", "release", "size_text"]

MAX_WORKERS = 2  # queries at once per process; more wait for a free worker
_START_S = 60.0  # a worker has this long to start (imports) and register the tables
_POLL_S = 0.02  # how often a running query's worker memory is checked


def _grace(timeout_s: float) -> float:
    """After ``timeout_s`` the worker interrupts the query itself; past this much more it is killed
    (a query DuckDB cannot interrupt, e.g. one building a single huge value, or one stuck)."""
    return min(10.0, max(2.0, timeout_s))


def _anon_bytes(pid: int) -> int | None:
    """Anonymous resident memory of ``pid`` (heap, DuckDB's buffers, Arrow arrays), Linux only."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:  # noqa: PTH123 - hot loop: plain open
            for line in fh:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class Worker:
    """A worker process and its two pipes."""

    def __init__(self) -> None:
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        root = str(Path(__file__).resolve().parents[1])  # the checkout this module came from
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        code = "import sys; from core.sql._worker import main; main(int(sys.argv[1]), int(sys.argv[2]))"
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-c", code, str(req_r), str(res_w)],
                pass_fds=(req_r, res_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env=env,
            )
        finally:
            os.close(req_r)
            os.close(res_w)
        self.tx = Connection(req_w, readable=False)
        self.rx = Connection(res_r, writable=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        for conn in (self.tx, self.rx):
            try:
                conn.close()
            except OSError:
                pass

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.close()


_pool_lock = threading.Lock()
_idle: list[Worker] = []
_slots = threading.BoundedSemaphore(MAX_WORKERS)
_pool_pid = os.getpid()


def acquire(wait_s: float) -> Worker:
    global _pool_pid
    if not _slots.acquire(timeout=wait_s):
        raise SqlError(f"{MAX_WORKERS} queries are already running in this process; try again when one ends")
    try:
        with _pool_lock:
            if _pool_pid != os.getpid():  # a forked child must not share its parent's workers
                _idle.clear()
                _pool_pid = os.getpid()
            while _idle:
                worker = _idle.pop()
                if worker.alive():
                    return worker
                worker.kill()
        return Worker()
    except BaseException:
        _slots.release()
        raise


def release(worker: Worker, healthy: bool) -> None:
    if healthy and worker.alive():
        with _pool_lock:
            _idle.append(worker)
    else:
        worker.kill()
    _slots.release()


@atexit.register
def _close_pool() -> None:
    with _pool_lock:
        for worker in _idle:
            worker.close()  # EOF on its request pipe: it exits
        _idle.clear()


def parse_size(text: str) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1.5 GB"`` as bytes (DuckDB's spelling: GB = 1000^3, GiB = 1024^3)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, flags=re.IGNORECASE)
    if m is None:
        raise SqlError(f"memory_limit {text!r} is not a size such as '2GB' or '512MiB'")
    unit = (m[2] or "B").upper()
    base = 1024 if "I" in unit else 1000
    return int(float(m[1]) * base ** "BKMGT".index(unit[0]))


def size_text(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@dataclass(frozen=True)
class Limits:
    memory_limit: str
    threads: int
    timeout_s: float
    max_rows: int | None
    max_bytes: int | None



def exchange(
    worker: Worker, payload: bytes, bound: int, limits: Limits, sink: Callable[[pa.RecordBatchReader], None]
) -> dict[str, Any]:
    """Send one job and read its answer (the final message as a dict with its ``tag``).

    Raises ``SqlError`` after killing the worker when the query passes the deadline or the
    memory bound, or when the worker died.
    """
    pid = worker.proc.pid
    base = _anon_bytes(pid)
    deadline = time.monotonic() + _START_S + limits.timeout_s
    try:
        worker.tx.send_bytes(payload)
    except OSError:
        raise SqlError("the SQL worker process could not be reached; run the query again") from None
    while True:
        ready = worker.rx.poll(_POLL_S)
        used = _anon_bytes(pid)
        if base is not None and used is not None and used - base > bound:
            worker.kill()
            raise SqlError(
                f"the query used more than {size_text(bound)} of memory and was stopped (memory_limit "
                f"{limits.memory_limit!r}, [sql] memory_limit in lakeops.toml); filter or aggregate more"
            )
        if not ready:
            if time.monotonic() > deadline:
                worker.kill()
                raise SqlError(f"the query ran longer than {limits.timeout_s:g} s and was stopped")
            continue
        try:
            msg = worker.rx.recv_bytes()
        except (EOFError, OSError):
            worker.kill()
            raise SqlError(
                f"the SQL worker process ended (exit code {worker.proc.returncode}) before the query finished"
            ) from None
        tag, body = msg[:1], msg[1:]
        if tag == b"B":
            sink(pa.ipc.open_stream(body))
        elif tag == b"S":  # the query started: its clock starts now
            deadline = time.monotonic() + limits.timeout_s + _grace(limits.timeout_s)
        else:
            return {"tag": tag.decode(), **json.loads(body)}
