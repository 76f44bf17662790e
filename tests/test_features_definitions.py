"""Feature view definitions: safe expression parsing, checks naming the field, content hash, TOML."""

from __future__ import annotations

import polars as pl
import pytest

from core.errors import FeatureViewError
from core.features import Feature, FeatureView, compile_expr, load_view, parse_view

SOURCE = {"cid": pl.String, "at": pl.Datetime("us", "UTC"), "calls": pl.Int64, "minutes": pl.Float64, "plan": pl.String}


def _view(*feats: Feature, **kw) -> FeatureView:
    return FeatureView(kw.pop("name", "usage"), "events", kw.pop("entity", "cid"), kw.pop("event_time", "at"), tuple(feats), **kw)


def test_expressions_are_built_from_the_allow_list():
    frame = pl.DataFrame({"a": [1.0, 4.0, None], "b": [2.0, 0.0, 1.0], "s": ["xa", "y", None]})
    got = frame.select(
        compile_expr("pl.col('a') / (pl.col('b') + 1)").alias("r"),
        compile_expr("pl.when(pl.col('a') > 1).then(pl.col('b')).otherwise(-1)").alias("w"),
        compile_expr("pl.col('s').str.len_chars().fill_null(0)").alias("n"),
        compile_expr("pl.col('s').is_in(['xa', 'y'])").alias("i"),
        compile_expr("pl.col('a').cast(pl.Int64)").alias("c"),
    )
    assert got["r"].to_list() == [1 / 3, 4.0, None]
    assert got["w"].to_list() == [-1.0, 0.0, -1.0]
    assert got["n"].to_list() == [2, 1, 0]
    assert got["i"].to_list() == [True, True, None]
    assert got["c"].to_list() == [1, 4, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "name '__import__' is not allowed"),
        ("pl.col('a').sum()", ".sum() is not allowed (features are element-wise"),
        ("pl.col('a').over('b')", ".over() is not allowed"),
        ("pl.col('a').map_elements(print)", ".map_elements() is not allowed"),
        ("pl.col('a').map_batches(pl.col)", ".map_batches() is not allowed"),
        ("pl.read_csv('/etc/passwd')", "pl.read_csv is not allowed"),
        ("9 ** 9 ** 9", "arithmetic between constants is not allowed"),
        ("pl.col('a').__class__", ".__class__() is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("pl.col('a', 'b')", "has several outputs"),
        ("pl.col('a'", "does not parse"),
        ("1", "is not a polars expression"),
        ("pl.col('a') < pl.col('b') < 3", "chained comparisons are not allowed"),
    ],
)
def test_anything_else_is_refused_with_the_reason(text, message):
    with pytest.raises(FeatureViewError, match="expression") as err:
        compile_expr(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (Feature("x", "pl.col('calls')", agg="median", window="7d"), "agg 'median' is not one of sum, mean, count, min, max"),
        (Feature("x", "pl.col('calls')", agg="sum"), "agg 'sum' needs a window"),
        (Feature("x", "pl.col('calls')", window="7d"), "a window needs an agg"),
        (Feature("x", "pl.col('calls')", agg="sum", window="30 days"), "window '30 days' is not a window"),
        (Feature("x", "pl.col('calls')", agg="sum", window="0d"), "is not a window"),
        (Feature("x", agg="sum", window="7d"), "expr is required (only a count may omit it)"),
        (Feature("__x", "pl.col('calls')"), "names starting with '__' are lakeops' own"),
        (Feature("cid", "pl.col('calls')"), "cannot be named like the entity or event-time column"),
        (Feature("bad name", "pl.col('calls')"), "feature name 'bad name'"),
        (Feature("x", "pl.col('calls')", default=[1]), "default must be a number or a string"),
    ],
)
def test_definition_problems_name_the_feature(feature, message):
    with pytest.raises(FeatureViewError) as err:
        _view(feature)
    assert message in str(err.value)


