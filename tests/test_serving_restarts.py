"""Restarts with traffic before and after each one: every acknowledged prediction lands exactly once.

A segment's identity must be unique across process lifetimes: a counter that restarts with each
process made the first segment after a restart look "already committed" (issue 19).
"""

from __future__ import annotations

import time

import httpx
import polars as pl

from core.lake import Lake
from tests.test_serving_support import ProcessServer, champion_lake_path, copy_lake, demo_rows, wait_for

PREDICT = "/v1/models/churn/predict"


def _send(url: str, rows: list[dict], acked: list[str], n: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(n):
            r = c.post(PREDICT, json=rows)
            assert r.status_code == 200, r.text
            acked.extend(r.json()["prediction_ids"])


def test_restarts_with_traffic_before_and_after_lose_nothing(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    config = tmp_path / "lakeops.toml"
    config.write_text(f'[serving]\nwal_dir = "{tmp_path / "wal"}"\nflush_interval_s = 0.3\npoll_interval_s = 0.5\n')
    rows = demo_rows(1)
    acked: list[str] = []
    cycle_of: dict[str, int] = {}
    port = None
    # (workers, how the run ends): a 2-worker run on the slots a 1-worker run used, and a SIGKILL
    for workers, end in [(1, "term"), (1, "kill"), (2, "term"), (2, "kill"), (1, "term")]:
        server = ProcessServer(lake_path, config, port=port, workers=workers).start()
        port = server.port
        try:
            _send(server.url, rows, acked, 3)  # the first segment of this process
            time.sleep(1.0)  # ... is sealed and committed by now
            _send(server.url, demo_rows(2, seed=len(acked)), acked, 3)
            time.sleep(0.8)
            _send(server.url, rows, acked, 2)  # and some still only in the WAL at the end
            for i in acked:
                cycle_of.setdefault(i, len({*cycle_of.values()}))
        finally:
            if end == "kill":
                server.kill()
            else:
                server.stop()
    last = ProcessServer(lake_path, config, port=port).start()
    try:
        wait_for(lambda: httpx.get(last.url + "/ready").json()["wal_backlog_bytes"] == 0, timeout=60)
    finally:
        last.stop()
    ids = Lake(str(lake_path)).read("predictions/churn", columns=["prediction_id"])["prediction_id"]
    got = ids.filter(ids.is_in(pl.Series(acked).implode()))
    missing = sorted(set(acked) - set(got.to_list()))
    assert not missing, [(m, cycle_of.get(m)) for m in missing]
    assert got.len() == len(acked) == got.n_unique() == 5 * (3 + 6 + 2)  # all there, each once
