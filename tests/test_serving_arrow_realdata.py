"""Arrow bodies on real public data (NYC flights 2013 with weather, ``tests/realdata.py``): integer,
float and categorical columns with real nulls, an id column, levels the model never saw and columns
in the client's order decode to the same matrix, unknown levels and logged values as the same rows
sent as JSON."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from core.serving.schemas import Codec
from core.signature import Feature, PassThrough, Signature
from tests import realdata

NUMERIC = ["month", "day", "hour", "sched_dep_time", "distance", "temp", "dewp", "humid", "wind_speed", "precip",
           "pressure", "visib", "pressure_hpa"]
CATEGORICAL = ["carrier", "origin", "dest"]


@pytest.fixture(scope="module")
def flights() -> pl.DataFrame:
    # pressure_hpa: the real pressure readings (nulls included) as a nullable integer column
    return realdata.flights(fraction=0.01, seed=3).head(3000).with_columns(
        pl.col("pressure").round(0).cast(pl.Int64).alias("pressure_hpa"))


def _codec(frame: pl.DataFrame) -> Codec:
    features = [Feature(name=c, kind="numeric", dtype=str(frame.schema[c])) for c in NUMERIC]
    for c in CATEGORICAL:
        levels = sorted(frame[c].drop_nulls().unique().to_list())
        if c == "dest":  # a model trained before some destinations were flown: their rows are unseen levels
            levels = levels[: len(levels) * 2 // 3]
        features.append(Feature(name=c, kind="categorical", dtype="String", levels=tuple(levels)))
    sig = Signature(task="binary", target="late", features=tuple(features),
                    passthrough=(PassThrough(name="flight_id", type="string", role="id"),))
    return Codec(sig, unknown_category="missing", max_rows=10_000)


def _ipc(table: pa.Table, max_chunksize: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=max_chunksize)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("shape", ["categorical, one batch", "strings, three batches"])
def test_real_flights_decode_from_arrow_exactly_as_from_json(flights, shape):
    codec = _codec(flights)
    cols = [*reversed(CATEGORICAL), "flight_id", *reversed(NUMERIC)]  # the client's order, not the signature's
    frame = flights.select(cols)
    assert frame.null_count().row(0)[cols.index("pressure_hpa")] > 0  # real nulls in an integer column
    if shape.startswith("categorical"):
        body = _ipc(frame.with_columns(pl.col(CATEGORICAL).cast(pl.Categorical)).to_arrow())
    else:
        body = _ipc(frame.to_arrow(), max_chunksize=1100)
    json_body = msgspec.json.encode(frame.to_dicts())

    got = codec.decode_arrow(body)
    want = codec.decode(json_body)

    assert got.rows == want.rows == frame.height
    assert np.array_equal(got.X, want.X, equal_nan=True)
    assert np.isnan(got.X[:, codec.names.index("pressure_hpa")]).sum() == frame["pressure_hpa"].null_count()
    assert got.unknown is not None and got.unknown == want.unknown
    unseen = sorted(set(frame["dest"].to_list()) - set(codec.levels["dest"]))
    assert sorted({v for _, v in got.unknown["dest"]}) == unseen
    assert got.passthrough == want.passthrough == {"flight_id": frame["flight_id"].to_list()}
    # the same body again takes the cached plan and dictionaries: the same answer
    again = codec.decode_arrow(body)
    assert np.array_equal(again.X, got.X, equal_nan=True) and again.unknown == got.unknown
    assert not any(math.isinf(v) for v in got.X.ravel().tolist())
