import json

import numpy as np
import polars as pl
import pytest

from core.errors import ConfigError
from core.profiling import profile
from core.validation import (
    Rule,
    ValidationReport,
    infer_rules,
    parse_spec,
    psi,
    psi_against_profile,
    validate,
)


def _ref(n: int = 2_000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "age": rng.integers(18, 80, n),
            "amount": rng.normal(50, 10, n),
            "plan": rng.choice(["basic", "standard", "premium"], n),
        }
    )


def _failed(report: ValidationReport) -> dict[tuple[str, str | None], object]:
    return {(r.rule, r.column): r for r in report.results if not r.passed}


def test_same_distribution_passes_inferred_rules():
    rules = infer_rules(profile(_ref()))
    report = validate(_ref(seed=1), rules, reference_version=3)
    assert report.status == "passed" and report.ok
    assert report.reference_version == 3
    kinds = {r.kind for r in rules}
    assert kinds == {"columns", "dtype", "nulls", "range", "domain", "distribution"}
    assert not any(r.kind == "domain" and r.column == "id" for r in rules)  # no domain for numeric


def test_schema_type_and_null_errors():
    rules = infer_rules(profile(_ref()))
    bad = _ref(seed=1).drop("plan").with_columns(
        pl.col("age").cast(pl.String), pl.when(pl.col("id") % 2 == 0).then(None).otherwise(pl.col("amount")).alias("amount")
    )
    report = validate(bad, rules)
    failed = _failed(report)
    assert report.status == "failed"
    cols = failed[("columns", None)]
    assert cols.severity == "error" and "missing plan" in cols.found
    dtype = failed[("dtype", "age")]
    assert (dtype.expected, dtype.found, dtype.rows) == ("Int64", "String", 2_000)
    nulls = failed[("nulls", "amount")]
    assert nulls.rows == 1_000 and nulls.found == "0.5"


def test_statistical_shifts_are_warnings():
    rules = infer_rules(profile(_ref()))
    shifted = _ref(seed=2).with_columns(
        (pl.col("amount") + 40).alias("amount"),
        pl.when(pl.col("id") < 300).then(pl.lit("promo")).otherwise(pl.col("plan")).alias("plan"),
    )
    report = validate(shifted, rules)
    failed = _failed(report)
    assert report.status == "warned" and report.ok
    assert failed[("range", "amount")].severity == "warn" and failed[("range", "amount")].rows > 0
    assert failed[("domain", "plan")].rows == 300 and "'promo'" in failed[("domain", "plan")].found
    assert "PSI" in failed[("distribution", "amount")].found
    assert len(report.warnings) == len(failed) and report.errors == []


def test_severity_override_and_tolerance():
    spec = parse_spec({"severity": {"range": "error"}, "range_tolerance": 0.0})
    rules = infer_rules(profile(_ref()), spec)
    report = validate(_ref(seed=1).with_columns(pl.lit(81).alias("age")), rules)
    assert _failed(report)[("range", "age")].severity == "error"
    assert not report.ok


def test_declared_rules():
    spec = parse_spec(
        {
            "required": ["id", "amount", "score"],
            "unique": ["id"],
            "min_rows": 10,
            "dtypes": {"age": "Int64", "amount": "Float64"},
            "ranges": {"age": {"min": 18, "max": 60}, "amount": {"min": 0, "severity": "warn"}},
            "allowed": {"plan": ["basic", "standard"]},
            "checks": [
                {"name": "adult", "expr": "age >= 21", "severity": "warn"},
                {"expr": "amount < 70 OR plan = 'premium'"},
            ],
        }
    )
    batch = _ref(200).with_columns(pl.when(pl.col("id") == 5).then(1).otherwise(pl.col("id")).alias("id"))
    failed = _failed(validate(batch, spec.rules, existing=pl.DataFrame({"id": [150, 151, 9999]})))
    assert "missing score" in failed[("required", None)].found
    uniq = failed[("unique", None)]
    assert uniq.rows == 1 + 2 and "1 duplicate(s) within the batch, 2 key(s) already" in uniq.found
    age = failed[("range", "age")]
    assert age.expected == "within [18, 60]" and age.rows == batch.filter(pl.col("age") > 60).height
    assert ("range", "amount") not in failed
    assert failed[("allowed", "plan")].rows == batch.filter(pl.col("plan") == "premium").height
    adult = failed[("expression 'adult'", None)]
    assert adult.severity == "warn" and adult.rows == batch.filter(pl.col("age") < 21).height
    assert ("min_rows", None) not in failed
    assert validate(batch.head(5), spec.rules).results[2].passed is False  # min_rows


def test_expression_over_unknown_column_fails_clearly():
    report = validate(_ref(50), [Rule("expression", params={"expr": "nope > 1"}, name="n")])
    r = report.results[0]
    assert not r.passed and "cannot evaluate" in r.found


def test_bad_specs_name_the_key():
    with pytest.raises(ConfigError, match="unknown key"):
        parse_spec({"requird": ["a"]})
    with pytest.raises(ConfigError, match="severity"):
        parse_spec({"ranges": {"a": {"min": 1, "severity": "fatal"}}})
    with pytest.raises(ConfigError, match=r"checks\[0\]"):
        parse_spec({"checks": [{"expr": "a >>> ("}]})
    with pytest.raises(ConfigError, match="ranges.a"):
        parse_spec({"ranges": {"a": 5}})


def test_psi_values():
    assert psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0.0)
    assert psi(np.array([50, 50]), np.array([90, 10])) > 0.25
    p = profile(_ref())
    assert psi_against_profile(p["columns"]["amount"], _ref(seed=5)["amount"]) < 0.05
    assert psi_against_profile(p["columns"]["plan"], pl.Series("plan", ["basic"] * 100)) > 1
    assert psi_against_profile({"kind": "categorical"}, pl.Series("x", ["a"])) is None


def test_small_batches_skip_distribution():
    rules = [r for r in infer_rules(profile(_ref())) if r.kind == "distribution"]
    report = validate(_ref(50).with_columns(pl.col("amount") + 100), rules)
    assert report.ok and all("not checked" in r.found for r in report.results)


def test_report_round_trip_and_lines():
    rules = infer_rules(profile(_ref()))
    report = validate(_ref(seed=1).drop("plan"), rules)
    again = ValidationReport.from_dict(json.loads(report.to_json()))
    assert again == report and again.status == "failed"
    assert report.errors[0].line().startswith("ERROR columns: expected exactly the 4 reference columns, found missing plan")
    frame = report.frame()
    assert frame.height == len(report.results) and frame.filter(~pl.col("passed")).height == len(report.errors)


def test_dtype_names_and_aliases():
    from datetime import UTC, datetime

    frame = pl.DataFrame({"t": [datetime(2025, 1, 1, tzinfo=UTC)], "n": [1], "s": ["a"]})
    spec = parse_spec({"dtypes": {"t": "Datetime", "n": "float", "s": "Int64"}})
    passed = {r.column: r.passed for r in validate(frame, spec.rules).results}
    assert passed == {"t": True, "n": True, "s": False}
