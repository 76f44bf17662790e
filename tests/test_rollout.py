"""Staged rollout: shadow and canary challengers on live traffic, the live gate, withdrawal, reliability."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from core import datasets, demo, monitoring, registry
from core.config import load_settings
from core.errors import PromotionRefusedError
from core.flows import promote, rollout
from core.flows.train import train_model
from core.lake import Lake
from core.serving.app import create_app
from tests.test_serving_support import (
    ProcessServer,
    ThreadServer,
    champion_lake_path,
    copy_lake,
    metric,
    wait_for,
)

PREDICT = "/v1/models/churn/predict"


def _settings(lake_path, wal, **staging):
    policy = {"beat_champion": False, "auto_promote": True, "max_p95_latency_ms": {1: 2000.0, 100: 5000.0}}
    if staging:
        policy["staging"] = staging
    return load_settings(env={}, config_path=None, lake_uri=str(lake_path), actor="tester", sections={
        "serving": {"wal_dir": str(wal), "flush_interval_s": 0.2, "poll_interval_s": 0.2},
        "models": {"churn": {"policy": policy}}})


def _rows(n: int, seed: int) -> list[dict]:
    frame = demo.generate(n=n, seed=seed).drop("churned", "signup_at")
    return frame.to_dicts()


@pytest.fixture
def staged_lake(tmp_path, tmp_path_factory):
    """The champion lake (v1 champion, v2 candidate) with v2 gated against v1."""
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    s = _settings(lake.uri, tmp_path / "wal", mode="shadow", min_requests=60, min_labelled=30, tolerance=0.05)
    assert promote.evaluate("churn", 2, lake=lake, settings=s).passed
    return lake, s


def test_staging_needs_a_gate_and_a_smoke_test_through_the_serving_path(tmp_path, tmp_path_factory):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    s = _settings(lake.uri, tmp_path / "wal")
    with pytest.raises(PromotionRefusedError, match="passing gate"):
        rollout.stage("churn", 2, mode="shadow", reason="try", lake=lake, settings=s)
    assert promote.evaluate("churn", 2, lake=lake, settings=s).passed
    smoke = rollout.smoke_test("churn", 2, lake=lake)
    assert smoke.ok and smoke.rows > 0 and smoke.max_abs_diff <= 1e-9
    path = Path(lake.uri) / registry.artifact_path("churn", 2)
    saved = path.read_bytes()
    path.write_bytes(saved + b"\n")
    with pytest.raises(PromotionRefusedError, match="smoke test.*sha256"):
        rollout.stage("churn", 2, mode="shadow", reason="try", lake=lake, settings=s)
    path.write_bytes(saved)
    with pytest.raises(Exception, match="fraction"):
        rollout.stage("churn", 2, mode="canary", fraction=0, reason="try", lake=lake, settings=s)
    change = rollout.stage("churn", 2, mode="shadow", reason="a live look", lake=lake, settings=s)
    assert change.action == "stage" and registry.state("churn", lake=lake).stage.mode == "shadow"
    assert registry.statuses("churn", lake=lake)[2] == "challenger (shadow)"


def test_shadow_scores_every_request_off_path_then_the_live_gate_promotes(staged_lake):
    lake, s = staged_lake
    rollout.stage("churn", 2, mode="shadow", reason="live look", lake=lake, settings=s)
    app = create_app(s)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        wait_for(lambda: app.state.service.cache.stages.get("churn") is not None)
        ids, truth = [], {}
        data = demo.generate(n=120, seed=11)
        for k in range(12):
            batch = data.slice(k * 10, 10)
            r = c.post(PREDICT, json=batch.drop("churned", "signup_at").to_dicts()).json()
            assert (r["version"], r["role"]) == (1, "champion")  # the champion answers
            ids += r["prediction_ids"]
            truth.update(zip(r["prediction_ids"], batch["churned"].to_list(), strict=True))
        assert c.post("/v1/models/churn/feedback", json=[{"prediction_id": i, "label": truth[i]} for i in ids]).status_code == 202
        wait_for(lambda: lake.exists("predictions/churn") and lake.read("predictions/churn").height == 240)
        log = lake.read("predictions/churn")
        shadow = log.filter(pl.col("role") == "shadow")
        assert sorted(shadow["prediction_id"].to_list()) == sorted(ids) and set(shadow["model_version"]) == {2}
        assert sorted(log.filter(pl.col("role") == "champion")["prediction_id"].to_list()) == sorted(ids)
        assert monitoring.window("churn", lake=lake).height == 120  # monitoring sees the answers only
        wait_for(lambda: monitoring.ground_truth("churn", lake=lake).height == 120)
        out = rollout.check_rollout("churn", lake=lake, settings=s)
        assert out is not None and out.action == "promoted", out.why
        rep = out.report
        assert rep.requests == 120 and rep.labelled == 120 and rep.agreement is not None and rep.errors == 0
        assert rep.comparison["method"] == "delong" and rep.comparison["n"] == 120
        assert rollout.live_reports("churn", lake=lake)["passed"].to_list() == [True]
        assert registry.champion_version("churn", lake) == 2 and registry.state("churn", lake=lake).stage is None
        wait_for(lambda: c.post(PREDICT, json=_rows(1, 3)).json()["version"] == 2, timeout=20)
    assert "challenger" not in registry.aliases("churn", lake=lake)
    from core import sql

    view = sql.query(lake, "select alias, version from model_aliases where model = 'churn'")
    assert dict(zip(view["alias"].to_list(), view["version"].to_list(), strict=True)) == registry.aliases("churn", lake=lake)


def test_canary_routes_each_key_to_one_model_and_says_which(staged_lake, tmp_path):
    lake, s = staged_lake
    rollout.stage("churn", 2, mode="canary", fraction=0.5, reason="half", lake=lake, settings=s)
    rows = _rows(40, 5)
    with ThreadServer(create_app(s)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        wait_for(lambda: c.post(PREDICT, json=rows[:1]).json()["role"] in ("champion", "challenger"))
        first = c.post(PREDICT, json=rows).json()
        again = c.post(PREDICT, json=rows).json()
        assert first["roles"] == again["roles"]  # the same customer always meets the same model
        assert 5 < first["roles"].count("challenger") < 35
        assert all((v, r) in ((1, "champion"), (2, "challenger")) for v, r in zip(first["versions"], first["roles"], strict=True))
        one = c.post(PREDICT, json=[rows[first["roles"].index("challenger")]]).json()
        assert (one["version"], one["role"]) == (2, "challenger") and "roles" not in one
        ids = first["prediction_ids"]
        wait_for(lambda: lake.exists("predictions/churn") and lake.read("predictions/churn").filter(
            pl.col("prediction_id").is_in(ids)).height == 40)
    logged = lake.read("predictions/churn").filter(pl.col("prediction_id").is_in(ids))
    by_id = dict(zip(logged["prediction_id"].to_list(), zip(logged["role"].to_list(), logged["model_version"].to_list(),
                                                             strict=True), strict=True))
    assert [by_id[i] for i in ids] == list(zip(first["roles"], first["versions"], strict=True))


def test_a_challenger_that_fails_on_live_traffic_is_withdrawn_with_an_alert(tmp_path, tmp_path_factory, settings):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    s = _settings(lake.uri, tmp_path / "wal", mode="shadow", min_requests=20, min_labelled=0)
    # v3 needs a feature the clients never send: the service cannot score their requests with it
    extra = demo.generate(n=3000, seed=0).with_columns((pl.col("age") * 2.0).alias("age_twice"))
    datasets.ingest("churn_plus", extra, lake=lake, actor="tester", settings=settings)
    run = train_model("churn_plus", target="churned", params={"num_iterations": 20}, lake=lake, settings=settings)
    v3 = registry.register("churn", run.run_id, actor="tester", lake=lake).version
    assert promote.evaluate("churn", v3, lake=lake, settings=s).passed
    rollout.stage("churn", v3, mode="shadow", reason="try it", lake=lake, settings=s)
    app = create_app(s)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        wait_for(lambda: app.state.service.cache.stages.get("churn") is not None)
        for k in range(5):
            r = c.post(PREDICT, json=_rows(10, k))
            assert r.status_code == 200 and r.json()["version"] == 1  # never a failed answer
        wait_for(lambda: metric(c.get("/metrics").text, "lakeops_shadow_errors_total", model="churn") == 50, timeout=20)
        wait_for(lambda: lake.exists("predictions/churn") and lake.read("predictions/churn").filter(
            pl.col("role") == "shadow").height == 50)
    out = rollout.check_rollout("churn", lake=lake, settings=s)
    assert out.action == "withdrawn" and "max_error_rate" in out.why
    assert registry.state("churn", lake=lake).stage is None and registry.champion_version("churn", lake) == 1
    alert = monitoring.alerts("churn", lake=lake).filter(pl.col("kind") == "rollout")
    assert alert.height == 1 and alert["model_version"][0] == v3


_POOL = _rows(300, 21)  # 300 customers: a canary's hash sends some of them to the challenger


def _load(url: str, stop: threading.Event, answers: list, failures: list) -> None:
    k = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            rows = _POOL[k % 100 * 3 : k % 100 * 3 + 3]
            k += 1
            try:
                r = c.post(PREDICT, json=rows)
            except httpx.HTTPError as exc:
                failures.append(str(exc))
                continue
            if r.status_code != 200:
                failures.append(r.text)
                continue
            body = r.json()
            roles = body.get("roles") or [body["role"]] * 3
            versions = body.get("versions") or [body["version"]] * 3
            answers.extend(zip(body["prediction_ids"], roles, versions, strict=True))


def test_shadow_canary_promote_abort_under_load_without_a_failed_request(staged_lake, tmp_path, settings):
    lake, s = staged_lake
    answers: list = []
    failures: list = []
    stop = threading.Event()
    with ThreadServer(create_app(s)) as srv:
        threads = [threading.Thread(target=_load, args=(srv.url, stop, answers, failures)) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            steps = [
                lambda: rollout.stage("churn", 2, mode="shadow", reason="shadow", lake=lake, settings=s),
                lambda: rollout.stage("churn", 2, mode="canary", fraction=0.5, reason="canary", lake=lake, settings=s),
                lambda: promote.promote("churn", 2, reason="done", actor="tester", force=True, lake=lake, settings=settings),
                lambda: promote.evaluate("churn", 1, lake=lake, settings=s),
                lambda: rollout.stage("churn", 1, mode="shadow", reason="look back", lake=lake, settings=s),
                lambda: rollout.unstage("churn", reason="abort", lake=lake, settings=s),
            ]
            for step in steps:
                step()
                time.sleep(1.0)  # > poll interval: every worker sees each state under traffic
        finally:
            stop.set()
            for t in threads:
                t.join()
        wait_for(lambda: set(a[0] for a in answers) <= set(lake.read("predictions/churn")["prediction_id"].to_list()),
                 timeout=30)
    assert not failures and len(answers) > 100
    assert {(r, v) for _, r, v in answers} >= {("champion", 1), ("challenger", 2), ("champion", 2)}
    log = lake.read("predictions/churn").filter(pl.col("role") != "shadow")
    got = dict(zip(log["prediction_id"].to_list(), zip(log["role"].to_list(), log["model_version"].to_list(), strict=True),
                   strict=True))
    assert log["prediction_id"].n_unique() == log.height  # each answer logged once
    assert all(got[i] == (r, v) for i, r, v in answers)  # and as the answer said
    shadow = lake.read("predictions/churn").filter(pl.col("role") == "shadow")
    assert shadow.height > 0 and shadow["prediction_id"].n_unique() == shadow.height
    assert set(shadow["prediction_id"].to_list()) <= set(got)


def test_sigkill_during_shadow_loses_no_acknowledged_row_of_either_role(staged_lake, tmp_path):
    lake, s = staged_lake
    rollout.stage("churn", 2, mode="shadow", reason="shadow", lake=lake, settings=s)
    config = tmp_path / "lakeops.toml"
    config.write_text(f'[serving]\nwal_dir = "{tmp_path / "wal2"}"\nflush_interval_s = 0.5\npoll_interval_s = 0.2\n')
    server = ProcessServer(Path(lake.uri), config).start()
    answers: list = []
    failures: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(server.url, stop, answers, failures)) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(answers) > 600, timeout=60, interval=0.05)
        server.kill()
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
    restarted = ProcessServer(Path(lake.uri), config, port=server.port).start()
    try:
        wait_for(lambda: httpx.get(restarted.url + "/ready").json()["wal_backlog_bytes"] == 0, timeout=60)
    finally:
        restarted.stop()
    log = lake.read("predictions/churn")
    acked = {a[0] for a in answers}
    champion = log.filter(pl.col("role") == "champion")
    shadow = log.filter(pl.col("role") == "shadow")
    assert acked <= set(champion["prediction_id"].to_list())  # every answer is in the log
    assert champion["prediction_id"].n_unique() == champion.height and shadow["prediction_id"].n_unique() == shadow.height
    assert set(shadow["prediction_id"].to_list()) <= set(champion["prediction_id"].to_list())
    assert shadow.height >= 0.5 * len(acked)  # shadow rows written before the kill survived it too


def test_cli_stage_rollout_unstage(staged_lake, capsys):
    from core import cli

    lake, _ = staged_lake
    base = ["--lake", lake.uri, "models"]
    capsys.readouterr()
    assert cli.run([*base, "stage", "churn", "1", "--mode", "shadow", "--reason", "x"]) == 2  # the champion itself
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.run([*base, "stage", "churn", "2", "--mode", "canary", "--fraction", "0.2", "--reason", "try"]) == 0
    out = capsys.readouterr().out
    assert "v2 in canary mode answering 20% of the keys" in out and "smoke test" in out
    assert cli.run([*base, "rollout", "churn", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "min_requests" in out and "compared: collecting traffic" in out
    assert cli.run([*base, "unstage", "churn", "--reason", "enough"]) == 0
    assert registry.state("churn", lake=lake).stage is None
    assert cli.run([*base, "rollout", "churn"]) == 2
