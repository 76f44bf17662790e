"""Derived SQL views that answer common questions without traps: champions and aliases as the
registry derives them, artifacts, runs as one row per run."""

from __future__ import annotations

import polars as pl

from core import registry, tracking
from core.lake import Lake
from core.sql import query, views


def _events(lake: Lake) -> dict[str, str]:
    """A history with a lost compare-and-swap, a rollback and an alias removed; event ids by name."""
    ev = registry.record_event
    ids = {}
    for v in (1, 2, 3):
        ev("churn", "register", version=v, lake=lake, actor="tester")
    ids["p1"] = ev("churn", "promote", version=1, alias="champion", reason="first", lake=lake, actor="tester")
    ids["p2"] = ev("churn", "promote", version=2, alias="champion", reason="better", report={"expected": 1}, lake=lake, actor="tester")
    # a promotion that lost the race: it expected v1 but v2 held the alias, so it does not apply
    ids["lost"] = ev("churn", "promote", version=3, alias="champion", reason="stale", report={"expected": 1}, lake=lake, actor="tester")
    ids["ch"] = ev("churn", "alias", version=3, alias="challenger", reason="shadow", lake=lake, actor="tester")
    ids["again"] = ev("churn", "promote", version=2, alias="champion", reason="same", report={"expected": 2}, lake=lake, actor="tester")
    ids["rb"] = ev("churn", "rollback", version=1, alias="champion", reason="bad v2", report={"expected": 2}, lake=lake, actor="tester")
    ids["shadow"] = ev("churn", "alias", version=2, alias="shadow", reason="try", report={"expected": None}, lake=lake, actor="tester")
    ids["un"] = ev("churn", "unalias", alias="challenger", reason="done", lake=lake, actor="tester")
    ev("price", "register", version=5, lake=lake, actor="tester")
    ids["price"] = ev("price", "promote", version=5, alias="champion", reason="first", lake=lake, actor="tester")
    ids["race"] = ev("race", "promote", version=1, alias="champion", reason="first", report={"expected": None}, lake=lake, actor="tester")
    # the last event lost its race (it expected no champion): v1 keeps the alias
    ev("race", "promote", version=2, alias="champion", reason="late", report={"expected": None}, lake=lake, actor="tester")
    return ids


def test_champions_and_aliases_agree_with_the_registry(lake: Lake):
    ids = _events(lake)
    at = dict(query(lake, "select event_id, at from registry_events").iter_rows())
    champions = query(lake, "select model, alias, version, since from champions order by model")
    assert champions.rows() == [
        ("churn", "champion", 1, at[ids["rb"]]),
        ("price", "champion", 5, at[ids["price"]]),
        ("race", "champion", 1, at[ids["race"]]),
    ]
    for model in ("churn", "price", "race"):
        assert champions.filter(pl.col("model") == model)["version"].item() == registry.aliases(model, lake=lake)["champion"]
    every = query(lake, "select model, alias, version from model_aliases order by model, alias").rows()
    expected = sorted((m, a, v) for m in ("churn", "price", "race") for a, v in registry.aliases(m, lake=lake).items())
    assert every == expected
    assert every == [("churn", "champion", 1), ("churn", "shadow", 2), ("price", "champion", 5), ("race", "champion", 1)]
    assert "since" in views(lake)["champions"]


def test_since_stays_while_the_same_version_is_promoted_again(lake: Lake):
    ev = registry.record_event
    first = ev("m", "promote", version=4, alias="champion", reason="a", lake=lake, actor="tester")
    ev("m", "promote", version=4, alias="champion", reason="again", report={"expected": 4}, lake=lake, actor="tester")
    since = query(lake, "select since from champions").item()
    assert since == query(lake, "select at from registry_events where event_id = ?", [first]).item()


