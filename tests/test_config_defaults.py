"""Each config default lives once, as a dataclass field: parsing an empty section gives exactly the
field defaults, a changed default (a subclass) is what the parser returns, and a wrong type or an
unknown key is an error naming the key."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from core import drift, gating, sql
from core.config import Settings, build_settings, load_settings, read_toml
from core.errors import ConfigError, TrainingError
from core.monitoring.config import MonitorConfig, monitor_config


def test_empty_sections_give_exactly_the_dataclass_defaults(tmp_path):
    assert build_settings(Settings, {}, {}) == Settings()
    empty = tmp_path / "lakeops.toml"
    empty.write_text("")
    assert load_settings({}, config_path=empty) == Settings(config_path=str(empty))
    assert MonitorConfig.from_sections({}) == MonitorConfig()
    assert monitor_config("churn", Settings()) == MonitorConfig()
    assert drift.DriftPolicy.from_config() == drift.DriftPolicy()
    assert drift.DriftPolicy.from_config({}, {"features": {}, "quality": {}, "thresholds": {}}) == drift.DriftPolicy()
    assert gating.policy_from_dict({}) == gating.Policy()
    pol = gating.policy_from_dict({"staging": {}, "beat_champion": {}})
    assert pol.staging == gating.StagingPolicy() and pol.beat_champion == gating.BeatChampion()


def test_the_sql_module_defaults_are_the_settings_defaults():
    s = Settings()
    query = inspect.signature(sql.query_arrow).parameters
    assert (query["memory_limit"].default, query["threads"].default, query["timeout_s"].default) == (
        s.sql_memory_limit, s.sql_threads, s.sql_timeout_s)
    assert query["max_rows"].default == s.sql_max_rows
    assert query["max_bytes"].default == int(s.sql_max_result_mb * 1e6)
    export = inspect.signature(sql.export).parameters
    assert (export["memory_limit"].default, export["threads"].default) == (s.sql_memory_limit, s.sql_threads)


def test_a_changed_field_default_is_what_the_parser_returns():
    @dataclasses.dataclass(frozen=True, repr=False)
    class MySettings(Settings):
        sql_threads: int = 7
        api_port: int = 9100

    got = build_settings(MySettings, {"api": {"host": "127.0.0.2"}}, {})
    assert (got.sql_threads, got.api_port, got.api_host) == (7, 9100, "127.0.0.2")
    assert build_settings(MySettings, {"sql": {"threads": 3}}, {}).sql_threads == 3

    @dataclasses.dataclass(frozen=True)
    class MyMonitor(MonitorConfig):
        min_rows: int = 17
        webhook_timeout_s: float = 1.5

    mon = MyMonitor.from_sections({"tolerance": 0.1})
    assert (mon.min_rows, mon.webhook_timeout_s, mon.tolerance) == (17, 1.5, 0.1)

    @dataclasses.dataclass(frozen=True)
    class MyDrift(drift.DriftPolicy):
        share: float = 0.7
        bins: int = 20

    pol = MyDrift.from_config({"min_values": 5})
    assert (pol.share, pol.bins, pol.min_values) == (0.7, 20, 5)
    # the promotion policy: a key the section lacks is never set by the parser
    for key, value in (("auto_promote", True), ("significance", 0.01), ("max_size_bytes", 5)):
        assert gating.policy_from_dict({key: value}) == dataclasses.replace(gating.Policy(), **{key: value})


def test_every_monitoring_key_sets_only_its_own_field():
    changed = {"window_rows": 10, "window_hours": 2.0, "min_rows": 3, "reference": "holdout", "reference_rows": 5000,
               "metric": "auc", "tolerance": 0.2, "min_labels": 9, "performance_window_hours": 24.0,
               "alert_on_score_drift": False, "alert_on_multivariate_drift": False, "estimate_tolerance": 0.1}
    for key, value in changed.items():
        assert MonitorConfig.from_sections({key: value}) == dataclasses.replace(
            MonitorConfig(), **{key: value}, **({"window_rows": None} if key == "window_hours" else {}))
    alerted = MonitorConfig.from_sections({}, alerts={"webhook_url": "http://127.0.0.1:9/hook", "timeout_s": 2})
    assert (alerted.webhook_url, alerted.webhook_timeout_s) == ("http://127.0.0.1:9/hook", 2.0)


@pytest.mark.parametrize(("build", "named"), [
    (lambda: build_settings(Settings, {"sql": {"threads": "two"}}, {}), "[sql] threads must be an integer, got 'two'"),
    (lambda: build_settings(Settings, {"sql": {"max_rows": True}}, {}), "[sql] max_rows must be an integer"),
    (lambda: build_settings(Settings, {"api": {"port": "80"}}, {}), "[api] port must be an integer"),
    (lambda: build_settings(Settings, {"api": {"allowed_hosts": "a.example"}}, {}), "[api] allowed_hosts must be a list"),
    (lambda: build_settings(Settings, {"sql": {"thread": 2}}, {}), "[sql]: unknown key(s) thread"),
    (lambda: build_settings(Settings, {"ui": {"host": "x"}}, {}), "[ui]: unknown key(s) host"),
    (lambda: build_settings(Settings, {}, {"LAKEOPS_API_PORT": "eighty"}), "LAKEOPS_API_PORT must be an integer"),
    (lambda: MonitorConfig.from_sections({"min_rows": "many"}, where="[models.m.monitoring]"),
     "[models.m.monitoring] min_rows must be an integer, got 'many'"),
    (lambda: MonitorConfig.from_sections({"window": 5}, where="[models.m.monitoring]"),
     "[models.m.monitoring]: unknown key(s) window"),
    (lambda: MonitorConfig.from_sections({"policy": {}}, where="[models.m.monitoring]"),
     "[models.m.monitoring]: unknown key(s) policy"),
    (lambda: MonitorConfig.from_sections({}, alerts={"timeout_s": "soon"}), "[alerts] timeout_s must be a number"),
    (lambda: drift.DriftPolicy.from_config({"bins": "ten"}), "[drift] bins must be an integer, got 'ten'"),
    (lambda: drift.DriftPolicy.from_config({"share": True}), "[drift] share must be a number"),
    (lambda: drift.DriftPolicy.from_config({"sharing": 0.5}), "[drift]: unknown key(s) sharing"),
    (lambda: drift.DriftPolicy.from_config({"features": {"age": {"tset": "psi"}}}),
     "[drift.features.age]: unknown key(s) tset"),
    (lambda: drift.DriftPolicy.from_config({"features": {"age": {"threshold": "high"}}}),
     "[drift.features.age] threshold must be a number or none, got 'high'"),
    (lambda: drift.DriftPolicy.from_config({"quality": {"null_share": "some"}}),
     "[drift.quality] null_share must be a number, got 'some'"),
    (lambda: drift.DriftPolicy.from_config({"thresholds": {"psi": "x"}}), "drift.thresholds.psi] must be a number"),
    (lambda: gating.policy_from_dict({"staging": {"min_requests": "lots"}}, where="[models.m.policy]"),
     "[models.m.policy] staging.min_requests must be an integer, got 'lots'"),
    (lambda: gating.policy_from_dict({"staging": {"mood": "shadow"}}, where="[models.m.policy]"),
     "[models.m.policy] staging: unknown key(s) mood"),
    (lambda: gating.policy_from_dict({"auto_promot": True}, where="[models.m.policy]"),
     "[models.m.policy]: unknown key(s) auto_promot"),
])
def test_a_wrong_type_or_unknown_key_is_an_error_naming_it(build, named):
    with pytest.raises(ConfigError) as err:
        build()
    assert named in str(err.value)


def test_one_policy_nesting_rule_for_every_source():
    bare = {"auto_promote": True, "min": {"auc": 0.8}}
    want = gating.policy_from_dict(bare)
    assert gating.policy_from_dict({"policy": bare}) == want
    assert gating.policy_from_dict({"models": {"churn": {"policy": bare}}}, model="churn") == want
    # another model's table is not this model's policy: its keys are unknown at the top level
    with pytest.raises(ConfigError, match="unknown key"):
        gating.policy_from_dict({"models": {"other": {"policy": bare}}}, model="churn")


def test_one_toml_reader_names_the_file_and_the_kind(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("auto_promote = \n")
    with pytest.raises(ConfigError, match=r"policy file .*p.toml is not valid TOML"):
        read_toml(bad, what="policy file")
    with pytest.raises(TrainingError, match=r"cannot read params file .*missing.toml"):
        read_toml(tmp_path / "missing.toml", what="params file", error=TrainingError)
    good = tmp_path / "g.toml"
    good.write_text("[sql]\nthreads = 3\n")
    assert read_toml(good) == {"sql": {"threads": 3}}
    assert load_settings({}, config_path=good).sql_threads == 3
