"""The prediction log's record format: version headers, compact records, ids, request encoding."""

from __future__ import annotations

import json
import time
import uuid

import msgspec
import numpy as np
import polars as pl
import pytest

from core import registry
from core.lake import Lake
from core.serving.predlog import PredictionLog
from core.serving.schemas import Codec
from core.serving.service import batch_ids, batch_ids_json
from core.serving.wal import PredictionRecord, WriteAheadLog, claim_slot, read_segment, scan_segment
from tests.test_serving_support import champion_lake_path, copy_lake, demo_rows

_pack = msgspec.msgpack.encode


def _header(model: str, version: int, names: list[str], levels: dict[str, list[str]], thr: float | None = 0.5):
    record = {"k": "h", "m": model, "v": version, "fn": names, "lv": levels, "thr": thr}
    return ((model, version), _pack(record))


def _q(model: str, version: int, ids: list[str], scores: list[float], X: list[list[float]], unknown=None) -> bytes:
    n = len(ids)
    arr = np.array(X, dtype=np.float64).reshape(n, -1)
    return _pack(["q", model, version, time.time_ns() // 1000, 2.5, n, "".join(ids).encode(),
                  np.array(scores).tobytes(), arr.tobytes(), unknown])


def _id(k: int) -> str:
    return str(uuid.UUID(int=k))


@pytest.mark.parametrize("sync", [False, True], ids=["write", "fsync"])
def test_a_version_header_is_written_once_per_segment_before_its_first_record(tmp_path, sync):
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=sync, fsync_interval_s=None)
    h1 = _header("m", 1, ["a"], {})
    h2 = _header("m", 2, ["a"], {})
    try:
        for header in (h1, h1, h2, h1):
            wal.write(_q("m", header[0][1], [_id(1)], [0.5], [[1.0]]), header)
        first = wal.seal()
        wal.write(_q("m", 1, [_id(2)], [0.5], [[1.0]]), h1)
        second = wal.seal()
    finally:
        wal.close()
        slot.close()
    kinds = [(r["k"], r["v"]) if isinstance(r, dict) else ("q", r.version) for r in read_segment(first)]
    assert kinds == [("h", 1), ("q", 1), ("q", 1), ("h", 2), ("q", 2), ("q", 1)]
    kinds = [(r["k"], r["v"]) if isinstance(r, dict) else ("q", r.version) for r in read_segment(second)]
    assert kinds == [("h", 1), ("q", 1)]  # a new segment repeats the header: each reads on its own


