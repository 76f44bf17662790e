"""A model trained on a feature view, served: entity keys in, online values filled, logged; skew check; lineage."""

from __future__ import annotations

import contextvars
import json
import os
import time
from datetime import timedelta

import httpx
import polars as pl
import pytest

from core import auth, datasets, demo, features, registry
from core.cli import run
from core.config import Settings
from core.flows import promote
from core.flows.seed import seed_demo
from core.flows.train import train_model
from core.ids import utcnow
from core.lake import Lake
from core.serving.app import create_app
from core.serving.online import check_skew
from core.serving.schemas import Codec
from tests.test_serving_support import ThreadServer, serving_settings

VIEW_FEATURES = ["calls_30d", "active_30d", "long_calls_30d", "data_gb_7d"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo (churn on churn_usage v1, missing = default) plus churn_strict on v2 (missing = error, not materialised)."""
    root = tmp_path_factory.mktemp("features-serving")
    lake = Lake(str(root / "lake"))
    settings = Settings(lake_uri=lake.uri, actor="tester")
    seed_demo(lake=lake, rows=1500, settings=settings)
    strict, _ = features.register(features.parse_view({**demo.USAGE_VIEW, "missing": "error"}), lake=lake)
    features.build_training_set("churn_strict_training", labels="churn", views=[("churn_usage", strict.version)], lake=lake, settings=Settings(lake_uri=lake.uri, actor="tester"))
    out = train_model("churn_strict_training", target="churned", params={"num_iterations": 30}, lake=lake, settings=settings)
    mv = registry.register("churn_strict", out.run_id, lake=lake, actor="tester")
    promote.promote("churn_strict", mv.version, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    settings = serving_settings(root / "lake", root / "wal")
    with ThreadServer(create_app(settings)) as srv:
        yield lake, srv, root


def _rows(lake, n: int) -> list[dict]:
    frame = datasets.load("churn", lake=lake).head(n)
    return [{**{k: r[k] for k in demo.FEATURES}, "customer_id": r["customer_id"]} for r in frame.iter_rows(named=True)]


def _post(srv, body, model: str = "churn") -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/models/{model}/predict", json=body, timeout=30)


def _logged(lake, ids: list[str], model: str = "churn") -> pl.DataFrame:
    """The prediction-log rows of ``ids``, once the log writer has committed them all."""
    deadline = time.time() + 30
    while time.time() < deadline:
        if lake.exists(f"predictions/{model}"):
            rows = lake.read(f"predictions/{model}").filter(pl.col("prediction_id").is_in(ids))
            if rows.height == len(ids):
                return rows.sort("prediction_id")
        time.sleep(0.2)
    raise AssertionError("the prediction log did not arrive")


def test_entity_key_in_view_features_filled_scored_and_logged(world):
    lake, srv, _ = world
    body = _rows(lake, 5)
    resp = _post(srv, body)
    assert resp.status_code == 200, resp.text
    scores = resp.json()["scores"]
    online, _ = features.current_values("churn_usage", 1, lake=lake)
    expect = pl.DataFrame(body).join(online.select("customer_id", *VIEW_FEATURES), on="customer_id", how="left")
    model = registry.load("churn", lake=lake).model
    assert scores == pytest.approx(model.predict(expect).tolist(), abs=1e-12)
    ids = resp.json()["prediction_ids"]
    log = _logged(lake, ids)
    logged = log.select(pl.col("passthrough").struct.field("customer_id"), pl.col("features").struct.unnest())
    want = expect.sort("customer_id").select("customer_id", *(pl.col(c).cast(pl.Float64) for c in VIEW_FEATURES))
    assert logged.sort("customer_id").select("customer_id", *VIEW_FEATURES).equals(want)  # what the model saw

    cols = {"columns": {k: [r[k] for r in body] for k in body[0]}}
    assert _post(srv, cols).json()["scores"] == scores
    import pyarrow as pa
    import pyarrow.ipc as ipc

    sink = pa.BufferOutputStream()
    table = pl.DataFrame(body).to_arrow()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    arrow = httpx.post(f"{srv.url}/v1/models/churn/predict", content=sink.getvalue().to_pybytes(),
                       headers={"content-type": "application/vnd.apache.arrow.stream"}, timeout=30)
    assert arrow.status_code == 200, arrow.text
    assert arrow.json()["scores"] == scores


def test_missing_and_unknown_entities_by_policy(world):
    lake, srv, _ = world
    row = _rows(lake, 1)[0]
    sent_feature = _post(srv, [{**row, "calls_30d": 3}])
    assert sent_feature.status_code == 422 and sent_feature.json()["errors"][0]["field"] == "calls_30d"
    # churn: missing = "default": an unknown customer, or a row without the key, gets what a
    # training row without usage gets
    stranger = _post(srv, [{**row, "customer_id": "NOBODY"}, {k: v for k, v in row.items() if k != "customer_id"}])
    assert stranger.status_code == 200
    logged = _logged(lake, stranger.json()["prediction_ids"])
    served = logged.select(pl.col("features").struct.unnest()).select(VIEW_FEATURES).rows()
    assert served == [(0.0, 0.0, 0.0, 0.0)] * 2
    assert sorted(logged["passthrough"].struct.field("customer_id").to_list(), key=str) == ["NOBODY", None]
    one = _post(srv, [{**row, "customer_id": "NOBODY"}])  # the one-row path
    one_served = _logged(lake, one.json()["prediction_ids"]).select(pl.col("features").struct.unnest()).select(VIEW_FEATURES)
    assert one_served.rows() == [(0.0, 0.0, 0.0, 0.0)]


def test_not_materialised_is_503_then_served_after_materialising_and_refreshing(world):
    lake, srv, _ = world
    row = _rows(lake, 2)
    before = _post(srv, row, "churn_strict")
    assert before.status_code == 503 and before.json()["type"].endswith("/features-unavailable")
    assert "never been materialised" in httpx.get(srv.url + "/ready").json()["online_features"]["churn_usage@v2"]["error"]
    features.materialize("churn_usage", version=2, lake=lake)
    deadline = time.time() + 30
    while _post(srv, row, "churn_strict").status_code != 200:  # the model poll reloads the online table
        assert time.time() < deadline, "the API did not load the new online values"
        time.sleep(0.2)
    unknown = _post(srv, [row[0], {**row[1], "customer_id": "NOBODY"}], "churn_strict")
    assert unknown.status_code == 422 and unknown.json()["type"].endswith("/unknown-entity")
    assert unknown.json()["errors"] == [{"row": 1, "field": "customer_id", "message": "unknown entity 'NOBODY': no online features"}]
    no_key = _post(srv, [{k: v for k, v in row[0].items() if k != "customer_id"}], "churn_strict")  # missing = "error"
    assert no_key.status_code == 422 and no_key.json()["errors"][0] == {"row": 0, "field": "customer_id", "message": "missing entity key"}


def test_new_events_reach_the_served_values_without_a_restart(world, settings):
    lake, srv, _ = world
    row = _rows(lake, 1)[0]
    cid = row["customer_id"]
    now = utcnow()
    extra = pl.DataFrame({"customer_id": [cid] * 3, "event_at": [now - timedelta(hours=h) for h in (1, 2, 3)],
                          "calls": [50, 50, 50], "minutes": [100.0] * 3, "data_gb": [1.0] * 3})
    before = features.entity_vector("churn_usage", cid, version=1, lake=lake)["calls_30d"]
    datasets.ingest("churn_usage", extra, lake=lake, validate=False, settings=settings)
    m = features.materialize("churn_usage", version=1, lake=lake)
    assert features.entity_vector("churn_usage", cid, version=1, lake=lake)["calls_30d"] == before + 150
    deadline = time.time() + 30
    while (httpx.get(srv.url + "/ready").json()["online_features"]["churn_usage@v1"]["table_version"] or 0) < m.online_version:
        assert time.time() < deadline
        time.sleep(0.2)
    pid = _post(srv, [row]).json()["prediction_ids"][0]
    served = _logged(lake, [pid]).select(pl.col("features").struct.field("calls_30d")).item()
    assert served == before + 150


def test_skew_check_in_process_through_the_api_and_from_the_cli(world, capsys):
    lake, srv, _ = world
    report = check_skew("churn", entities=60, api=srv.url, lake=lake)
    assert report.identical and report.entities == 61 and report.unknown_entities == 1
    assert report.max_feature_diff == 0.0 and report.max_score_diff == 0.0 and report.api_max_score_diff == 0.0
    assert report.rows["score_offline"].to_list() == report.rows["score_online"].to_list()
    assert run(["--lake", lake.uri, "features", "check-skew", "--model", "churn", "--entities", "20"]) == 0
    out = capsys.readouterr().out
    assert "max |score offline - online|   = 0" in out and "identical (tolerance 1e-12)" in out
    assert run(["--lake", lake.uri, "features", "check-skew", "--model", "nope"]) == 2


def test_lineage_query_walks_a_prediction_back_to_its_sources(world, capsys):
    lake, srv, _ = world
    pid = _post(srv, _rows(lake, 1)).json()["prediction_ids"][0]
    _logged(lake, [pid])
    deadline = time.time() + 30
    while features.lineage("churn", pid, lake=lake).height == 0:
        assert time.time() < deadline
        time.sleep(0.2)
    row = features.lineage("churn", pid, lake=lake).row(0, named=True)
    assert (row["model_version"], row["training_set"], row["training_set_version"]) == (1, "churn_training", 1)
    assert (row["view"], row["view_version"], row["source_dataset"], row["source_version"]) == ("churn_usage", 1, "churn_usage", 1)
    assert (row["label_dataset"], row["label_version"]) == ("churn", 1)
    assert run(["--lake", lake.uri, "features", "lineage", "--model", "churn", "--prediction", pid, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["view_hash"] == features.get_view("churn_usage", 1, lake=lake).content_hash()
    from core import sql

    online = sql.query(lake, "select count(distinct customer_id) as n, max(__as_of) as as_of from online_churn_usage_v1")
    assert online["n"][0] == features.current_values("churn_usage", 1, lake=lake)[0].height
    views = sql.query(lake, "select name, version, status from feature_views order by version")
    assert views.rows() == [("churn_usage", 1, "registered"), ("churn_usage", 2, "registered")]
    assert sql.query(lake, "select count(*) as n from data_churn_training")["n"][0] == 1500


def test_openapi_and_plain_models_keep_the_plain_codec(world, settings):
    lake, srv, _ = world
    doc = httpx.get(srv.url + "/schema/openapi.json").json()
    body = json.dumps(doc["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"])
    assert '"customer_id"' in body and '"calls_30d"' not in body
    from core.serving.config import serving_config
    from core.serving.models import ModelCache

    cache = ModelCache(lake, serving_config(serving_settings(lake.uri, lake.uri + "-wal")))
    train = train_model("churn", target="churned", params={"num_iterations": 10}, lake=lake, settings=settings)
    mv = registry.register("plain", train.run_id, lake=lake, actor="tester")
    assert type(cache._load("plain", mv.version).codec) is Codec
    assert type(cache._load("churn", 1).codec).__name__ == "OnlineCodec"


def test_with_auth_on_a_view_model_is_served_and_features_and_score_act_as_the_token(world, tmp_path, monkeypatch, capsys):
    lake, srv, root = world
    tok = {n: auth.create_token(n, s, actor="tester", lake=lake)[0]
           for n, s in (("scorer", ["predict"]), ("reader", ["read"]), ("boss", ["admin"]))}
    body = _rows(lake, 5)
    open_scores = _post(srv, body).json()["scores"]
    with ThreadServer(create_app(serving_settings(root / "lake", tmp_path / "wal").with_(auth_mode="tokens"))) as sec:
        url = f"{sec.url}/v1/models/churn/predict"
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {tok['scorer']}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == open_scores  # the same online values fill the same features
        logged = _logged(lake, r.json()["prediction_ids"]).select(pl.col("features").struct.unnest())
        assert logged.select(VIEW_FEATURES).null_count().sum_horizontal()[0] == 0  # filled from the online table

        for k in [k for k in os.environ if k.startswith("LAKEOPS_")]:
            monkeypatch.delenv(k)
        monkeypatch.setenv("LAKEOPS_AUTH", "tokens")
        monkeypatch.setenv("LAKEOPS_ACTOR", "mallory")

        def cli(token: str, *argv: str) -> tuple[int, str, str]:
            monkeypatch.setenv("LAKEOPS_TOKEN", token)
            code = contextvars.copy_context().run(run, ["--lake", lake.uri, *argv])  # the principal stays in there
            out = capsys.readouterr()
            return code, out.out, out.err

        assert cli(tok["reader"], "features", "list")[0] == 0  # reading needs only read
        code, _, err = cli(tok["scorer"], "features", "list")
        assert code == 2 and "needs the 'read' scope" in err
        # the skew check posts to the API with the CLI's token: a reader may not score there ...
        code, _, err = cli(tok["reader"], "features", "check-skew", "--model", "churn", "--entities", "10", "--api", sec.url)
        assert code == 2 and "answered 403" in err and tok["reader"] not in err
        code, out, _ = cli(tok["boss"], "features", "check-skew", "--model", "churn", "--entities", "10", "--api", sec.url)
        assert code == 0 and "max |score offline - API|      = 0" in out  # ... an admin may
        # writes need admin, and name the principal, not LAKEOPS_ACTOR
        code, _, err = cli(tok["reader"], "features", "materialize", "churn_usage")
        assert code == 2 and "needs the 'admin' scope" in err
        assert cli(tok["boss"], "features", "materialize", "churn_usage", "--full")[0] == 0
        assert lake.read("feature_materializations").sort("at")["created_by"].to_list()[-1] == "boss"
        code, _, err = cli(tok["reader"], "score", "--dataset", "churn", "--model", "churn_strict", "--output", "scored")
        assert code == 2 and "needs the 'admin' scope" in err and not lake.exists("data/scored")
        code, out, err = cli(tok["boss"], "score", "--dataset", "churn_strict_training", "--model", "churn_strict",
                             "--output", "scored")
        assert code == 0, err
        assert lake.read("datasets").filter(pl.col("name") == "scored")["created_by"].to_list() == ["boss"]
        from core import tracking

        run_id = out.rsplit("(run ", 1)[1].split(")")[0]
        assert tracking.get_run(run_id, lake=lake).user == "boss"  # the tracking run too, not LAKEOPS_ACTOR
