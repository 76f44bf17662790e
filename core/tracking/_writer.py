"""The process-wide buffered writer of tracking data: one Delta commit per table per flush, for every run of the process (group commit)."""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from core.catalog import TS
from core.lake import Lake

__all__ = ["FLUSH_INTERVAL_S", "FLUSH_POINTS", "flush", "writer"]

FLUSH_INTERVAL_S = 1.0
"""The oldest buffered value is committed at most this many seconds after it was logged."""
FLUSH_POINTS = 50_000
"""A flush starts as soon as this many values are buffered (backpressure at 10x)."""
_IDLE_EXIT_S = 30.0


# ---------------------------------------------------------------------------- writer
class _Writer:
    """The process-wide buffer of one lake and its background committer (group commit)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.generation = 0  # bumped after every successful flush (search cache key)
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._clear()

    def _clear(self) -> None:
        self._rows: dict[str, list[dict[str, Any]]] = {"runs": [], "artifacts": []}
        self._kv: dict[str, tuple[list[str], list[str], list[str], list[int]]] = {
            "params": ([], [], [], []),
            "tags": ([], [], [], []),
        }
        self._metrics: tuple[list[str], list[str], list[float], list[int], list[int]] = ([], [], [], [], [])
        self._points = 0
        self._oldest: float | None = None

    # -- adding (called from logging threads; cheap) --
    def add_metrics(self, run_id: str, items: Iterable[tuple[str, float]], step: int) -> None:
        at = time.time_ns() // 1000
        r, k, v, s, a = self._metrics
        n = 0
        with self._cond:
            for key, value in items:
                r.append(run_id)
                k.append(key)
                v.append(value)
                s.append(step)
                a.append(at)
                n += 1
            self._added(n)

    def add_kv(self, table: str, run_id: str, items: Iterable[tuple[str, str]]) -> None:
        at = time.time_ns() // 1000
        r, k, v, a = self._kv[table]
        n = 0
        with self._cond:
            for key, value in items:
                r.append(run_id)
                k.append(key)
                v.append(value)
                a.append(at)
                n += 1
            self._added(n)

    def add_row(self, table: str, row: dict[str, Any]) -> None:
        with self._cond:
            self._rows[table].append(row)
            self._added(1)

    def _added(self, n: int) -> None:
        self._points += n
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lakeops-tracking-writer", daemon=True)
            self._thread.start()
        if self._points >= FLUSH_POINTS:
            self._cond.notify_all()
        if self._points >= 10 * FLUSH_POINTS:  # the committer fell behind: the logger waits
            self._cond.release()
            try:
                self.flush()
            finally:
                self._cond.acquire()

    # -- committing --
    def _take(self) -> dict[str, pa.Table | list[dict[str, Any]]]:
        with self._cond:
            if not self._points:
                return {}
            taken: dict[str, Any] = {}
            for table, (r, k, v, a) in self._kv.items():
                if r:
                    taken[table] = pa.table(
                        {
                            "run_id": pa.array(r, pa.string()),
                            "key": pa.array(k, pa.string()),
                            "value": pa.array(v, pa.string()),
                            "at": pa.array(a, TS),
                        }
                    )
            mr, mk, mv, ms, ma = self._metrics
            if mr:
                taken["metrics"] = pa.table(
                    {
                        "run_id": pa.array(mr, pa.string()),
                        "key": pa.array(mk, pa.string()),
                        "value": pa.array(mv, pa.float64()),
                        "step": pa.array(ms, pa.int64()),
                        "at": pa.array(ma, TS),
                    }
                )
            for table in ("artifacts", "runs"):
                if self._rows[table]:
                    taken[table] = self._rows[table]
            self._clear()
            return taken

    def _put_back(self, rest: dict[str, Any]) -> None:
        """Return rows of a failed flush to the front of the buffer (they are retried)."""
        with self._cond:
            for table, data in rest.items():
                if table in self._rows:
                    self._rows[table][:0] = data
                    self._points += len(data)
                    continue
                cols = data.to_pydict()
                cols["at"] = [int(t.timestamp() * 1_000_000) if t else None for t in cols["at"]]
                target: tuple[list[Any], ...] = self._metrics if table == "metrics" else self._kv[table]
                names = (
                    ["run_id", "key", "value", "step", "at"]
                    if table == "metrics"
                    else ["run_id", "key", "value", "at"]
                )
                for lst, name in zip(target, names, strict=True):
                    lst[:0] = cols[name]
                self._points += data.num_rows
            if self._points and self._oldest is None:
                self._oldest = time.monotonic()

    def flush(self) -> None:
        """Commit everything buffered: one append per table; raise if a commit fails."""
        with self._flush_lock:
            taken = self._take()
            order = [t for t in ("params", "tags", "metrics", "artifacts", "runs") if t in taken]
            for i, table in enumerate(order):
                try:
                    self.lake.append(table, taken[table], metadata={"component": "tracking"})
                except BaseException as exc:
                    self._put_back({t: taken[t] for t in order[i:]})
                    self._error = exc
                    raise
            if taken:
                self._error = None
                with self._cond:
                    self.generation += 1

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                wait = FLUSH_INTERVAL_S
                if self._oldest is not None:
                    wait = max(0.0, FLUSH_INTERVAL_S - (time.monotonic() - self._oldest))
                if self._points < FLUSH_POINTS:
                    self._cond.wait(timeout=wait)
                due = self._points and (
                    self._points >= FLUSH_POINTS
                    or (self._oldest is not None and time.monotonic() - self._oldest >= FLUSH_INTERVAL_S)
                )
                if not self._points and time.monotonic() - idle_since > _IDLE_EXIT_S:
                    self._thread = None
                    return
            if due:
                idle_since = time.monotonic()
                try:
                    self.flush()
                except Exception as exc:  # noqa: BLE001 - kept, retried, raised by the next flush()
                    sys.stderr.write(f"lakeops: tracking flush failed, will retry: {exc}\n")
                    time.sleep(FLUSH_INTERVAL_S)


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def writer(lake: Lake) -> _Writer:
    """Return the (shared) buffered writer of ``lake``."""
    with _writers_lock:
        w = _writers.get(lake.uri)
        if w is None:
            w = _writers[lake.uri] = _Writer(lake)
        return w


def flush(lake: Lake | None = None) -> None:
    """Commit every buffered run row, param, tag, metric and artifact record now.

    Args:
        lake: flush only this lake's buffer; None flushes every lake this process logged to.

    Raises:
        LakeError: a commit failed (its rows stay buffered and are retried on the next flush).
    """
    with _writers_lock:
        targets = [w for w in _writers.values() if lake is None or w.lake.uri == lake.uri]
    for w in targets:
        w.flush()


@atexit.register
def _flush_at_exit() -> None:
    try:
        flush()
    except Exception as exc:  # noqa: BLE001 - nothing to raise to at exit
        sys.stderr.write(f"lakeops: tracking data not saved at exit: {exc}\n")