def test_view_level_checks():
    ok = Feature("n", agg="count", window="7d")
    with pytest.raises(FeatureViewError, match="feature view name 'my-view'"):
        _view(ok, name="my-view")
    with pytest.raises(FeatureViewError, match="missing must be 'error' or 'default'"):
        _view(ok, missing="skip")
    with pytest.raises(FeatureViewError, match="feature 'n' is defined twice"):
        _view(ok, ok)
    with pytest.raises(FeatureViewError, match="has no features"):
        _view()


def test_output_schema_checks_columns_and_types_against_the_source():
    view = _view(
        Feature("calls_7d", "pl.col('calls')", agg="sum", window="7d"),
        Feature("mins_mean", "pl.col('minutes')", agg="mean", window="7d"),
        Feature("n", agg="count", window="7d"),
        Feature("last_plan", "pl.col('plan')"),
        Feature("ratio", "pl.col('minutes') / pl.col('calls')"),
        Feature("calls_max", "pl.col('calls')", agg="max", window="7d"),
    )
    assert view.output_schema(SOURCE) == {
        "calls_7d": pl.Int64, "mins_mean": pl.Float64, "n": pl.Int64, "last_plan": pl.String, "ratio": pl.Float64,
        "calls_max": pl.Int64,
    }
    with pytest.raises(FeatureViewError, match="feature 'x': column 'secs' is not a column of dataset 'events'"):
        _view(Feature("x", "pl.col('secs') * 2")).output_schema(SOURCE)
    with pytest.raises(FeatureViewError, match="entity column 'customer' is not a column of dataset 'events'"):
        _view(Feature("x", "pl.col('calls')"), entity="customer").output_schema(SOURCE)
    with pytest.raises(FeatureViewError, match="event_time column 'calls' has type Int64; it must be a datetime"):
        _view(Feature("x", "pl.col('minutes')"), event_time="calls").output_schema(SOURCE)
    with pytest.raises(FeatureViewError, match="agg 'sum' needs numeric values, the expression gives String"):
        _view(Feature("x", "pl.col('plan')", agg="sum", window="7d")).output_schema(SOURCE)
    with pytest.raises(FeatureViewError, match=r"feature .x.: \+ not allowed on datetime"):
        _view(Feature("x", "pl.col('at') + pl.col('plan')")).output_schema(SOURCE)


def test_content_hash_follows_the_definition_not_its_spelling():
    a = _view(Feature("c", "pl.col('calls')", agg="sum", window="7d", description="one"))
    same = _view(Feature("c", "pl.col(  'calls' )", agg="sum", window="168h", description="two"), description="x")
    other = _view(Feature("c", "pl.col('calls')", agg="sum", window="8d"))
    assert a.content_hash() == same.content_hash() != other.content_hash()
    assert parse_view(a.to_dict()) == a


def test_toml_files_both_feature_forms_and_errors(tmp_path):
    path = tmp_path / "view.toml"
    path.write_text(
        'name = "usage"\nsource = "events"\nentity = "cid"\nevent_time = "at"\nmissing = "default"\n'
        '[[features]]\nname = "calls_7d"\nexpr = "pl.col(\'calls\')"\nagg = "sum"\nwindow = "7d"\n'
    )
    view = load_view(path)
    assert view.feature_names == ["calls_7d"] and view.missing == "default" and view.features[0].fill == 0
    table = parse_view({"name": "u", "source": "e", "entity": "cid", "event_time": "at",
                        "features": {"last": "pl.col('plan')", "n": {"agg": "count", "window": "1d"}}})
    assert table.feature_names == ["last", "n"] and table.features[0].fill is None
    path.write_text('name = "usage"\nsource = "events"\nentity = "cid"\nevent_time = "at"\ncolour = "red"\n[[features]]\nname = "x"\n')
    with pytest.raises(FeatureViewError, match="unknown key 'colour'"):
        load_view(path)
    path.write_text("name = [")
    with pytest.raises(FeatureViewError, match="is not valid TOML"):
        load_view(path)
    with pytest.raises(FeatureViewError, match="cannot read feature view file"):
        load_view(tmp_path / "missing.toml")
