import json
import math
from datetime import UTC, datetime

import numpy as np
import polars as pl

from core.profiling import QUANTILES, column_kind, histogram_frame, profile, summary_frame


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0, None, float("nan")],
            "n": [1, 1, 2, 2, 3, 10],
            "s": ["a", "b", "a", None, "a", "c"],
            "b": [True, False, True, True, None, True],
            "t": [datetime(2025, 1, d, tzinfo=UTC) for d in range(1, 7)],
        }
    )


def test_numeric_statistics():
    p = profile(_frame(), bins=4)
    x = p["columns"]["x"]
    assert p["rows"] == 6
    assert x["kind"] == "numeric" and x["dtype"] == "Float64"
    assert x["nulls"] == 2 and x["count"] == 4  # NaN counts as missing
    assert math.isclose(x["null_fraction"], 2 / 6)
    assert x["distinct"] == 4
    assert (x["min"], x["max"], x["mean"]) == (1.0, 4.0, 2.5)
    assert math.isclose(x["std"], np.std([1, 2, 3, 4], ddof=1))
    assert list(x["quantiles"]) == [str(q) for q in QUANTILES]
    assert x["quantiles"]["0.5"] == 2.5
    assert x["histogram"]["counts"] == [1, 1, 1, 1]
    assert x["histogram"]["edges"] == [1.0, 1.75, 2.5, 3.25, 4.0]
    n = p["columns"]["n"]
    assert sum(n["histogram"]["counts"]) == 6 and n["distinct"] == 4


def test_categorical_top_values_and_other_kinds():
    p = profile(_frame(), top=2)
    s = p["columns"]["s"]
    assert s["kind"] == "categorical" and s["nulls"] == 1 and s["distinct"] == 3
    assert s["top"][0] == {"value": "a", "count": 3, "frequency": 0.6}
    assert len(s["top"]) == 2 and s["other_count"] == 1
    b = p["columns"]["b"]
    assert b["kind"] == "categorical" and b["top"][0]["value"] == "true"
    t = p["columns"]["t"]
    assert t["kind"] == "datetime" and t["min"].startswith("2025-01-01") and t["max"].startswith("2025-01-06")
    json.dumps(p)  # JSON-able as stored


def test_edge_cases_constant_all_null_empty():
    p = profile(pl.DataFrame({"c": [5, 5, 5], "z": [None, None, None]}, schema={"c": pl.Int64, "z": pl.Float64}))
    assert p["columns"]["c"]["histogram"]["counts"] == [3]
    assert p["columns"]["c"]["std"] == 0.0
    assert p["columns"]["z"]["min"] is None and p["columns"]["z"]["histogram"]["counts"] == []
    empty = profile(pl.DataFrame(schema={"a": pl.Float64, "s": pl.String}))
    assert empty["rows"] == 0 and empty["columns"]["a"]["count"] == 0 and empty["columns"]["s"]["top"] == []


def test_kinds():
    assert column_kind(pl.Int32) == "numeric"
    assert column_kind(pl.String) == "categorical"
    assert column_kind(pl.Date) == "datetime"
    assert column_kind(pl.List(pl.Int64)) == "other"


def test_summary_and_histogram_frames():
    p = profile(_frame(), bins=4)
    summary = summary_frame(p)
    assert summary["column"].to_list() == ["x", "n", "s", "b", "t"]
    assert summary.filter(pl.col("column") == "s")["top"].item() == "a (60.0%)"
    assert summary.filter(pl.col("column") == "x")["null_pct"].item() == 33.33
    h = histogram_frame(p, "x")
    assert h.height == 4 and h["count"].sum() == 4 and math.isclose(h["frequency"].sum(), 1.0)
    assert histogram_frame(p, "s")["bin"].to_list() == ["a", "b", "c"]
    assert histogram_frame(p, "missing").height == 0


def test_large_frame_is_fast_enough_shape():
    rng = np.random.default_rng(0)
    f = pl.DataFrame({f"c{i}": rng.normal(size=50_000) for i in range(10)})
    p = profile(f)
    assert all(sum(c["histogram"]["counts"]) == 50_000 for c in p["columns"].values())


def test_quantiles_match_numpy_linear():
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 3.0, 10_001)
    p = profile(pl.DataFrame({"v": values}))["columns"]["v"]
    expected = np.quantile(values, QUANTILES)
    assert np.allclose([p["quantiles"][str(q)] for q in QUANTILES], expected)
    assert p["distinct"] == len(np.unique(values))