def test_a_segment_of_two_versions_unknown_levels_and_an_old_record_becomes_the_right_rows(tmp_path, tmp_path_factory):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    model = "other"  # no prediction table yet: its schema comes from the newest header
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None)
    h1 = _header(model, 1, ["age", "plan"], {"plan": ["basic", "premium"]}, thr=0.5)
    h2 = _header(model, 2, ["age", "plan", "tenure"], {"plan": ["gold", "basic"]}, thr=0.8)
    nan = float("nan")
    wal.append(_q(model, 1, [_id(1), _id(2), _id(3)], [0.1, 0.6, 0.9],
                  [[30, 1], [nan, nan], [50, nan]], unknown={"plan": [[2, "platinum"]]}), h1)
    wal.append(_q(model, 2, [_id(4), _id(5)], [0.7, 0.85], [[20, 0, 5], [21, 1, nan]]), h2)
    legacy = {"k": "p", "m": model, "v": 1, "at": time.time_ns() // 1000, "lat": 1.0, "thr": 0.5,
              "ids": [_id(6)], "s": np.array([0.2]).tobytes(), "X": np.array([[40.0, 0.0]]).tobytes(),
              "fn": ["age", "plan"], "cat": {"plan": ["basic"]}}
    wal.append(_pack(legacy))
    wal.append(_pack({"k": "f", "m": model, "at": time.time_ns() // 1000, "src": "api", "ids": [_id(4)], "labels": [1.0]}))
    log = PredictionLog(lake, wal, interval_s=60, actor="tester")
    try:
        assert log.flush() == 7
    finally:
        wal.close()
        slot.close()
    got = {r["prediction_id"]: r for r in lake.read(f"predictions/{model}").iter_rows(named=True)}
    assert len(got) == 6
    expect = {  # id: (version, age, plan, tenure, score, label)
        1: (1, 30.0, "premium", None, 0.1, 0),
        2: (1, None, None, None, 0.6, 1),
        3: (1, 50.0, "platinum", None, 0.9, 1),  # an unseen level is logged as sent
        4: (2, 20.0, "gold", 5.0, 0.7, 0),  # v2's own levels and threshold
        5: (2, 21.0, "basic", None, 0.85, 1),
        6: (1, 40.0, "basic", None, 0.2, 0),  # the previous record format still replays
    }
    for k, (v, age, plan, tenure, score, label) in expect.items():
        row = got[_id(k)]
        f = row["features"]
        assert (row["model_version"], f["age"], f["plan"], f["tenure"], row["score"], row["predicted_label"]) == (
            v, age, plan, tenure, score, label
        ), k
        assert row["latency_ms"] > 0 and str(row["day"]) == row["at"].date().isoformat()
    assert lake.read("feedback").filter(pl.col("prediction_id") == _id(4)).height == 1


def test_a_large_flush_is_written_in_parts_as_one_commit_with_every_row_once(tmp_path, tmp_path_factory, monkeypatch):
    """A flush bigger than a part (64k rows in production, 4 here) is built and written a part at
    a time: one commit, every row once, unseen levels (repeated across records and parts) and
    two versions' features right in every part."""
    from core.serving import predlog

    monkeypatch.setattr(predlog, "_PART_ROWS", 4)
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    model = "parts"
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None)
    h1 = _header(model, 1, ["age", "plan"], {"plan": ["basic", "premium"]}, thr=0.5)
    h2 = _header(model, 2, ["age", "plan", "tenure"], {"plan": ["gold", "basic"]}, thr=0.8)
    expect: dict[str, tuple] = {}
    k = 0
    for r in range(9):  # 9 records of 1 to 3 rows: parts cut between records
        v, h = (1, h1) if r % 3 else (2, h2)
        n = r % 3 + 1
        ids = [_id(k + i) for i in range(n)]
        X = [[float(k + i), float(i % 2)] + ([float(i)] if v == 2 else []) for i in range(n)]
        unknown = {"plan": [[n - 1, "platinum" if r % 2 else "silver"]]}
        wal.append(_q(model, v, ids, [0.1 * (i + 1) for i in range(n)], X, unknown=unknown), h)
        levels = ["basic", "premium"] if v == 1 else ["gold", "basic"]
        for i in range(n):
            plan = unknown["plan"][0][1] if i == n - 1 else levels[i % 2]
            expect[ids[i]] = (v, float(k + i), plan, float(i) if v == 2 else None)
        k += n
    log = PredictionLog(lake, wal, interval_s=60, actor="tester")
    before = log.commits
    try:
        assert log.flush() == len(expect) == 18
    finally:
        wal.close()
        slot.close()
    assert log.commits - before == 1  # one Delta commit for all the parts
    got = lake.read(f"predictions/{model}")
    assert got.height == len(expect) and got["prediction_id"].n_unique() == len(expect)
    for row in got.iter_rows(named=True):
        f = row["features"]
        assert (row["model_version"], f["age"], f["plan"], f["tenure"]) == expect[row["prediction_id"]], row


def test_table_parts_can_be_appended_again(tmp_path):
    """``TableParts`` makes a fresh iterator each time (what a retried append needs)."""
    import pyarrow as pa

    from core.lake import TableParts

    lake = Lake(str(tmp_path / "lake"), create=True)
    schema = pa.schema([("k", pa.int64()), ("v", pa.string())])
    first = pa.table({"k": [0, 1], "v": ["a", "b"]}, schema=schema)
    parts = TableParts(first, lambda: (pa.table({"k": [i], "v": [str(i)]}, schema=schema) for i in range(2, 5)), 5)
    lake.append("data/parts", parts, schema=schema)
    lake.append("data/parts", parts, schema=schema)
    assert sorted(lake.read("data/parts")["k"].to_list()) == sorted([0, 1, 2, 3, 4] * 2)
    assert [t.num_rows for t in parts] == [2, 1, 1, 1]


def test_a_record_without_its_header_is_decoded_from_the_registry(tmp_path, tmp_path_factory):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    loaded = registry.load("churn", lake=lake)
    rows = demo_rows(3)
    X = loaded.model.encode(pl.DataFrame(rows))
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None)
    wal.append(_q("churn", loaded.version, [_id(k) for k in (1, 2, 3)], [0.1, 0.2, 0.3], X.tolist()))
    log = PredictionLog(lake, wal, interval_s=60, actor="tester")
    try:
        assert log.flush() == 3
    finally:
        wal.close()
        slot.close()
    logged = lake.read("predictions/churn").filter(pl.col("prediction_id").is_in([_id(k) for k in (1, 2, 3)]))
    logged = logged.sort("prediction_id").unnest("features")
    assert logged["plan"].to_list() == [r["plan"] for r in rows]
    assert logged["tenure_months"].to_list() == [float(r["tenure_months"]) for r in rows]


@pytest.mark.parametrize("n", [1, 2, 100, 1000])
def test_batch_ids_are_distinct_uuid7_strings_of_this_millisecond(n):
    before = time.time_ns() // 1_000_000
    raw, items = batch_ids_json(n)
    after = time.time_ns() // 1_000_000
    assert len(raw) == 36 * n
    ids = json.loads(b"[" + items + b"]")
    assert len(set(ids)) == n and ids == [raw[i : i + 36].decode() for i in range(0, len(raw), 36)]
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after + 1
    assert len({s[:19] for s in ids}) == 1  # one clock read per request
    tails = {s[19:] for s in batch_ids(n)}
    assert len(tails) == n and not tails & {s[19:] for s in ids}


@pytest.mark.parametrize("form", ["rows", "columns"])
def test_request_encoding_equals_training_encoding_on_clean_and_messy_rows(tmp_path_factory, form):
    lake = Lake(str(champion_lake_path(tmp_path_factory)))
    loaded = registry.load("churn", lake=lake)
    codec = Codec(loaded.signature, unknown_category="missing", max_rows=10_000)
    clean = demo_rows(50)
    messy = [dict(r) for r in clean]
    messy[3]["age"] = None  # a null number
    messy[7]["plan"] = None  # a null level
    messy[9]["contract"] = "decade"  # an unseen level: missing under the default policy
    for rows in (clean, messy):
        body = rows if form == "rows" else {"columns": {k: [r[k] for r in rows] for k in rows[0]}}
        decoded = codec.decode(json.dumps(body).encode())
        frame_rows = [dict(r) for r in rows]
        frame_rows[9]["contract"] = None if rows is messy else frame_rows[9]["contract"]
        expected = loaded.model.encode(pl.DataFrame(frame_rows, infer_schema_length=None))
        assert decoded.X.flags.c_contiguous and decoded.X.shape == (50, len(codec.names))
        np.testing.assert_array_equal(decoded.X, expected)
        if rows is messy:
            assert decoded.unknown == {"contract": [(9, "decade")]}
        else:
            assert decoded.unknown is None
    strict = Codec(loaded.signature, unknown_category="error", max_rows=10_000)
    bad = [dict(r) for r in clean[:3]]
    bad[2]["monthly_charges"] = 1e999  # JSON's way to say infinity
    body = bad if form == "rows" else {"columns": {k: [r[k] for r in bad] for k in bad[0]}}
    with pytest.raises(Exception, match="row 2") as err:
        strict.decode(json.dumps(body).replace("Infinity", "1e999").encode())
    assert err.value.report[0]["field"] == "monthly_charges"  # type: ignore[attr-defined]



def _replayed(lake_path, wal_dir, records: list[bytes], header) -> pl.DataFrame:
    """Write ``records`` (msgpack bytes) to a real WAL segment, replay it into the lake, read the rows back."""
    lake = Lake(str(lake_path))
    slot = claim_slot(wal_dir)
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None, lake_id=lake.lake_id)
    for rec in records:
        wal.append(rec, header)
    log = PredictionLog(lake, wal, interval_s=60, actor="tester")
    try:
        assert log.flush() == 5
    finally:
        wal.close()
        slot.close()
    ids = [_id(k) for k in range(1, 6)]
    return lake.read("predictions/churn").filter(pl.col("prediction_id").is_in(ids)).sort("prediction_id")


