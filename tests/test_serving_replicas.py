"""Several API processes on one lake: `serve --workers N` (local and s3://) and two replicas, one SIGKILLed.

Every acknowledged prediction must be logged exactly once, no id twice, every worker and replica
must hot-swap on a promotion, and /metrics must answer for all workers of a server.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import polars as pl
import pytest

from core import registry
from core.config import Settings
from core.flows.promote import promote
from core.lake import Lake
from tests.test_serving_support import (
    ProcessServer,
    build_champion_lake,
    champion_lake_path,
    copy_lake,
    demo_rows,
    metric,
    wait_for,
)

PREDICT = "/v1/models/churn/predict"
POLL_S = 0.5


@dataclass
class Load:
    """Bounded concurrent traffic: ``threads`` clients of ``requests`` each; what was acknowledged."""

    url: str
    threads: int
    requests: int
    rows: int = 2
    acked: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, seed: int) -> None:
        body = demo_rows(self.rows, seed=seed)
        with httpx.Client(base_url=self.url, timeout=10) as c:
            for _ in range(self.requests):
                if self.stop.is_set():
                    return
                try:
                    r = c.post(PREDICT, json=body)
                except httpx.HTTPError:
                    with self._lock:
                        self.failures += 1
                    continue
                if r.status_code != 200:
                    with self._lock:
                        self.failures += 1
                    continue
                out = r.json()
                with self._lock:
                    self.acked += out["prediction_ids"]
                    self.versions.append(out["version"])
                    self.answered_at.append(time.monotonic())

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def join(self) -> Load:
        for t in self._threads:
            t.join(timeout=120)
        return self


def _config(tmp_path: Path, **extra: object) -> Path:
    cfg = tmp_path / "lakeops.toml"
    lines = ["[serving]", f'wal_dir = "{tmp_path / "wal"}"', "flush_interval_s = 0.3", f"poll_interval_s = {POLL_S}"]
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _logged_once(lake: Lake, acked: list[str]) -> None:
    ids = lake.read("predictions/churn", columns=["prediction_id"])["prediction_id"]
    assert ids.n_unique() == ids.len(), "an id was logged twice"
    got = ids.filter(ids.is_in(pl.Series(acked).implode()))
    assert got.len() == len(acked) == len(set(acked)), (got.len(), len(acked))


def _swap_seconds(url: str, version: int, workers: int, t0: float) -> float:
    """Seconds from ``t0`` until every worker of ``url`` serves ``version`` (its /metrics, per worker)."""

    def swapped() -> bool:
        text = httpx.get(url + "/metrics", timeout=10).text
        served = [s for s in text.splitlines() if s.startswith("lakeops_model_version{")]
        return len(served) == workers and all(s.endswith(f" {float(version)}") for s in served)

    wait_for(swapped, timeout=20 * POLL_S, interval=0.05)
    return time.monotonic() - t0


def _workers_case(lake: Lake, lake_uri: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    server = ProcessServer(lake_uri, _config(tmp_path), workers=2, env=env).start()
    try:
        _swap_seconds(server.url, 1, 2, time.monotonic())  # both workers are up (each publishes its gauges)
        load = Load(server.url, threads=4, requests=40).start().join()
        assert load.failures == 0 and len(load.acked) == 4 * 40 * 2
        # /metrics answers for both workers (each scrape lands on either one): counts summed, replica labelled
        expect = float(len(load.acked))
        for _ in range(6):
            text = wait_for(lambda: (t := httpx.get(server.url + "/metrics").text)
                            and metric(t, "lakeops_rows_scored_total", model="churn") == expect and t, timeout=10)
            replica = f"{socket.gethostname()}:{server.port}"
            assert metric(text, "lakeops_rows_scored_total", model="churn", replica=replica) == expect
            workers = {ln.split('worker="')[1].split('"')[0] for ln in text.splitlines()
                       if ln.startswith("lakeops_model_version{")}
            assert workers == {"w0", "w1"}, text
            assert metric(text, "lakeops_requests_total", route="/v1/models/{name}/predict", status="200") == 160
        promote("churn", 2, reason="replicas test", actor="tester", force=True, lake=lake, settings=Settings(lake_uri=lake.uri, actor="tester"))
        t0 = time.monotonic()  # the promotion is committed
        print(f"both workers serve v2 {_swap_seconds(server.url, 2, 2, t0):.2f} s after the promotion (poll {POLL_S} s)")
        after = Load(server.url, threads=4, requests=10).start().join()
        assert set(after.versions) == {2}
        load.acked += after.acked
    finally:
        server.stop()
    _logged_once(lake, load.acked)


def test_workers_on_a_local_lake(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    _workers_case(Lake(str(lake_path)), str(lake_path), tmp_path)


@pytest.mark.s3
@pytest.mark.slow
def test_workers_on_an_s3_lake(tmp_path, s3_server):
    bucket = s3_server.create_bucket("replicas")
    uri = f"s3://{bucket}/lake"
    lake = build_champion_lake(Lake(uri, s3_server.options))
    env = {"LAKEOPS_S3_ENDPOINT": s3_server.endpoint, "LAKEOPS_S3_ACCESS_KEY": "testing",
           "LAKEOPS_S3_SECRET_KEY": "testing", "LAKEOPS_S3_REGION": "us-east-1", "LAKEOPS_S3_ALLOW_HTTP": "true"}
    _workers_case(lake, uri, tmp_path, env)


@pytest.mark.slow
def test_two_replicas_one_killed_under_load_lose_nothing_and_both_swap(tmp_path, tmp_path_factory, settings):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    lake = Lake(str(lake_path))
    cfg = _config(tmp_path)  # one config, one WAL root: each replica claims its own slot folder
    a = ProcessServer(lake_path, cfg).start()
    b = ProcessServer(lake_path, cfg).start()
    acked: list[str] = []
    try:
        first = [Load(s.url, threads=2, requests=2000).start() for s in (a, b)]  # stopped below
        time.sleep(0.5)
        promote("churn", 2, reason="two replicas", actor="tester", force=True, lake=lake, settings=settings)
        t0 = time.monotonic()  # the promotion is committed
        swaps: dict[int, float] = {}
        watchers = [threading.Thread(target=lambda s=s: swaps.__setitem__(s.port, _swap_seconds(s.url, 2, 1, t0)))
                    for s in (a, b)]
        for w in watchers:
            w.start()
        for w in watchers:
            w.join()
        assert len(swaps) == 2  # both replicas swap while under load
        print(f"replicas serve v2 {', '.join(f'{v:.2f}' for v in swaps.values())} s after the promotion")
        time.sleep(0.3)
        for load in first:
            load.stop.set()
            load.join()
        first_v2 = [next(t for t, v in zip(ld.answered_at, ld.versions, strict=True) if v == 2) - t0 for ld in first]
        print(f"first answer by v2 {', '.join(f'{x:.2f}' for x in first_v2)} s after the promotion (poll {POLL_S} s)")
        for load in first:
            assert load.failures == 0 and load.versions[-1] == 2 and set(load.versions) == {1, 2}
            acked += load.acked
        second = [Load(s.url, threads=2, requests=200).start() for s in (a, b)]
        wait_for(lambda: len(second[0].acked) >= 100)  # a is in the middle of its traffic...
        a.kill()  # ...when it is SIGKILLed: what it acknowledged is only in its WAL
        for load in second:
            load.join()
        assert second[0].failures > 0 and second[1].failures == 0  # b never noticed
        acked += second[0].acked + second[1].acked
        a = ProcessServer(lake_path, cfg, port=a.port).start()  # a restarted: it replays its slot
        for s in (a, b):
            wait_for(lambda s=s: httpx.get(s.url + "/ready").json()["wal_backlog_bytes"] == 0, timeout=60)
    finally:
        a.stop()
        b.stop()
    _logged_once(lake, acked)
    versions = lake.read("predictions/churn", columns=["model_version"])["model_version"]
    assert set(versions.to_list()) == {1, 2}
    assert registry.champion_version("churn", lake) == 2
