"""The point-in-time engine against a brute-force definition; no leakage; boundaries; bad data refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.errors import FeatureViewError
from core.features import Feature, FeatureView, check_windows, point_in_time, prepare, values_at

T0 = datetime(2024, 1, 1, tzinfo=UTC)
VIEW = FeatureView("usage", "events", "cid", "at", (
    Feature("calls_7d", "pl.col('calls')", agg="sum", window="7d"),
    Feature("n_7d", agg="count", window="7d"),
    Feature("mins_mean_30d", "pl.col('mins')", agg="mean", window="30d"),
    Feature("mins_max_30d", "pl.col('mins')", agg="max", window="30d"),
    Feature("calls_min_30d", "pl.col('calls')", agg="min", window="30d", default=-1),
    Feature("last_plan", "pl.col('plan')"),
    Feature("last_ratio", "pl.col('mins') / (pl.col('calls') + 1)"),
))


def _events(n: int, k: int, seed: int, *, key=lambda i: f"c{i}") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    mins = rng.normal(10, 3, n)
    frame = pl.DataFrame({
        "cid": [key(int(i)) for i in rng.integers(0, k, n)],
        "at": [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 90, n)],
        "calls": rng.integers(0, 5, n),
        "mins": np.where(rng.random(n) < 0.1, None, mins).tolist(),  # nulls: skipped by aggregates
        "plan": rng.choice(["a", "b", "c"], n).tolist(),
    })
    return frame.unique(["cid", "at"], keep="first")


def _brute(events: pl.DataFrame, cid, ts: datetime) -> dict:
    """The definition, row by row: rows of the entity at or before ts; windows (ts - w, ts]."""
    past = events.filter((pl.col("cid") == cid) & (pl.col("at") <= ts)).sort("at")

    def win(days: int) -> pl.DataFrame:
        return past.filter(pl.col("at") > ts - timedelta(days=days))

    w7, w30 = win(7), win(30)
    mins30 = w30["mins"].drop_nulls()
    last = past.tail(1)
    return {
        "calls_7d": int(w7["calls"].sum()), "n_7d": w7.height,
        "mins_mean_30d": mins30.mean() if mins30.len() else None, "mins_max_30d": mins30.max() if mins30.len() else None,
        "calls_min_30d": int(w30["calls"].min()) if w30.height else -1,
        "last_plan": last["plan"][0] if last.height else None,
        "last_ratio": (last["mins"][0] / (last["calls"][0] + 1) if last["mins"][0] is not None else None) if last.height else None,
    }


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(1.0, abs(b)) if isinstance(b, float) else a == b


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_the_row_by_row_definition(seed):
    events = _events(2500, 25, seed)
    rng = np.random.default_rng(seed + 10)
    labels = pl.DataFrame({
        "cid": [f"c{i}" for i in rng.integers(0, 28, 300)],  # c25..c27 have no events at all
        "ts": [T0 + timedelta(minutes=int(m)) for m in rng.integers(-60 * 24, 60 * 24 * 100, 300)],
    })
    exact = events.select("cid", pl.col("at").alias("ts")).head(40)  # label times equal to event times
    labels = pl.concat([labels, exact])
    out = point_in_time(VIEW, events, labels, time_column="ts")
    assert out.columns == ["cid", "ts", *VIEW.feature_names] and out.height == labels.height
    bad = [(r, name) for r in out.iter_rows(named=True)
           for name, want in _brute(events, r["cid"], r["ts"]).items() if not _same(r[name], want)]
    assert not bad, bad[:3]


def test_future_rows_never_change_a_value():
    """Rows after a label's time change nothing, however extreme; the same rows one second earlier do."""
    events = _events(1500, 10, 3)
    last = T0 + timedelta(days=45)
    labels = pl.DataFrame({"cid": [f"c{i}" for i in range(10)] * 3,
                           "ts": [T0 + timedelta(days=d) for d in (20, 33, 45) for _ in range(10)]})
    before = point_in_time(VIEW, events, labels, time_column="ts")
    future = pl.DataFrame({
        "cid": [f"c{i}" for i in range(10)] * 2,
        "at": [last + timedelta(seconds=1)] * 10 + [last + timedelta(days=3)] * 10,
        "calls": [10_000] * 20, "mins": [1e9] * 20, "plan": ["FUTURE"] * 20,
    })
    after = point_in_time(VIEW, pl.concat([events, future]), labels, time_column="ts")
    assert after.equals(before)
    known = future.head(10).with_columns(pl.col("at") - pl.duration(seconds=2))  # known one second before day 45
    shifted = point_in_time(VIEW, pl.concat([events, known]), labels, time_column="ts")
    day45 = pl.col("ts") == last
    assert (shifted.filter(day45)["last_plan"] == "FUTURE").all() and (shifted.filter(day45)["calls_7d"] >= 10_000).all()
    assert shifted.filter(~day45).equals(before.filter(~day45))