def test_segments_of_the_earlier_list_records_replay_as_the_named_record_does(tmp_path, tmp_path_factory):
    """Earlier releases wrote a prediction record as a plain msgpack list of 10, 11 or 12 elements
    (``passthrough`` and ``role`` came later); a segment of them replays into the same rows as
    one of ``PredictionRecord``s, which encodes to the very bytes of the 12-element list."""
    src = champion_lake_path(tmp_path_factory)
    loaded = registry.load("churn", lake=Lake(str(src)))
    codec = Codec(loaded.signature, unknown_category="missing", max_rows=10_000)
    rows = demo_rows(5)
    rows[2] = {**rows[2], "plan": "platinum"}  # an unseen level: logged as sent
    decoded = codec.decode(json.dumps(rows).encode())
    assert decoded.unknown == {"plan": [(2, "platinum")]}
    scores = loaded.model.predict_matrix(decoded.X)
    v = loaded.version
    header = (("churn", v), _pack({"k": "h", "m": "churn", "v": v, "fn": codec.names, "lv": codec.levels,
                                   "thr": loaded.signature.threshold, "pt": []}))
    ids = "".join(_id(k) for k in range(1, 6)).encode()
    at = time.time_ns() // 1000
    old, new = [], []
    for a, b, length, role in ((0, 2, 10, "champion"), (2, 4, 11, "champion"), (4, 5, 12, "pinned")):
        unknown = {"plan": [[2 - a, "platinum"]]} if a <= 2 < b else None
        fields = ["churn", v, at, 1.5, b - a, ids[36 * a : 36 * b], scores[a:b].tobytes(),
                  decoded.X[a:b].tobytes(), unknown, None, role]
        old.append(_pack(["q", *fields][:length]))
        new.append(_pack(PredictionRecord(*fields)))
    assert new[2] == old[2]  # the same bytes as the list of the release before
    from_old = _replayed(copy_lake(src, tmp_path / "old"), tmp_path / "wal-old", old, header)
    from_new = _replayed(copy_lake(src, tmp_path / "new"), tmp_path / "wal-new", new, header)
    assert from_old.height == 5 and from_old.equals(from_new)
    assert from_old["score"].to_list() == scores.tolist()
    assert from_old["role"].to_list() == ["champion"] * 4 + ["pinned"]
    feats = from_old.unnest("features")
    assert feats["plan"].to_list() == [r["plan"] for r in rows]
    assert feats["tenure_months"].to_list() == [float(r["tenure_months"]) for r in rows]


