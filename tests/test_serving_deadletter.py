"""A prediction-log writer that cannot fail silently: uncommittable segments, dead letters, alerts, replay."""

from __future__ import annotations

import json
import time

import httpx
import msgspec
import numpy as np
import polars as pl

from core import cli
from core.lake import Lake
from core.serving.app import create_app
from core.serving.predlog import PredictionLog, dead_letters
from core.serving.wal import MAGIC, WriteAheadLog, claim_slot, frame
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    serving_settings,
    wait_for,
)

_pack = msgspec.msgpack.encode
PREDICT = "/v1/models/churn/predict"


def _bad_segment(path, lake_id=None) -> None:
    """A sealed segment whose prediction record can never become rows (ids cut short)."""
    head = _pack({"k": "s", "fmt": 2, "lake": lake_id, "slot": "x", "epoch": "0"})
    rec = _pack(["q", "churn", 1, time.time_ns() // 1000, 1.0, 2, b"too-short", np.zeros(2).tobytes(),
                 np.zeros(32).tobytes(), None])
    path.write_bytes(MAGIC + frame(head) + frame(rec))


def _good(wal: WriteAheadLog, ids: list[str]) -> None:
    wal.write(_pack({"k": "f", "m": "churn", "at": time.time_ns() // 1000, "src": "api", "ids": ids,
                     "labels": [1.0] * len(ids)}))


def test_a_bad_segment_is_dead_lettered_once_later_ones_commit_and_alerts(tmp_path, tmp_path_factory):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None, lake_id=lake.lake_id)
    calls: list[tuple[str | None, dict]] = []
    log = PredictionLog(lake, wal, interval_s=60, actor="tester", dead_letter_after=2,
                        alert=lambda m, e: calls.append((m, e)))
    try:
        _bad_segment(slot.path / "seg-00000000000000000000000000000000-000001.wal", lake.lake_id)
        _good(wal, ["a"])
        assert log.flush() == 1  # the bad one fails, the later one still lands
        assert list(log.failing) == ["seg-00000000000000000000000000000000-000001.wal"]
        assert "malformed ids" in log.failing["seg-00000000000000000000000000000000-000001.wal"]["error"]
        _good(wal, ["b"])
        assert log.flush() == 1  # second failure, and a commit since the first: proven, moved aside
        assert not log.failing
        letters = dead_letters(tmp_path / "wal")
        assert len(letters) == 1 and letters[0].kind == "uncommittable" and "malformed ids" in letters[0].error
        assert calls and calls[0][0] is not None and "dead-letter" in calls[0][0]  # alert opened
        _good(wal, ["c"])
        log.flush()
    finally:
        wal.close()
        slot.close()
    assert sorted(lake.read("feedback")["prediction_id"].to_list()) == ["a", "b", "c"]
    note = json.loads(letters[0].path.with_suffix(".json").read_text())
    assert note["segment"].endswith("-000001.wal") and note["attempts"] == 2


def test_when_every_segment_fails_nothing_is_moved_and_the_alert_opens(tmp_path, tmp_path_factory):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None)
    calls: list = []
    log = PredictionLog(lake, wal, interval_s=60, actor="tester", dead_letter_after=2,
                        alert=lambda m, e: calls.append(m))
    try:
        for k in range(3):
            _bad_segment(slot.path / f"seg-00000000000000000000000000000000-00000{k}.wal")
            log.flush()
    finally:
        wal.close()
        slot.close()
    assert not dead_letters(tmp_path / "wal") and len(log.failing) == 3  # kept: the lake might be the cause
    assert calls and "cannot commit WAL segment" in calls[0]


