"""Arrow IPC stream bodies on the predict route: validated like JSON, scored and logged the same, answered in Arrow on request."""

from __future__ import annotations

import httpx
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from core import demo, monitoring
from core.lake import Lake
from core.serving.app import ARROW, create_app
from tests.test_serving_support import ThreadServer, champion_lake_path, copy_lake, serving_settings, wait_for

PREDICT = "/v1/models/churn/predict"


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.fixture(scope="module")
def arrow_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arrow")
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp / "lake")
    with ThreadServer(create_app(serving_settings(lake_path, tmp / "wal", unknown_category="error"))) as srv:
        srv.client = httpx.Client(base_url=srv.url, timeout=30)
        srv.lake = Lake(str(lake_path))
        yield srv


def test_arrow_rows_score_and_log_exactly_as_json(arrow_server):
    c = arrow_server.client
    frame = demo.generate(n=100, seed=12).select(demo.FEATURES)
    json_out = c.post(PREDICT, json=frame.to_dicts()).json()
    strings = c.post(PREDICT, content=_ipc(frame.to_arrow()), headers={"content-type": ARROW})
    cats = frame.with_columns(pl.col(pl.String).cast(pl.Categorical))  # dictionary-encoded in Arrow
    dictionary = c.post(PREDICT, content=_ipc(cats.to_arrow()), headers={"content-type": ARROW})
    assert cats.to_arrow().schema.field("plan").type.id == pa.dictionary(pa.int32(), pa.string()).id
    for r in (strings, dictionary):
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == json_out["scores"] and r.json()["labels"] == json_out["labels"]
    ids = dictionary.json()["prediction_ids"]
    lake = arrow_server.lake
    wait_for(lambda: lake.exists("predictions/churn") and monitoring.window("churn", lake=lake).filter(
        pl.col("prediction_id").is_in(ids)).height == 100)
    logged = monitoring.window("churn", lake=lake).filter(pl.col("prediction_id").is_in(ids)).sort("prediction_id")
    order = {i: k for k, i in enumerate(ids)}
    feats = monitoring.features_of(logged).with_columns(
        pl.Series("k", [order[i] for i in logged["prediction_id"].to_list()])).sort("k").drop("k")
    assert feats.select(demo.FEATURES).equals(frame.with_columns(pl.col(pl.Int64).cast(pl.Float64)))


def test_arrow_answer_on_request(arrow_server):
    frame = demo.generate(n=5, seed=13).select(demo.FEATURES)
    r = arrow_server.client.post(PREDICT, content=_ipc(frame.to_arrow()),
                                 headers={"content-type": ARROW, "accept": ARROW})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW
    table = ipc.open_stream(r.content).read_all()
    assert table.column_names == ["prediction_id", "score", "label", "version", "role"] and table.num_rows == 5
    assert set(table.column("role").to_pylist()) == {"champion"} and set(table.column("version").to_pylist()) == {1}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f.drop("age"), "age"),
        (lambda f: f.with_columns(pl.lit("x").alias("coupon")), "coupon"),
        (lambda f: f.with_columns(pl.col("age").cast(pl.String)), "age"),
        (lambda f: f.with_columns(pl.lit(5).alias("plan")), "plan"),
        (lambda f: f.with_columns(pl.lit("platinum").alias("plan")), "plan"),  # unknown level under "error"
        (lambda f: f.with_columns(pl.lit(float("inf")).alias("monthly_charges")), "monthly_charges"),
    ],
)
def test_arrow_bodies_that_do_not_fit_are_422_naming_the_field(arrow_server, change, field):
    frame = change(demo.generate(n=3, seed=14).select(demo.FEATURES))
    r = arrow_server.client.post(PREDICT, content=_ipc(frame.to_arrow()), headers={"content-type": ARROW})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == field


def test_not_an_arrow_stream_is_400(arrow_server):
    r = arrow_server.client.post(PREDICT, content=b"not arrow at all", headers={"content-type": ARROW})
    assert r.status_code == 400 and "Arrow" in r.json()["detail"]


def test_a_dictionary_with_levels_no_row_uses_is_fine_and_a_used_unknown_level_is_named(arrow_server):
    c = arrow_server.client
    frame = demo.generate(n=20, seed=15).select(demo.FEATURES)
    expected = c.post(PREDICT, json=frame.to_dicts()).json()["scores"]
    table = frame.to_arrow()
    plan = table.column("plan").combine_chunks()
    levels = sorted(set(plan.to_pylist())) + ["platinum"]  # a level the model never saw, used by no row
    wide = pa.DictionaryArray.from_arrays(pa.array([levels.index(v) for v in plan.to_pylist()], pa.int32()), levels)
    body = table.set_column(table.column_names.index("plan"), "plan", wide)
    for _ in range(2):  # the second time from the cached dictionary
        r = c.post(PREDICT, content=_ipc(body), headers={"content-type": ARROW})
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == expected
    used = pa.DictionaryArray.from_arrays(pa.array([len(levels) - 1] + [levels.index(v) for v in plan.to_pylist()[1:]],
                                                   pa.int32()), levels)
    r = c.post(PREDICT, content=_ipc(body.set_column(table.column_names.index("plan"), "plan", used)),
               headers={"content-type": ARROW})
    first = r.json()["errors"][0]
    assert r.status_code == 422 and (first["row"], first["field"]) == (0, "plan") and "platinum" in first["message"]