def test_artifacts_are_queryable_and_stay_out_of_maintenance(lake: Lake, tmp_path):
    with tracking.start_run("art", lake=lake) as run:
        run.log_artifact("model/model.txt", data=b"tree")
        run.log_dict("model/signature.json", {"a": 1})
    tracking.flush(lake)
    out = query(lake, "select run_id, path, size_bytes from artifacts order by path")
    sizes = {p: len(tracking.read_artifact(run.run_id, p, lake=lake)) for p in ("model/model.txt", "model/signature.json")}
    assert out.rows() == [(run.run_id, p, n) for p, n in sizes.items()]
    assert views(lake)["artifacts"] == "artifacts"
    # the table's folder also holds the artifact files: a full vacuum there would delete them
    assert "artifacts" not in lake.tables()
    lake.maintain()
    assert tracking.read_artifact(run.run_id, "model/model.txt", lake=lake) == b"tree"


def test_runs_joined_with_its_metrics_counts_each_run_once(lake: Lake):
    for i in range(3):
        with tracking.start_run("e", name=f"r{i}", lake=lake) as run:
            run.log_metrics({"auc": 0.5 + i / 10})
            run.log_params({"seed": i})
            run.set_tags({"team": "t"})
    tracking.flush(lake)
    joined = query(lake, "select count(*) as n from runs r join metrics m using (run_id)")["n"].item()
    assert joined == 3  # not 6: runs has one row per run, runs_history two (running, finished)
    assert query(lake, "select count(*) as n from runs_history")["n"].item() == 6
    wide = query(lake, "select name, status, metrics['auc'] as auc from runs_wide order by name")
    assert wide.rows() == [("r0", "finished", 0.5), ("r1", "finished", 0.6), ("r2", "finished", 0.7)]


def test_labelled_predictions_and_performance_by_version_agree_with_the_metrics(tmp_path):
    import numpy as np
    import polars as pl

    from core import monitoring, sql
    from core.training import compute_metrics
    from tests.monitor_world import MODEL, build_champion, log_predictions, send_feedback, traffic

    lake = build_champion(tmp_path / "lake", rows=1500)
    logged = log_predictions(lake, traffic(800, seed=3, campaign=True))
    send_feedback(lake, logged, share=0.6, seed=1)
    send_feedback(lake, logged.head(50).with_columns((1 - pl.col("truth")).alias("truth")), share=1.0)  # relabelled: latest wins
    rows = sql.query(lake, "select * from labelled_predictions where model = 'churn'")
    truth = monitoring.ground_truth(MODEL, lake=lake)
    assert rows.height == truth.height
    got = dict(zip(rows["prediction_id"].to_list(), rows["true_label"].to_list(), strict=True))
    assert got == dict(zip(truth["prediction_id"].to_list(), truth["truth"].to_list(), strict=True))
    perf = sql.query(lake, "select * from performance_by_version where model = 'churn'").row(0, named=True)
    joined = monitoring.labelled_window(MODEL, lake=lake)[0]
    expected = compute_metrics("binary", joined["truth"].to_numpy(), joined["score"].to_numpy())
    assert perf["labelled"] == joined.height and perf["model_version"] == 1
    assert perf["auc"] == __import__("pytest").approx(expected["auc"], abs=1e-12)
    assert perf["accuracy"] == __import__("pytest").approx(expected["accuracy"], abs=1e-12)
    assert perf["brier"] == __import__("pytest").approx(expected["brier"], abs=1e-12)
    assert np.isfinite(perf["auc"])


def test_job_runs_counts_each_execution_once(tmp_path):
    from core import sql
    from core.config import load_settings
    from core.jobruns import run_job
    from core.lake import Lake

    settings = load_settings(env={}, config_path=None, lake_uri=str(tmp_path / "lake"), actor="t",
                             sections={"jobs": {"extra": {"tick": {"func": "jobfuncs:tick"}}}})
    lake = Lake.from_settings(settings)
    for _ in range(3):
        run_job("tick", lake=lake, settings=settings)
    assert sql.query(lake, "select count(*) as n from job_runs_history")["n"][0] == 6  # running, then finished
    latest = sql.query(lake, "select status, count(*) as n from job_runs group by status")
    assert latest.to_dicts() == [{"status": "finished", "n": 3}]