def test_boundaries_inclusive_at_the_time_exclusive_at_the_window_start():
    events = pl.DataFrame({"cid": ["a", "a", "a"], "at": [T0, T0 + timedelta(days=7), T0 + timedelta(days=8)],
                           "calls": [1, 10, 100], "mins": [1.0, 2.0, 3.0], "plan": ["x", "y", "z"]})
    labels = pl.DataFrame({"cid": ["a", "a", "a", "b"],
                           "ts": [T0 + timedelta(days=7), T0 + timedelta(days=7) - timedelta(microseconds=1),
                                  T0 + timedelta(days=14), T0 + timedelta(days=7)]})
    out = point_in_time(VIEW, events, labels, time_column="ts")
    # at day 7: the day-7 row is known, the day-0 row is exactly 7 days old: outside (t - 7d, t]
    assert out["calls_7d"].to_list() == [10, 1, 100, 0]  # day 14: the day-7 row is exactly 7 days old too
    assert out["last_plan"].to_list() == ["y", "x", "z", None]
    assert out["calls_min_30d"].to_list() == [1, 1, 1, -1]  # declared default for no row
    assert out["mins_mean_30d"].to_list()[3] is None and out["n_7d"].to_list() == [1, 1, 1, 0]


def test_order_of_rows_and_integer_keys_do_not_matter():
    events = _events(800, 8, 4, key=lambda i: i * 1000)
    labels = pl.DataFrame({"cid": [i * 1000 for i in range(8)] * 5,
                           "ts": [T0 + timedelta(days=d) for d in range(5, 90, 17) for _ in range(8)]})
    a = point_in_time(VIEW, events, labels, time_column="ts")
    perm = np.random.default_rng(0).permutation(events.height)
    b = point_in_time(VIEW, events[perm], labels.reverse(), time_column="ts").reverse()
    assert a.equals(b)
    narrow = labels.with_columns(pl.col("cid").cast(pl.Int32))
    assert point_in_time(VIEW, events, narrow, time_column="ts").drop("cid").equals(a.drop("cid"))


def test_online_lookup_equals_a_training_row_at_that_time():
    """The same call serves one entity at materialisation time: equal to its row in a training set."""
    events = _events(1500, 12, 5)
    prepared = prepare(VIEW, events)
    when = T0 + timedelta(days=60)
    labels = pl.DataFrame({"cid": [f"c{i}" for i in range(12)], "ts": [when] * 12})
    trainset = point_in_time(VIEW, events, labels, time_column="ts").drop("cid", "ts")
    one_by_one = pl.concat([values_at(prepared, pl.Series("cid", [f"c{i}"]), pl.Series([when])) for i in range(12)])
    assert one_by_one.equals(trainset)


def test_duplicate_entity_rows_at_one_time_are_refused_for_latest_values():
    events = _events(300, 5, 6)
    dup = pl.concat([events, events.head(2).with_columns(pl.col("plan").reverse())])
    with pytest.raises(FeatureViewError, match=r"has 2 \(cid, at\) pair\(s\) with more than one row, first cid="):
        prepare(VIEW, dup)
    windows_only = FeatureView("w", "events", "cid", "at", (Feature("n", agg="count", window="1d"),))
    assert prepare(windows_only, dup).rows == dup.height  # a count over a window is not ambiguous


def test_label_rows_need_times_and_the_entity_column():
    events = _events(200, 5, 7)
    with pytest.raises(FeatureViewError, match="no event-time column 'ts'"):
        point_in_time(VIEW, events, pl.DataFrame({"cid": ["c1"]}), time_column="ts")
    with pytest.raises(FeatureViewError, match="'ts' has 1 null value"):
        point_in_time(VIEW, events, pl.DataFrame({"cid": ["c1", "c2"], "ts": [T0, None]}), time_column="ts")
    with pytest.raises(FeatureViewError, match="has type String; it must be a datetime"):
        point_in_time(VIEW, events, pl.DataFrame({"cid": ["c1"], "ts": ["2024-01-01"]}), time_column="ts")
    with pytest.raises(FeatureViewError, match="no entity column 'cid'"):
        point_in_time(VIEW, events, pl.DataFrame({"customer": ["c1"], "ts": [T0]}), time_column="ts")
    with pytest.raises(FeatureViewError, match="entity column 'cid' has type Int64 but the source"):
        point_in_time(VIEW, events, pl.DataFrame({"cid": [1], "ts": [T0]}), time_column="ts")


def test_a_window_longer_than_the_data_is_refused():
    events = _events(200, 5, 8)  # 90 days of events
    long = FeatureView("w", "events", "cid", "at", (Feature("n", agg="count", window="100d"),))
    with pytest.raises(FeatureViewError, match="feature 'n': window 100d is longer than the data: the events of 'events' span 88 days, 21:12:00"):
        check_windows(prepare(long, events))
    check_windows(prepare(VIEW, events))