def _three_record_segment(tmp_path):
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None, lake_id="lake-a")
    try:
        for k in range(3):
            wal.write(_pack({"k": "f", "n": k}))
        sealed = wal.seal()
    finally:
        wal.close()
        slot.close()
    return sealed


def test_a_record_cut_short_by_a_crash_ends_the_segment(tmp_path):
    sealed = _three_record_segment(tmp_path)
    data = sealed.read_bytes()
    whole = scan_segment(sealed)
    assert [r["n"] for r in whole.records] == [0, 1, 2] and whole.problem is None
    assert whole.header["lake"] == "lake-a" and whole.good_bytes == len(data)
    sealed.write_bytes(data[:-3])  # the third write was cut: it was never answered
    torn = scan_segment(sealed)
    assert [r["n"] for r in torn.records] == [0, 1] and torn.problem == "torn"
    assert read_segment(sealed) == torn.records


def test_a_corrupt_frame_stops_the_reader_and_says_where(tmp_path):
    sealed = _three_record_segment(tmp_path)
    data = bytearray(sealed.read_bytes())
    last = len(_pack({"k": "f", "n": 2})) + 8  # the third frame: length, crc, payload
    data[-last - 2] ^= 0xFF  # flip a byte inside the second frame's payload
    sealed.write_bytes(bytes(data))
    scan = scan_segment(sealed)
    assert [r["n"] for r in scan.records] == [0] and scan.problem == "corrupt"
    assert "checksum" in scan.detail and scan.good_bytes < len(data) - last


def test_segment_names_are_unique_across_process_lifetimes(tmp_path):
    names = set()
    for _ in range(3):  # three "processes" on one slot, each leaving the folder empty
        slot = claim_slot(tmp_path / "wal")
        wal = WriteAheadLog(slot, sync=False, fsync_interval_s=None)
        wal.write(_pack({"k": "f", "n": 0}))
        sealed = wal.seal()
        names.add(sealed.name)
        wal.forget(sealed)
        wal.close()
        slot.close()
    assert len(names) == 3


class _ShortFd:
    """Make the n-th ``os.write`` on the WAL write only part of its bytes, then fail (ENOSPC)."""

    def __init__(self, monkeypatch, fail_on: int) -> None:
        import errno
        import os as _os

        self.calls = 0
        real = _os.write

        def write(fd, data):
            self.calls += 1
            if self.calls == fail_on:
                real(fd, bytes(data)[: max(1, len(data) // 2)])
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr("core.serving.wal.os.write", write)


@pytest.mark.parametrize("sync", [False, True])
def test_a_failed_short_write_is_truncated_and_later_records_read_back(tmp_path, monkeypatch, sync):
    slot = claim_slot(tmp_path / "wal")
    wal = WriteAheadLog(slot, sync=sync, fsync_interval_s=None)
    try:
        wal.write(_pack({"k": "f", "n": 0}))
        _ShortFd(monkeypatch, fail_on=1)  # the next write(2) is cut short by a full disk
        with pytest.raises(OSError):
            wal.write(_pack({"k": "f", "n": 1, "pad": "x" * 500}))
        assert wal.error is not None
        monkeypatch.undo()
        wal.write(_pack({"k": "f", "n": 2}))  # space is back
        assert wal.error is None
        sealed = wal.seal()
    finally:
        wal.close()
        slot.close()
    scan = scan_segment(sealed)
    assert [r["n"] for r in scan.records] == [0, 2] and scan.problem is None
