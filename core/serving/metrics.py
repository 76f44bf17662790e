"""The service's Prometheus metrics: plain counters on the hot path, one exposition for all workers.

Each worker counts in plain dicts (an increment costs ~0.1 us; prometheus_client's multiprocess
values cost ~10 us per request here, measured: a lock and an mmap write per increment). With
``lakeops serve --workers N`` the workers share a folder (``Settings.metrics_dir``): every worker
writes a snapshot of its counts there once a second (and at a scrape, its own at once), and a
scrape of any worker answers for all of them, the way prometheus_client's multiprocess mode does:

- counters and histograms are summed over every worker that ever ran under this server, dead
  ones included (a restarted worker must not make a counter go down);
- gauges are taken from live workers only: summed (WAL backlog), the minimum (``lake_ok``), or
  one series per worker with a ``worker`` label (the model version each worker serves, so a
  scrape shows whether every worker has hot-swapped);
- every series carries ``replica="<host>:<port>"`` (``[serving] replica``), so the series of
  several ``lakeops serve`` processes on one lake never merge.

Other workers' counts are at most ``PUBLISH_S`` old. The exposition itself (text format or
OpenMetrics, by the scrape's ``Accept``) is prometheus_client's.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["BUCKETS", "PUBLISH_S", "Gauges", "Metrics"]

_log = logging.getLogger("lakeops.serving")

BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PUBLISH_S = 1.0

Labels = tuple[tuple[str, str], ...]
Gauges = Mapping[str, tuple[str, str, Mapping[Labels, float]]]
"""Gauge name -> (help, aggregation across workers: ``sum``, ``min``, ``max`` or ``worker``, labels -> value)."""

_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("lakeops_requests_total", "HTTP requests answered, by route and status.", ("route", "status")),
    ("lakeops_errors_total", "Requests answered with a problem, by route and problem type.", ("route", "type")),
    ("lakeops_rows_scored_total", "Rows scored, by model.", ("model",)),
    ("lakeops_unknown_category_total",
     "Categorical values of a level the model never saw, scored as missing, by model and feature.", ("model", "feature")),
    ("lakeops_shadow_rows_total", "Rows scored by a shadow challenger, by model.", ("model",)),
    ("lakeops_shadow_errors_total", "Rows a shadow challenger failed to score, by model.", ("model",)),
    ("lakeops_shadow_dropped_total", "Rows not shadowed (the shadow queue was full), by model.", ("model",)),
    ("lakeops_feedback_rows_total", "Feedback labels accepted.", ()),
    ("lakeops_auth_failures_total",
     "Requests refused by authentication (missing, malformed, unknown, invalid, revoked, expired) or "
     "authorization (forbidden), by reason.", ("reason",)),
)


class Metrics:
    """Counters and a latency histogram of one worker, updated from the event loop (no locks needed there).

    Args:
        replica: the ``replica`` label of every series.
        shared_dir: the folder the workers of one server share (None: this worker only).
    """

    def __init__(self, replica: str = "", shared_dir: str | None = None) -> None:
        self.replica = replica
        self.shared_dir = Path(shared_dir) if shared_dir else None
        self.worker = f"pid{os.getpid()}"
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.rows_scored: dict[str, int] = defaultdict(int)
        self.feedback_rows = 0
        self.unknown_category: dict[tuple[str, str], int] = defaultdict(int)
        self.auth_failures: dict[str, int] = defaultdict(int)
        # staged rollouts (updated from the shadow thread too: += on an int is atomic enough under the GIL
        # for counters read by a scrape)
        self.shadow_rows: dict[str, int] = defaultdict(int)
        self.shadow_errors: dict[str, int] = defaultdict(int)
        self.shadow_dropped: dict[str, int] = defaultdict(int)
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._extra_counters: dict[str, tuple[str, dict[Labels, float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = _create_time(os.getpid())

    # ------------------------------------------------------------------ the hot path
    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one request of ``route`` answered with ``status`` after ``seconds``."""
        self.requests[(route, status)] += 1
        counts = self._hist.get(route)
        if counts is None:
            counts = self._hist[route] = [0] * (len(BUCKETS) + 1)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[route] += seconds

    def error(self, route: str, kind: str) -> None:
        """Count one refused or failed request by problem kind."""
        self.errors[(route, kind)] += 1

    def auth_failed(self, reason: str) -> None:
        """Count one request refused by authentication or authorization."""
        self.auth_failures[reason] += 1

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, gauges: Gauges, counters: Mapping[str, tuple[str, float]] | None = None) -> dict[str, Any]:
        """This worker's values as plain data (what it publishes for the other workers).

        Args:
            gauges: the service's gauges (name -> (help, aggregation, labels -> value)).
            counters: extra unlabelled counters of the service (name -> (help, value)).
        """
        series: dict[str, list[Any]] = {}
        sources: dict[str, Mapping[Any, int]] = {
            "lakeops_requests_total": {(r, str(s)): n for (r, s), n in self.requests.items()},
            "lakeops_errors_total": self.errors, "lakeops_rows_scored_total": self.rows_scored,
            "lakeops_unknown_category_total": self.unknown_category, "lakeops_shadow_rows_total": self.shadow_rows,
            "lakeops_shadow_errors_total": self.shadow_errors, "lakeops_shadow_dropped_total": self.shadow_dropped,
            "lakeops_feedback_rows_total": {(): self.feedback_rows}, "lakeops_auth_failures_total": self.auth_failures,
        }
        for name, _help, labels in _COUNTERS:
            values = dict(sources[name])  # a copy: the shadow thread may add keys meanwhile
            series[name] = [[list(zip(labels, k if isinstance(k, tuple) else (k,), strict=True)), v]
                            for k, v in values.items()]
        extra = {name: [help_, value] for name, (help_, value) in (counters or {}).items()}
        hist = {route: [list(c), self._sum[route]] for route, c in list(self._hist.items())}
        return {
            "pid": os.getpid(), "started": self._started, "worker": self.worker, "counters": series, "extra": extra,
            "hist": hist, "gauges": {n: [h, agg, [[list(k), v] for k, v in vals.items()]] for n, (h, agg, vals) in gauges.items()},
        }

    def publish(self, gauges: Gauges, counters: Mapping[str, tuple[str, float]] | None = None) -> None:
        """Write this worker's snapshot to the shared folder (atomically: temp file, then rename)."""
        if self.shared_dir is None:
            return
        data = msgspec.msgpack.encode(self.snapshot(gauges, counters))
        path = self.shared_dir / f"{os.getpid()}.mp"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def start_publishing(self, source: Callable[[], tuple[Gauges, Mapping[str, tuple[str, float]]]],
                         worker: str | None = None, changed: Callable[[], Any] | None = None) -> None:
        """Publish a snapshot every ``PUBLISH_S`` from a background thread (only with a shared folder),
        and within 0.1 s whenever ``changed()`` returns something new (a hot swap: the model version
        gauge of every worker should show it at once)."""
        if worker:
            self.worker = worker
        if self.shared_dir is None or self._thread is not None:
            return

        def loop() -> None:
            seen, due = None, 0.0
            while True:
                now = time.monotonic()
                mark = changed() if changed is not None else None
                if now >= due or mark != seen:
                    seen, due = mark, now + PUBLISH_S
                    try:
                        self.publish(*source())
                    except Exception:  # noqa: BLE001 - metrics must never stop serving
                        _log.exception("metrics: could not publish this worker's snapshot")
                if self._stop.wait(0.1):
                    return

        self._thread = threading.Thread(target=loop, name="lakeops-metrics", daemon=True)
        self._thread.start()

    def stop(self, last: tuple[Gauges, Mapping[str, tuple[str, float]]] | None = None) -> None:
        """Stop publishing; write a last snapshot (so the counts of a stopped worker stay in the sum)."""
        self._stop.set()
        if last is not None and self.shared_dir is not None:
            with contextlib.suppress(OSError):
                self.publish(*last)

    def _snapshots(self, own: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
        """(snapshot, live) of every worker: this one's fresh, the others' from the shared folder."""
        yield own, True
        if self.shared_dir is None:
            return
        for path in sorted(self.shared_dir.glob("*.mp")):
            if path.stem == str(os.getpid()):
                continue
            try:
                snap = msgspec.msgpack.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue  # being replaced right now: next scrape
            yield snap, _create_time(int(snap["pid"])) == snap["started"]

    # ------------------------------------------------------------------ exposition
    def render(self, gauges: Gauges, counters: Mapping[str, tuple[str, float]] | None = None,
               accept: str = "") -> tuple[bytes, str]:
        """The exposition for every worker of this server (see the module docstring).

        Returns:
            ``(body, content type)``: Prometheus text, or OpenMetrics when ``accept`` asks for it.
        """
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        own = self.snapshot(gauges, counters)
        if self.shared_dir is not None:
            with contextlib.suppress(OSError):
                self.publish(gauges, counters)  # so the next scrape of another worker sees this one fresh
        families = _aggregate(self._snapshots(own), self.replica)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(families))
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type


