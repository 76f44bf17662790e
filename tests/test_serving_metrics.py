"""/metrics label values come from user data (feature names): the exposition escapes them; and a
model whose feature names are not Python identifiers (or hold a quote, a backslash, a newline) is
served (it used to stop the server from starting: the request struct took the names as attributes)."""

from __future__ import annotations

import httpx
import numpy as np
import polars as pl

from core import datasets, registry
from core.flows.promote import promote
from core.flows.train import train_model
from core.lake import Lake
from core.serving.app import create_app
from tests.test_serving_support import ThreadServer, serving_settings

WEIRD = 'plan "b"\\c\nd'  # a quote, a backslash and a newline in a feature (column) name


def _samples(families, name: str) -> list:
    return [s for f in families for s in f.samples if s.name == name]


def test_metrics_escape_a_feature_name_with_quote_backslash_and_newline(tmp_path, settings):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
    from prometheus_client.parser import text_string_to_metric_families

    lake = Lake(str(tmp_path / "lake"))
    rng = np.random.default_rng(0)
    n = 400
    frame = pl.DataFrame({"x": rng.normal(size=n), WEIRD: rng.choice(["a", "b", "c"], n), "y": rng.integers(0, 2, n)})
    datasets.ingest("odd", frame, lake=lake, actor="tester", settings=settings)
    dashed = frame.rename({"x": "x-y", WEIRD: "class"})  # not identifiers, but plain JSON names
    datasets.ingest("dashed", dashed, lake=lake, actor="tester", settings=settings)
    for name in ("odd", "dashed"):
        outcome = train_model(name, target="y", params={"num_iterations": 5}, lake=lake, settings=settings)
        registry.register(name, outcome.run_id, actor="tester", lake=lake)
        promote(name, 1, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    app = create_app(serving_settings(tmp_path / "lake", tmp_path / "wal"), lake=lake)
    rows = [{"x": 0.5, WEIRD: "zzz"}, {"x": 1.0, WEIRD: "a"}, {"x": 1.5, WEIRD: "never seen"}]
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v1/models/odd/predict", json=rows)
        assert r.status_code == 200, r.text
        cols = c.post("/v1/models/odd/predict", json={"columns": {k: [row[k] for row in rows] for k in rows[0]}})
        assert cols.status_code == 200 and cols.json()["scores"] == r.json()["scores"]
        for body, field, message in (
            ([{"x": "one", WEIRD: "a"}], "x", "Expected `float | null`, got `str`"),
            ([{"x": 1.0}], WEIRD, f"missing feature {WEIRD!r}"),
            ([{"x": 1.0, WEIRD: "a", "f0": 2}], "f0", "unknown field 'f0': neither a feature nor a pass-through "
                                                      "field of the model's signature"),
        ):
            bad = c.post("/v1/models/odd/predict", json=body)
            assert bad.status_code == 422 and bad.json()["errors"] == [{"row": 0, "field": field, "message": message}]
        d = c.post("/v1/models/dashed/predict", json=[{"x-y": 0.5, "class": "a"}, {"x-y": 1.0, "class": "b"}])
        assert d.status_code == 200, d.text
        bad = c.post("/v1/models/dashed/predict", json=[{"x-y": "one", "class": "a"}])
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "x-y"
        text = c.get("/metrics").text
        om = c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert "\n" + 'd"' not in text  # the raw newline never reaches the exposition
    samples = _samples(list(text_string_to_metric_families(text)), "lakeops_unknown_category_total")
    assert [(s.labels["model"], s.labels["feature"], s.value) for s in samples] == [("odd", WEIRD, 4.0)]
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    samples = _samples(list(openmetrics_families(om.text)), "lakeops_unknown_category_total")
    assert [(s.labels["model"], s.labels["feature"], s.value) for s in samples] == [("odd", WEIRD, 4.0)]