def test_another_lakes_segment_is_refused_kept_and_replays_into_its_own_lake(tmp_path, tmp_path_factory):
    a = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "a")))
    b = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "b")))
    (tmp_path / "b" / "_lakeops").mkdir(exist_ok=True)
    (tmp_path / "b" / "_lakeops" / "lake_id").write_text("lake-b")  # a copied lake keeps its id: give b its own
    b = Lake(str(tmp_path / "b"))
    assert a.lake_id != b.lake_id == "lake-b"
    slot = claim_slot(tmp_path / "wal")
    wal_b = WriteAheadLog(slot, sync=False, fsync_interval_s=None, lake_id=b.lake_id)
    _good(wal_b, ["from-b"])
    wal_b.close()
    slot.close()
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None, lake_id=a.lake_id)
    log = PredictionLog(a, wal, interval_s=60, actor="tester")
    try:
        log.flush()
    finally:
        wal.close()
        slot.close()
    letters = dead_letters(tmp_path / "wal")
    assert [d.kind for d in letters] == ["foreign"] and "lake-b" in letters[0].error
    assert not a.exists("feedback") or a.read("feedback").filter(pl.col("prediction_id") == "from-b").height == 0
    rows, errors = PredictionLog.offline(a, tmp_path / "wal", actor="t").replay_dead_letters()
    assert rows == 0 and errors and dead_letters(tmp_path / "wal")  # still refused by lake a
    rows, errors = PredictionLog.offline(b, tmp_path / "wal", actor="t").replay_dead_letters()
    assert (rows, errors) == (1, []) and not dead_letters(tmp_path / "wal")
    assert b.read("feedback")["prediction_id"].to_list() == ["from-b"]


def test_the_api_says_so_in_ready_and_alerts_and_the_cli_lists_and_discards(tmp_path, tmp_path_factory, capsys):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    settings = serving_settings(lake_path, tmp_path / "wal")
    lake = Lake(str(lake_path))
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        wait_for(lambda: c.get("/ready").status_code == 200)
        _bad_segment(tmp_path / "wal" / "w0" / "seg-00000000000000000000000000000000-000001.wal", lake.lake_id)
        r = wait_for(lambda: (r := c.get("/ready")).status_code == 503 and r.json(), timeout=20)
        assert "cannot commit WAL segment seg-0000" in r["reasons"][0] and "malformed ids" in r["reasons"][0]
        acked: list[str] = []
        for _ in range(5):  # traffic goes on and is logged meanwhile
            acked += c.post(PREDICT, json=demo_rows(2)).json()["prediction_ids"]
            time.sleep(0.3)
        wait_for(lambda: c.get("/ready").status_code == 200 and c.get("/ready").json()["dead_letter_segments"], timeout=30)
        wait_for(lambda: set(acked) <= set(lake.read("predictions/churn", columns=["prediction_id"])["prediction_id"].to_list()),
                 timeout=20)  # every acknowledged prediction made it, the bad segment notwithstanding
        alerts = lake.read("alerts").filter(pl.col("kind") == "prediction_log")
        assert alerts["status"].to_list() == ["open"] and "malformed ids" in alerts["message"][0]
        capsys.readouterr()
        base = ["--lake", str(lake_path), "serve", "--wal-dir", str(tmp_path / "wal")]
        assert cli.run([*base, "status"]) == 0
        out = capsys.readouterr().out
        assert "dead letters: 1" in out and "malformed ids" in out and "server running" in out
        assert cli.run([*base, "replay"]) == 2  # the cause is not fixed: it stays, and says why
        assert "malformed ids" in capsys.readouterr().err and dead_letters(tmp_path / "wal")
        assert cli.run([*base, "discard", "--segment", "seg-00000000000000000000000000000000-000001.wal"]) == 2
        assert cli.run([*base, "discard", "--segment", "seg-00000000000000000000000000000000-000001.wal",
                        "--reason", "test record, never answered"]) == 0
        assert not dead_letters(tmp_path / "wal")
        wait_for(lambda: "resolved" in lake.read("alerts").filter(
            pl.col("fingerprint") == alerts["fingerprint"][0])["status"].to_list(), timeout=20)