class _Collector:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def _create_time(pid: int) -> float | None:
    """A process's start time (tells a live worker from a reused pid), or None when it is gone."""
    import psutil

    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def _aggregate(snapshots: Iterator[tuple[dict[str, Any], bool]], replica: str) -> list[Any]:
    """Sum counters and histograms over every snapshot; combine live workers' gauges; add ``replica``."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.utils import floatToGoString

    counters: dict[str, dict[Labels, float]] = {name: {} for name, _, _ in _COUNTERS}
    helps = {name: help_ for name, help_, _ in _COUNTERS}
    hist: dict[str, list[Any]] = {}
    gauges: dict[str, tuple[str, str, dict[Labels, float]]] = {}
    for snap, live in snapshots:
        _add_counters(snap, counters, helps)
        for route, (counts, total) in snap["hist"].items():
            cur = hist.setdefault(route, [[0] * len(counts), 0.0])
            cur[0] = [a + b for a, b in zip(cur[0], counts, strict=True)]
            cur[1] += total
        if live:
            _add_gauges(snap, gauges)
    out: list[Any] = []
    for name, series in counters.items():
        fam = CounterMetricFamily(name, helps[name], labels=[*_label_names(series), "replica"])
        for labels, value in sorted(series.items()):
            fam.add_metric([*(v for _, v in labels), replica], value)
        out.append(fam)
    go_string: Callable[[float], str] = floatToGoString  # how Prometheus spells a bucket bound
    hfam = HistogramMetricFamily("lakeops_request_duration_seconds", "Time to answer a request, by route.",
                                 labels=["route", "replica"])
    for route, (counts, total) in sorted(hist.items()):
        cum, buckets = 0, []
        for bound, c in zip(BUCKETS, counts, strict=False):
            cum += c
            buckets.append((go_string(bound), cum))
        buckets.append(("+Inf", cum + counts[-1]))
        hfam.add_metric([route, replica], buckets, total)
    out.append(hfam)
    for name, (help_, _agg, series) in gauges.items():
        g = GaugeMetricFamily(name, help_, labels=[*_label_names(series), "replica"])
        for labels, value in sorted(series.items()):
            g.add_metric([*(v for _, v in labels), replica], value)
        out.append(g)
    return out


def _add_counters(snap: dict[str, Any], counters: dict[str, dict[Labels, float]], helps: dict[str, str]) -> None:
    """Add one worker's counters (labelled, and the service's unlabelled extras) to the sums."""
    for name, series in snap["counters"].items():
        acc = counters.setdefault(name, {})
        for labels, value in series:
            key = tuple((str(k), str(v)) for k, v in labels)
            acc[key] = acc.get(key, 0.0) + value
    for name, (help_, value) in snap.get("extra", {}).items():
        helps[name] = help_
        acc = counters.setdefault(name, {})
        acc[()] = acc.get((), 0.0) + value


def _add_gauges(snap: dict[str, Any], gauges: dict[str, tuple[str, str, dict[Labels, float]]]) -> None:
    """Combine one live worker's gauges: summed, min, max, or one series per worker (``worker``)."""
    for name, (help_, agg, series) in snap["gauges"].items():
        _, _, acc = gauges.setdefault(name, (help_, agg, {}))
        for labels, value in series:
            key = tuple((str(k), str(v)) for k, v in labels)
            if agg == "worker":
                acc[(*key, ("worker", str(snap["worker"])))] = value
            elif key not in acc:
                acc[key] = value
            else:
                acc[key] = {"sum": acc[key] + value, "min": min(acc[key], value), "max": max(acc[key], value)}[agg]


def _label_names(series: Mapping[Labels, float]) -> list[str]:
    first = next(iter(series), ())
    return [k for k, _ in first]
