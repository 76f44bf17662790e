from __future__ import annotations

import json
import os
import subprocess

import pytest

from core import datasets, demo, registry
from core.cli import run
from core.config import Settings
from core.flows.train import train_model
from core.lake import Lake


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("cli") / "lake")
    settings = Settings(lake_uri=lake.uri, actor="tester")
    datasets.ingest("churn", demo.generate(n=2000, seed=5), lake=lake, settings=settings)
    run_a = train_model("churn", target="churned", params={"num_iterations": 20}, lake=lake, settings=settings).run_id
    run_b = train_model(
        "churn", target="churned", params={"num_iterations": 5, "num_leaves": 2}, seed=2, lake=lake
    , settings=settings).run_id
    return lake, run_a, run_b


@pytest.fixture
def cli(trained, monkeypatch, capsys):
    lake = trained[0]
    monkeypatch.setenv("LAKEOPS_ACTOR", "carol")
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)

    def call(*argv: str) -> tuple[int, str, str]:
        code = run(["--lake", lake.uri, "models", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def _one_error_line(err: str, code: int, needle: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lakeops: error:") and needle in lines[0], err


def test_register_evaluate_promote_history(trained, cli):
    lake, run_a, _ = trained
    code, out, _ = cli("register", "churn", run_a, "--description", "baseline", "--tag", "team=growth")
    assert code == 0 and "registered churn v1" in out
    code, out, err = cli("evaluate", "churn", "1")
    assert code == 0 and "gate PASSED for churn v1" in out and "no champion" in out, err
    code, out, _ = cli("promote", "churn", "1", "--reason", "first launch")
    assert code == 0 and "none -> v1" in out
    code, out, _ = cli("show", "churn")
    assert code == 0 and "champion" in out and "passed" in out
    code, out, _ = cli("show", "churn", "1")
    assert code == 0 and "team" in out and "beat_champion:auc" in out
    code, out, _ = cli("history", "churn", "--format", "json")
    rows = json.loads(out)
    assert (
        code == 0
        and rows[0]["actor"] == "carol"
        and rows[0]["reason"] == "first launch"
        and rows[0]["version"] == 1
    )
    code, out, _ = cli("history", "churn", "--at", rows[0]["at"])
    assert code == 0 and out.startswith("v1 held champion of churn") and "carol" in out and "first launch" in out
    code, out, _ = cli("history", "churn", "--at", "2001-01-01T00:00:00")
    assert code == 0 and out.startswith("no version held champion")
    code, out, _ = cli("history", "churn", "--all")
    assert code == 0 and all(a in out for a in ("register", "gate", "promote"))
    code, out, _ = cli("list", "--format", "json")
    assert json.loads(out)[0]["champion"] == 1


def test_failed_gate_force_and_rollback(trained, cli, tmp_path):
    lake, run_a, run_b = trained
    policy = tmp_path / "strict.toml"
    policy.write_text("[policy]\nmin = {auc = 0.999}\n")
    cli("register", "strict", run_a)
    cli("register", "strict", run_b)
    cli("evaluate", "strict", "1")
    cli("promote", "strict", "1", "--reason", "first")
    code, out, _ = cli("evaluate", "strict", "2", "--policy", str(policy))
    assert code == 1 and "FAIL" in out and "min:auc" in out
    code, _, err = cli("promote", "strict", "2", "--reason", "try", "--policy", str(policy))
    _one_error_line(err, code, "failed its gate: min:auc")
    code, _, err = cli("promote", "strict", "2", "--force")
    _one_error_line(err, code, "the following arguments are required: --reason")
    code, _, err = cli("promote", "strict", "2", "--force", "--reason", " ")
    _one_error_line(err, code, "needs a reason")
    code, out, _ = cli(
        "promote", "strict", "2", "--force", "--reason", "exec override", "--policy", str(policy)
    )
    assert code == 0 and "FORCED" in out
    hist = registry.history("strict", "champion", lake=lake)
    assert hist["forced"].to_list() == [False, True]
    code, out, _ = cli("rollback", "strict", "--reason", "bad latency")
    assert code == 0 and "v2 -> v1" in out
    assert registry.champion_version("strict", lake) == 1
    code, _, err = cli("rollback", "strict", "--reason", "again")
    _one_error_line(err, code, "no previous champion")


def test_bad_input_is_one_line_and_exit_2(trained, cli):
    _, run_a, _ = trained
    cli("register", "bad", run_a)
    cases = [
        (("show", "nosuch"), "'nosuch' is not registered"),
        (("evaluate", "bad", "9"), "has versions 1; asked for 9"),
        (("promote", "bad", "1", "--reason", "x"), "no gate report"),
        (("approve", "bad", "1"), "the following arguments are required: --reason"),
        (("approve", "bad", "1", "--reason", ""), "needs a reason"),
        (("alias", "bad", "challenger", "--delete", "--reason", "x"), "no alias 'challenger'"),
        (("alias", "bad", "champion", "1", "--reason", "x"), "only through 'promote'"),
        (("register", "bad", "no-such-run"), "no-such-run"),
    ]
    for argv, needle in cases:
        code, _, err = cli(*argv)
        _one_error_line(err, code, needle)
    code, out, _ = cli("alias", "bad", "challenger", "1", "--reason", "shadow")
    assert code == 0 and "v1" in out


def test_end_to_end_subprocess(trained):
    lake = trained[0]
    env = {**os.environ, "LAKEOPS_LAKE": lake.uri, "LAKEOPS_ACTOR": "dave"}
    ok = subprocess.run(["lakeops", "models", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "churn" in ok.stdout
    bad = subprocess.run(
        ["lakeops", "models", "promote", "nosuch", "1", "--reason", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip().count("\n") == 0
        and "'nosuch' is not registered" in bad.stderr
    )
