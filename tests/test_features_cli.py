"""``lakeops features ...`` from the shell: the whole path, and bad input as one line with exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from core import datasets, demo
from core.cli import run

NOW = datetime(2025, 6, 1, tzinfo=UTC)
VIEW = """name = "churn_usage"
source = "churn_usage"
entity = "customer_id"
event_time = "event_at"
missing = "default"

[[features]]
name = "calls_30d"
expr = "pl.col('calls')"
agg = "sum"
window = "30d"

[[features]]
name = "minutes_per_call_30d"
expr = "pl.col('minutes') / pl.col('calls')"
agg = "mean"
window = "30d"
"""


@pytest.fixture
def cli_lake(lake, settings):
    churn = demo.generate(600, seed=5, start=NOW - timedelta(days=120), days=120, campaign_start=NOW + timedelta(days=999))
    datasets.ingest("churn", churn, lake=lake, settings=settings)
    datasets.ingest("churn_usage", demo.usage_events(churn, until=NOW), lake=lake, settings=settings)
    datasets.ingest("no_times", churn.drop("signup_at"), lake=lake, settings=settings)
    return lake


def _cli(lake, *args: str) -> int:
    return run(["--lake", lake.uri, "features", *args])


def test_register_build_materialize_list_show_get(cli_lake, tmp_path, capsys):
    path = tmp_path / "view.toml"
    path.write_text(VIEW)
    assert _cli(cli_lake, "register", str(path)) == 0
    assert "feature view churn_usage v1: registered" in capsys.readouterr().out
    assert _cli(cli_lake, "register", str(path)) == 0
    assert "v1: unchanged" in capsys.readouterr().out
    assert _cli(cli_lake, "build-training", "--labels", "churn@v1", "--view", "churn_usage", "--name", "churn_training") == 0
    assert "training set churn_training: version 1, 600 rows of churn v1 as of signup_at" in capsys.readouterr().out
    assert _cli(cli_lake, "materialize", "churn_usage", "--as-of", "2025-06-01T00:00:00Z") == 0
    assert "as of 2025-06-01T00:00:00+00:00: full (first materialisation of this version)" in capsys.readouterr().out
    assert _cli(cli_lake, "list", "--format", "json") == 0
    [row] = json.loads(capsys.readouterr().out)
    customers = datasets.load("churn_usage", lake=cli_lake)["customer_id"].n_unique()
    assert (row["name"], row["latest_version"], row["features"], row["online_entities"]) == ("churn_usage", 1, 2, customers)
    assert _cli(cli_lake, "show", "churn_usage@v1") == 0
    shown = capsys.readouterr().out
    assert "minutes_per_call_30d  pl.col('minutes') / pl.col('calls')  mean  30d     NULL" in shown and "online values" in shown
    assert _cli(cli_lake, "get", "churn_usage", "C0000001") == 0
    assert json.loads(capsys.readouterr().out)["customer_id"] == "C0000001"
    assert run(["--lake", cli_lake.uri, "train", "--dataset", "churn_training", "--target", "churned"]) == 0


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        (lambda v: v.replace('entity = "customer_id"', 'entity = "customer"'), (),
         "lakeops: error: feature view 'churn_usage': entity column 'customer' is not a column of dataset 'churn_usage'; columns: "),
        (lambda v: v.replace("pl.col('calls')\"", "pl.col('calls'\""), (), "does not parse: '(' was never closed"),
        (lambda v: v.replace("pl.col('calls')\"", "pl.col('sms')\""), (),
         "feature view 'churn_usage', feature 'calls_30d': column 'sms' is not a column of dataset 'churn_usage'"),
        (lambda v: v.replace('window = "30d"', 'window = "900d"', 1), (), "feature 'calls_30d': window 900d is longer than the data"),
        (lambda v: v.replace("pl.col('calls')\"", "pl.col('calls').sum()\""), (), ".sum() is not allowed"),
    ],
)
def test_bad_definitions_exit_2_with_one_line_and_write_nothing(cli_lake, tmp_path, capsys, edit, args, message):
    path = tmp_path / "view.toml"
    path.write_text(edit(VIEW))
    assert _cli(cli_lake, "register", str(path), *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not cli_lake.exists("feature_views")


def test_bad_training_and_materialisation_requests_exit_2_and_write_nothing(cli_lake, tmp_path, capsys):
    path = tmp_path / "view.toml"
    path.write_text(VIEW)
    assert _cli(cli_lake, "register", str(path)) == 0
    capsys.readouterr()
    cases = [
        (("build-training", "--labels", "no_times", "--view", "churn_usage", "--name", "t"),
         "lakeops: error: label dataset 'no_times' has no event-time column (no datetime column)"),
        (("build-training", "--labels", "churn", "--view", "nope", "--name", "t"), "feature view 'nope' does not exist"),
        (("build-training", "--labels", "churn", "--view", "churn_usage@v7", "--name", "t"),
         "feature view 'churn_usage' has versions v1; asked for v7"),
        (("materialize", "churn_usage", "--as-of", "yesterday"), "--as-of 'yesterday' is not an ISO 8601 time"),
        (("get", "churn_usage", "C0000001"), "churn_usage v1 has no online values yet; run: lakeops features materialize"),
    ]
    for args, message in cases:
        assert _cli(cli_lake, *args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not cli_lake.exists("data/t") and not cli_lake.exists("feature_lineage")
    assert not cli_lake.exists("feature_materializations")


def test_a_real_process_exits_2_on_a_bad_definition(cli_lake, tmp_path):
    path = tmp_path / "view.toml"
    path.write_text(VIEW.replace('agg = "mean"', 'agg = "median"'))
    done = subprocess.run(["lakeops", "--lake", cli_lake.uri, "features", "register", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lakeops: error: feature view 'churn_usage', feature 'minutes_per_call_30d': agg 'median' is not one of sum, mean, count, min, max"
    ]


PY_VIEWS = '''
from core.features import Feature, FeatureView

USAGE = FeatureView(
    name="churn_usage", source="churn_usage", entity="customer_id", event_time="event_at", missing="default",
    features=(
        Feature("calls_30d", "pl.col('calls')", agg="sum", window="30d"),
        Feature("minutes_per_call_30d", "pl.col('minutes') / pl.col('calls')", agg="mean", window="30d"),
    ),
)
views = [
    FeatureView(name="usage_7d", source="churn_usage", entity="customer_id", event_time="event_at",
                features=(Feature("calls_7d", "pl.col('calls')", agg="sum", window="7d"),)),
]
'''


def test_views_declared_in_python_register_like_toml(cli_lake, tmp_path, capsys):
    path = tmp_path / "views.py"
    path.write_text(PY_VIEWS)
    assert _cli(cli_lake, "register", str(path)) == 0
    out = capsys.readouterr().out
    assert "feature view churn_usage v1: registered" in out and "feature view usage_7d v1: registered" in out
    # the same definition in TOML has the same content hash: unchanged, not a new version
    toml = tmp_path / "view.toml"
    toml.write_text(VIEW)
    assert _cli(cli_lake, "register", str(toml)) == 0
    assert "churn_usage v1: unchanged" in capsys.readouterr().out
    path.write_text(PY_VIEWS.replace('window="7d"', 'window="14d"'))
    assert _cli(cli_lake, "register", str(path)) == 0
    out = capsys.readouterr().out
    assert "churn_usage v1: unchanged" in out and "usage_7d v2: registered" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = 1\n", "feature view file views.py defines no FeatureView (from core.features import FeatureView)"),
        ("raise RuntimeError('no database here')\n", "feature view file views.py failed: RuntimeError: no database here"),
        ("def (:\n", "feature view file views.py is not valid Python: invalid syntax (line 1)"),
        (PY_VIEWS.replace("pl.col('calls')\", agg=\"sum\", window=\"7d\"", "pl.col('sms')\", agg=\"sum\", window=\"7d\""),
         "feature view 'usage_7d', feature 'calls_7d': column 'sms' is not a column of dataset 'churn_usage'"),
        (PY_VIEWS.replace('agg="mean"', 'agg="median"'),
         "feature view file views.py: feature view 'churn_usage', feature 'minutes_per_call_30d': agg 'median' is not one of"),
    ],
)
def test_a_bad_python_view_file_exits_2_with_one_line_and_writes_nothing(cli_lake, tmp_path, capsys, text, message):
    path = tmp_path / "views.py"
    path.write_text(text)
    assert _cli(cli_lake, "register", str(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not cli_lake.exists("feature_views")  # not even the good view of the file


def test_a_toml_view_with_request_fields_registers_and_shows_them(cli_lake, tmp_path, capsys):
    path = tmp_path / "view.toml"
    path.write_text(VIEW + '''
[request]
monthly_charges = "Float64"

[[request_features]]
name = "charges_per_call_30d"
expr = "pl.col('monthly_charges') / (pl.col('calls_30d') + 1)"
''')
    assert _cli(cli_lake, "register", str(path)) == 0
    assert "churn_usage v1: registered" in capsys.readouterr().out
    assert _cli(cli_lake, "show", "churn_usage") == 0
    shown = capsys.readouterr().out
    assert "charges_per_call_30d" in shown and "request fields: monthly_charges (Float64)" in shown
    path.write_text(path.read_text().replace('"Float64"', '"Money"'))
    assert _cli(cli_lake, "register", str(path)) == 2
    assert "request field 'monthly_charges': type 'Money' is not one of Float64, Int64, Boolean, String" in capsys.readouterr().err
