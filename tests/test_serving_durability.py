from __future__ import annotations

import shutil
import threading
import time

import httpx
import msgspec
import numpy as np
import polars as pl
import pytest

from core import cli
from core.lake import Lake
from core.serving.app import create_app
from core.serving.predlog import PredictionLog
from core.serving.wal import WriteAheadLog, claim_slot, segments
from tests.test_serving_support import (
    ProcessServer,
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    serving_settings,
    wait_for,
)

PREDICT = "/v1/models/churn/predict"


def _fire(url: str, rows: list[dict], acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            try:
                r = c.post(PREDICT, json=rows)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                acked.extend(r.json()["prediction_ids"])


def test_sigkill_under_load_loses_no_acknowledged_prediction(tmp_path, tmp_path_factory, capsys):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    config = tmp_path / "lakeops.toml"
    config.write_text(f'[serving]\nwal_dir = "{tmp_path / "wal"}"\nflush_interval_s = 0.3\npoll_interval_s = 0.5\n')
    server = ProcessServer(lake_path, config).start()
    acked: list[str] = []
    stop = threading.Event()
    rows = demo_rows(3)
    threads = [threading.Thread(target=_fire, args=(server.url, rows, acked, stop)) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) > 300, timeout=60, interval=0.02)
        server.kill()  # SIGKILL under load: some rows are in the WAL only
        n_acked = len(acked)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert len(acked) == n_acked  # nothing answered after the kill
        leftover = [p for p in (tmp_path / "wal").rglob("seg-*.wal") if p.stat().st_size]
        lake = Lake(str(lake_path))
        before = set(lake.read("predictions/churn", columns=["prediction_id"])["prediction_id"].to_list()) if lake.exists("predictions/churn") else set()
        assert leftover and set(acked) - before  # some acknowledged rows were only in the WAL
        restarted = ProcessServer(lake_path, config, port=server.port).start()
        try:
            with httpx.Client(base_url=restarted.url, timeout=10) as c:  # traffic right after the restart
                for _ in range(5):
                    acked.extend(c.post(PREDICT, json=rows).json()["prediction_ids"])
            wait_for(lambda: httpx.get(restarted.url + "/ready").json()["wal_backlog_bytes"] == 0, timeout=60)
        finally:
            restarted.stop()
    finally:
        stop.set()
        server.stop()
    frame = Lake(str(lake_path)).read("predictions/churn", columns=["prediction_id"])
    ids = frame["prediction_id"]
    assert ids.n_unique() == ids.len()  # none twice
    assert set(acked) <= set(ids.to_list())  # every acknowledged one is there
    # the walking skeleton: the prediction log is visible to `lakeops sql`
    capsys.readouterr()
    assert cli.run(["--lake", str(lake_path), "sql", "select count(*) as n from predictions"]) == 0
    assert str(ids.len()) in capsys.readouterr().out


def test_segment_committed_before_a_crash_is_not_replayed_twice(tmp_path, tmp_path_factory):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=True)
    X = np.array([[30.0, 0.0], [40.0, np.nan]])
    record = {"k": "p", "m": "churn", "v": 1, "at": time.time_ns() // 1000, "lat": 1.0, "thr": 0.5,
              "ids": ["id-a", "id-b"], "s": np.array([0.1, 0.9]).tobytes(), "X": X.tobytes(),
              "fn": ["age", "plan"], "cat": {"plan": ["basic", None]}}
    wal.write(msgspec.msgpack.encode(record))
    wal.write(msgspec.msgpack.encode({"k": "f", "m": "churn", "at": time.time_ns() // 1000, "src": "api",
                                      "ids": ["id-a"], "labels": [1.0]}))
    sealed = wal.seal()
    assert sealed is not None
    saved = sealed.read_bytes()
    log = PredictionLog(lake, wal, interval_s=10, actor="tester")
    assert log.flush() == 3 and not sealed.exists()
    sealed.write_bytes(saved)  # as if the process died after the commits, before deleting the file
    wal.close()
    slot.close()

    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=True)
    log = PredictionLog(lake, wal, interval_s=10, actor="tester")  # leftover segments are "uncertain"
    assert log.flush() == 0 and not segments(slot.path)[:-1]
    preds = lake.read("predictions/churn").filter(pl.col("prediction_id").is_in(["id-a", "id-b"]))
    assert sorted(preds["prediction_id"].to_list()) == ["id-a", "id-b"]
    b = preds.filter(pl.col("prediction_id") == "id-b").row(0, named=True)
    assert b["features"]["plan"] is None and b["features"]["age"] == 40.0 and b["predicted_label"] == 1 and b["score"] == 0.9
    assert lake.read("feedback").filter(pl.col("prediction_id") == "id-a").height == 1
    wal.close()
    slot.close()


