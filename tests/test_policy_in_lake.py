"""Promotion policies recorded in the lake: precedence, audit trail, CLI."""

from __future__ import annotations

import pytest

from core.cli import run
from core.config import load_settings
from core.errors import ConfigError, RegistryError
from core.flows import promote
from core.registry import events


def test_recorded_policy_applies_until_a_toml_section_overrides_it(lake, settings):
    assert promote.policy_with_source("churn", settings=settings, lake=lake)[1] == "defaults"
    promote.set_policy("churn", {"auto_promote": True, "min": {"auc": 0.7}}, reason="demo", actor="ann", lake=lake, settings=settings)
    policy, source = promote.policy_with_source("churn", settings=settings, lake=lake)
    assert policy.auto_promote and dict(policy.min) == {"auc": 0.7}
    assert "recorded in the lake by ann" in source
    ev = events("churn", lake=lake).filter(events("churn", lake=lake)["action"] == "policy")
    assert ev.height == 1 and ev["reason"][0] == "demo"
    toml = load_settings(env={}, lake_uri=lake.uri, sections={"models": {"churn": {"policy": {"auto_promote": False}}}})
    assert promote.load_policy("churn", settings=toml, lake=lake).auto_promote is False


def test_bad_policy_or_missing_reason_is_refused_and_nothing_recorded(lake, settings):
    with pytest.raises(ConfigError, match="beat"):
        promote.set_policy("churn", {"beat": 1}, reason="x", lake=lake, settings=settings)
    with pytest.raises(RegistryError, match="reason"):
        promote.set_policy("churn", {"auto_promote": True}, reason="", lake=lake, settings=settings)
    assert not lake.exists("registry_events") or events("churn", lake=lake).height == 0


def test_cli_sets_and_shows_the_policy(lake, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "p.toml"
    f.write_text("auto_promote = true\n[min]\nauc = 0.75\n")
    assert run(["models", "policy", "churn", "--lake", lake.uri, "--set", str(f)]) == 2
    assert "reason" in capsys.readouterr().err
    assert run(["models", "policy", "churn", "--lake", lake.uri, "--set", str(f), "--reason", "tighter"]) == 0
    out = capsys.readouterr().out
    assert '"auto_promote": true' in out and "0.75" in out and "recorded in the lake" in out