def test_lake_unavailable_keeps_answering_then_not_ready_then_catches_up(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    settings = serving_settings(lake_path, tmp_path / "wal", wal_max_bytes=20_000)
    app = create_app(settings)
    away = tmp_path / "lake.away"
    acked: list[str] = []
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        wait_for(lambda: c.get("/ready").status_code == 200)
        lake_path.rename(away)
        lake_path.write_text("the lake is gone")  # every path under it now fails with ENOTDIR
        try:
            rows = demo_rows(20)
            for _ in range(30):
                r = c.post(PREDICT, json=rows)
                assert r.status_code == 200, r.text
                acked += r.json()["prediction_ids"]
            # the flusher notices the lake is gone at its next attempt (requests may all be done by then)
            ready = wait_for(
                lambda: (r := c.get("/ready")).status_code == 503 and not r.json()["lake_ok"] and r.json(), timeout=20
            )
            assert ready["wal_backlog_bytes"] > 20_000 and ready["lake_ok"] is False
            assert "backlog" in ready["reasons"][0]
        finally:
            lake_path.unlink()
            away.rename(lake_path)
        wait_for(lambda: c.get("/ready").status_code == 200, timeout=40)
    frame = Lake(str(lake_path)).read("predictions/churn", columns=["prediction_id"])
    got = frame.filter(pl.col("prediction_id").is_in(acked))["prediction_id"]
    assert got.len() == len(acked) == got.n_unique()


def test_serve_refuses_bad_arguments_with_one_line(capsys, tmp_path):
    assert cli.run(["--lake", str(tmp_path / "lake"), "serve", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[serving]\nunknown_category = "guess"\n')
    assert cli.run(["--lake", str(tmp_path / "lake"), "--config", str(cfg), "serve"]) == 2
    assert "unknown_category" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_stray_dirs(tmp_path):
    yield
    shutil.rmtree(tmp_path / "lake.away", ignore_errors=True)


def test_wal_write_mode_writes_inline_and_fsyncs_in_the_background(tmp_path):
    from core.serving.config import serving_config
    from core.serving.wal import read_segment

    cfg = serving_config(serving_settings(tmp_path / "lake", tmp_path / "wal"))
    assert cfg.wal_sync == "write" and cfg.wal_fsync_interval_s == 0.2  # the defaults
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=0.05)
    try:
        assert wal.submit(msgspec.msgpack.encode({"k": "f", "n": 1})) is None  # nothing to await
        active = segments(slot.path)[-1]
        assert read_segment(active) == [{"k": "f", "n": 1}]  # in the file before submit returned
        wait_for(lambda: wal.fsyncs >= 1, timeout=5, interval=0.02)
        synced = wal.fsyncs
        time.sleep(0.2)
        assert wal.fsyncs == synced  # nothing new written: no extra fsync
        wal.write(msgspec.msgpack.encode({"k": "f", "n": 2}))
        sealed = wal.seal()
        assert sealed == active and [r["n"] for r in read_segment(sealed)] == [1, 2]
        assert wal.backlog_bytes == sealed.stat().st_size
    finally:
        wal.close()
        slot.close()
