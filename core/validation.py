"""Validation rules and reports over a polars frame (pure: no I/O).

Rules come from two places:

* **inferred** from a reference profile (``core.profiling``) by ``infer_rules``: the column set
  and types (error), null fraction (error when it grows past ``2 x reference + 5 points``),
  numeric ranges widened by a tolerance (warn), category domains of low-cardinality columns
  (warn) and the distribution distance as PSI on the reference histogram bins (warn when
  PSI > 0.25). Severities can be overridden per kind.
* **declared** by the user in a spec (``parse_spec``: a TOML table, ``[datasets.<name>]`` in
  lakeops.toml or a ``--spec`` file)::

      required = ["customer_id", "churned"]
      unique = ["customer_id"]
      min_rows = 100
      infer = true                          # also infer rules from the latest version
      range_tolerance = 0.1                 # inferred ranges: widened by 10 % of the span
      psi_threshold = 0.25
      severity = { range = "error" }        # override an inferred rule kind's severity
      [dtypes]
      churned = "Int64"
      [ranges]
      age = { min = 18, max = 120 }
      monthly_charges = { min = 0, severity = "warn" }
      [allowed]
      contract = ["month-to-month", "one-year", "two-year"]
      [[checks]]
      name = "total covers monthly"
      expr = "total_charges >= monthly_charges OR total_charges IS NULL"
      severity = "warn"

A report's status is ``failed`` when an ``error`` rule fails (the batch must not be written),
``warned`` when only ``warn`` rules fail, else ``passed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from core.errors import ConfigError

__all__ = [
    "Rule",
    "RuleResult",
    "Spec",
    "ValidationReport",
    "infer_rules",
    "parse_spec",
    "psi",
    "psi_against_profile",
    "validate",
]

Severity = Literal["error", "warn"]
_INFERRED_KINDS = ("columns", "dtype", "nulls", "range", "domain", "distribution")
_DEFAULT_SEVERITY: dict[str, Severity] = {
    "columns": "error",
    "dtype": "error",
    "nulls": "error",
    "range": "warn",
    "domain": "warn",
    "distribution": "warn",
}
_DOMAIN_MAX_DISTINCT = 50  # only low-cardinality columns get an inferred category domain
_PSI_MIN_ROWS = 200  # PSI on fewer rows is noise
_PSI_EPS = 1e-4


@dataclass(frozen=True)
class Rule:
    """One check: ``kind`` names it, ``params`` hold its expected values."""

    kind: str
    column: str | None = None
    severity: Severity = "error"
    params: Mapping[str, Any] = field(default_factory=dict)
    source: Literal["inferred", "declared"] = "declared"
    name: str | None = None


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule: what was expected, what was found, how many rows broke it."""

    rule: str
    column: str | None
    severity: Severity
    passed: bool
    expected: str
    found: str
    rows: int = 0
    source: str = "declared"

    def line(self) -> str:
        """One human line: ``ERROR range(age): expected within [18, 120], found max 140 (3 rows)``."""
        where = f"({self.column})" if self.column else ""
        tag = "ERROR" if self.severity == "error" else "WARN"
        return f"{tag} {self.rule}{where}: expected {self.expected}, found {self.found} ({self.rows} rows)"


@dataclass(frozen=True)
class ValidationReport:
    """Every rule result for one batch."""

    results: tuple[RuleResult, ...]
    rows: int
    reference_version: int | None = None

    @property
    def errors(self) -> list[RuleResult]:
        """Failed rules of severity error."""
        return [r for r in self.results if not r.passed and r.severity == "error"]

    @property
    def warnings(self) -> list[RuleResult]:
        """Failed rules of severity warn."""
        return [r for r in self.results if not r.passed and r.severity == "warn"]

    @property
    def status(self) -> str:
        """``failed``, ``warned`` or ``passed``."""
        return "failed" if self.errors else "warned" if self.warnings else "passed"

    @property
    def ok(self) -> bool:
        """True when no error rule failed."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``from_dict`` reverses it)."""
        return {
            "status": self.status,
            "rows": self.rows,
            "reference_version": self.reference_version,
            "results": [asdict(r) for r in self.results],
        }

    def to_json(self) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        """Rebuild a report from ``to_dict`` output."""
        return cls(
            tuple(RuleResult(**r) for r in data.get("results", [])),
            int(data.get("rows", 0)),
            data.get("reference_version"),
        )

    def frame(self) -> pl.DataFrame:
        """One row per rule result (for tables and the UI)."""
        schema = {
            "rule": pl.String, "column": pl.String, "severity": pl.String, "passed": pl.Boolean,
            "expected": pl.String, "found": pl.String, "rows": pl.Int64, "source": pl.String,
        }
        return pl.DataFrame([asdict(r) for r in self.results], schema=schema)


@dataclass(frozen=True)
class Spec:
    """A parsed user spec: declared rules plus options for inferred rules."""

    rules: tuple[Rule, ...] = ()
    infer: bool = True
    range_tolerance: float = 0.1
    psi_threshold: float = 0.25
    severity: Mapping[str, Severity] = field(default_factory=dict)


# ---------------------------------------------------------------------------- spec parsing
_SPEC_KEYS = frozenset({"required", "unique", "min_rows", "infer", "range_tolerance", "psi_threshold", "severity",
                        "dtypes", "ranges", "allowed", "checks"})


def _severity(value: object, where: str) -> Severity:
    if value == "error":
        return "error"
    if value == "warn":
        return "warn"
    raise ConfigError(f"{where}: severity must be 'error' or 'warn', got {value!r}")


def _strings(spec: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = spec.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of column names, got {value!r}")
    return value


def _table_rules(spec: Mapping[str, Any], where: str) -> list[Rule]:
    """required, unique, min_rows: rules over the whole batch."""
    rules: list[Rule] = []
    if required := _strings(spec, "required", where):
        rules.append(Rule("required", None, "error", {"columns": required}))
    if unique := _strings(spec, "unique", where):
        rules.append(Rule("unique", None, "error", {"columns": unique}))
    if "min_rows" in spec:
        rules.append(Rule("min_rows", None, "error", {"min": int(spec["min_rows"])}))
    return rules


def _column_rules(spec: Mapping[str, Any], where: str) -> list[Rule]:
    """dtypes, ranges, allowed: one rule per named column."""
    rules: list[Rule] = []
    for col, dtype in dict(spec.get("dtypes", {})).items():
        if not isinstance(dtype, str):
            raise ConfigError(f"{where}: dtypes.{col} must be a type name such as 'Int64', got {dtype!r}")
        rules.append(Rule("dtype", col, "error", {"dtype": dtype}))
    for col, rng in dict(spec.get("ranges", {})).items():
        if not isinstance(rng, Mapping) or not ({"min", "max"} & set(rng)):
            raise ConfigError(f"{where}: ranges.{col} must be a table with min and/or max, got {rng!r}")
        sev = _severity(rng.get("severity", "error"), f"{where}: ranges.{col}")
        rules.append(Rule("range", col, sev, {"min": rng.get("min"), "max": rng.get("max")}))
    for col, allowed in dict(spec.get("allowed", {})).items():
        allowed_sev: Severity = "error"
        if isinstance(allowed, Mapping):
            allowed_sev = _severity(allowed.get("severity", "error"), f"{where}: allowed.{col}")
            allowed = allowed.get("values", [])
        if not isinstance(allowed, list):
            raise ConfigError(f"{where}: allowed.{col} must be a list of values, got {allowed!r}")
        rules.append(Rule("allowed", col, allowed_sev, {"values": [str(v) for v in allowed]}))
    return rules


def _expression_rules(spec: Mapping[str, Any], where: str) -> list[Rule]:
    """[[checks]]: SQL boolean expressions, each checked to parse."""
    rules: list[Rule] = []
    for i, check in enumerate(spec.get("checks", [])):
        if not isinstance(check, Mapping) or not isinstance(check.get("expr"), str):
            raise ConfigError(f"{where}: checks[{i}] needs an expr string (a SQL boolean expression)")
        try:
            pl.sql_expr(check["expr"])
        except Exception as exc:  # noqa: BLE001 - polars raises several types for bad SQL
            raise ConfigError(f"{where}: checks[{i}] expr {check['expr']!r} is not valid SQL: {exc}") from None
        sev = _severity(check.get("severity", "error"), f"{where}: checks[{i}]")
        rules.append(Rule("expression", None, sev, {"expr": check["expr"]}, name=str(check.get("name") or check["expr"])))
    return rules


def _severity_overrides(spec: Mapping[str, Any], where: str) -> dict[str, Severity]:
    severity: dict[str, Severity] = {}
    for kind, sev in dict(spec.get("severity", {})).items():
        if kind not in _INFERRED_KINDS:
            raise ConfigError(f"{where}: severity.{kind}: unknown rule kind; known: {', '.join(_INFERRED_KINDS)}")
        severity[kind] = _severity(sev, f"{where}: severity.{kind}")
    return severity


def parse_spec(spec: Mapping[str, Any] | None, *, where: str = "spec") -> Spec:
    """Parse a declared-rules table (see the module docstring) into a ``Spec``.

    Args:
        spec: the TOML table (already parsed), or None for no declared rules.
        where: how to name the spec in errors (e.g. ``"[datasets.churn] in lakeops.toml"``).

    Raises:
        ConfigError: naming the key that is wrong.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_SPEC_KEYS))}")
    rules = [*_table_rules(spec, where), *_column_rules(spec, where), *_expression_rules(spec, where)]
    severity = _severity_overrides(spec, where)
    try:
        tol = float(spec.get("range_tolerance", 0.1))
        psi_t = float(spec.get("psi_threshold", 0.25))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: range_tolerance and psi_threshold must be numbers") from None
    if tol < 0 or psi_t <= 0:
        raise ConfigError(f"{where}: range_tolerance must be >= 0 and psi_threshold > 0")
    return Spec(tuple(rules), bool(spec.get("infer", True)), tol, psi_t, severity)


# ---------------------------------------------------------------------------- inference
def infer_rules(reference: Mapping[str, Any], spec: Spec | None = None) -> list[Rule]:
    """Rules that a new batch must meet to look like the reference profile.

    Args:
        reference: a profile from ``core.profiling.profile`` (of the reference version).
        spec: options (tolerance, PSI threshold, severity overrides); defaults when None.
    """
    spec = spec or Spec()
    sev = {**_DEFAULT_SEVERITY, **spec.severity}
    cols: Mapping[str, Any] = reference.get("columns", {})
    rules = [Rule("columns", None, sev["columns"], {"columns": list(cols)}, "inferred")]
    for name, col in cols.items():
        rules.append(Rule("dtype", name, sev["dtype"], {"dtype": col["dtype"]}, "inferred"))
        ref_null = float(col.get("null_fraction") or 0.0)
        rules.append(Rule("nulls", name, sev["nulls"], {"max_fraction": min(1.0, 2 * ref_null + 0.05),
                                                        "reference": ref_null}, "inferred"))
        if col.get("kind") == "numeric" and col.get("min") is not None:
            span = float(col["max"]) - float(col["min"])
            pad = spec.range_tolerance * (span if span > 0 else max(abs(float(col["min"])), 1.0))
            lo = float(col["min"]) - pad
            lo = max(lo, 0.0) if float(col["min"]) >= 0 else lo  # non-negative data stays non-negative
            rules.append(Rule("range", name, sev["range"], {"min": lo, "max": float(col["max"]) + pad}, "inferred"))
        top = col.get("top") or []
        if col.get("kind") == "categorical" and top and col.get("other_count", 1) == 0 \
                and col.get("distinct", 0) <= _DOMAIN_MAX_DISTINCT:
            rules.append(Rule("domain", name, sev["domain"], {"values": [t["value"] for t in top]}, "inferred"))
        if (col.get("histogram") or {}).get("counts") or (col.get("kind") == "categorical" and top
                                                          and col.get("distinct", 0) <= _DOMAIN_MAX_DISTINCT):
            rules.append(Rule("distribution", name, sev["distribution"],
                              {"threshold": spec.psi_threshold, "reference": dict(col)}, "inferred"))
    return rules


# ---------------------------------------------------------------------------- PSI
def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two count (or frequency) vectors over the same bins."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.clip(e / e.sum(), _PSI_EPS, None)
    a = np.clip(a / a.sum(), _PSI_EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_against_profile(reference: Mapping[str, Any], series: pl.Series) -> float | None:
    """PSI of ``series`` against a reference column profile, on the reference's own bins.

    Numeric: the reference histogram edges, with values outside them counted in the end bins.
    Categorical: the reference top values plus one bucket for everything else.
    Returns None when the reference has nothing to compare against.
    """
    hist = reference.get("histogram") or {}
    if hist.get("counts"):
        values = series.cast(pl.Float64, strict=False).fill_nan(None).drop_nulls().to_numpy()
        inner = np.asarray(hist["edges"][1:-1], dtype=np.float64)
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(hist["counts"]))
        return psi(np.asarray(hist["counts"]), counts)
    top = reference.get("top") or []
    if not top:
        return None
    ref_counts = [t["count"] for t in top] + [reference.get("other_count", 0)]
    vc = series.drop_nulls().cast(pl.String).value_counts(name="n")
    found = dict(zip(vc[series.name].to_list(), vc["n"].to_list(), strict=True))
    cur = [found.pop(t["value"], 0) for t in top] + [sum(found.values())]
    return psi(np.asarray(ref_counts), np.asarray(cur))


# ---------------------------------------------------------------------------- checks
_DTYPE_ALIASES = {"int": "Int64", "integer": "Int64", "float": "Float64", "double": "Float64", "str": "String",
                  "string": "String", "text": "String", "bool": "Boolean", "boolean": "Boolean",
                  "datetime": "Datetime", "timestamp": "Datetime", "date": "Date"}


def _dtype_ok(found: pl.DataType, expected: str) -> bool:
    """Same type, or one that widens safely (int -> wider int or float; all-null column)."""
    text = str(found)
    expected = _DTYPE_ALIASES.get(expected.lower(), expected)
    if text == expected or found == pl.Null or ("(" not in expected and text.startswith(expected + "(")):
        return True
    ints = ["Int8", "Int16", "Int32", "Int64"]
    if found.is_integer() and (expected in ("Float32", "Float64")
                               or (expected in ints and text in ints and ints.index(text) <= ints.index(expected))):
        return True
    return text == "Float32" and expected == "Float64"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _result(rule: Rule, passed: bool, expected: str, found: str, rows: int = 0) -> RuleResult:
    label = rule.kind if rule.kind != "expression" else f"expression '{rule.name}'"
    return RuleResult(label, rule.column, rule.severity, passed, expected, found, int(rows), rule.source)


def _check_columns(frame: pl.DataFrame, rule: Rule, existing: pl.DataFrame | None) -> RuleResult:
    """columns (exactly the reference's) and required (at least these)."""
    want = list(rule.params["columns"])
    missing = [c for c in want if c not in frame.columns]
    extra = [c for c in frame.columns if c not in want] if rule.kind == "columns" else []
    problems: list[str] = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected {', '.join(extra)}")
    expected = f"columns {', '.join(want)}" if rule.kind == "required" else f"exactly the {len(want)} reference columns"
    return _result(rule, not problems, expected, "; ".join(problems) or "all present", frame.height if problems else 0)


def _check_min_rows(frame: pl.DataFrame, rule: Rule, existing: pl.DataFrame | None) -> RuleResult:
    n, least = frame.height, rule.params["min"]
    return _result(rule, n >= least, f">= {least} rows", f"{n} rows", 0 if n >= least else n)


def _check_unique(frame: pl.DataFrame, rule: Rule, existing: pl.DataFrame | None) -> RuleResult | None:
    """Unique within the batch and against the keys already in the dataset."""
    cols = [c for c in rule.params["columns"] if c in frame.columns]
    if not cols:
        return None
    keys = frame.select(cols)
    dup_in = frame.height - keys.unique().height
    dup_old = 0
    if existing is not None and existing.height and all(c in existing.columns for c in cols):
        dup_old = keys.join(existing.select(cols).unique(), on=cols, how="semi").height
    bad = dup_in + dup_old
    found = f"{dup_in} duplicate(s) within the batch, {dup_old} key(s) already in the dataset"
    return _result(rule, bad == 0, f"unique ({', '.join(cols)})", found if bad else "all unique", bad)


def _check_expression(frame: pl.DataFrame, rule: Rule, existing: pl.DataFrame | None) -> RuleResult:
    try:
        bad = frame.select((~pl.sql_expr(rule.params["expr"]).fill_null(True)).sum()).item()
    except Exception as exc:  # noqa: BLE001 - polars raises several types for a bad expression
        return _result(rule, False, "a valid expression over the batch columns",
                       f"cannot evaluate: {str(exc).splitlines()[0]}", frame.height)
    return _result(rule, bad == 0, "true on every row", f"false on {bad} row(s)" if bad else "true", bad or 0)


def _check_dtype(frame: pl.DataFrame, s: pl.Series, rule: Rule) -> RuleResult:
    ok = _dtype_ok(s.dtype, rule.params["dtype"])
    return _result(rule, ok, rule.params["dtype"], str(s.dtype), 0 if ok else frame.height)


def _check_nulls(frame: pl.DataFrame, s: pl.Series, rule: Rule) -> RuleResult:
    n, p = frame.height, rule.params
    nulls = s.null_count() + (int(s.is_nan().sum()) if s.dtype.is_float() else 0)
    frac = nulls / n if n else 0.0
    return _result(rule, frac <= p["max_fraction"], f"null fraction <= {p['max_fraction']:.3g} "
                   f"(reference {p['reference']:.3g})", f"{frac:.3g}", nulls if frac > p["max_fraction"] else 0)


def _check_range(frame: pl.DataFrame, s: pl.Series, rule: Rule) -> RuleResult | None:
    if not s.dtype.is_numeric():
        return None
    x = s.cast(pl.Float64).fill_nan(None)
    lo, hi = rule.params.get("min"), rule.params.get("max")
    cond = pl.lit(False)
    if lo is not None:
        cond = cond | (pl.col(s.name) < lo)
    if hi is not None:
        cond = cond | (pl.col(s.name) > hi)
    bad = int(x.to_frame().select(cond.fill_null(False).sum()).item() or 0)
    expected = f"within [{_fmt(lo) if lo is not None else '-inf'}, {_fmt(hi) if hi is not None else 'inf'}]"
    return _result(rule, bad == 0, expected, f"[{_fmt(x.min())}, {_fmt(x.max())}]", bad)


def _check_allowed(frame: pl.DataFrame, s: pl.Series, rule: Rule) -> RuleResult:
    """allowed (declared) and domain (inferred): every non-null value is one of a list."""
    allowed = [str(v) for v in rule.params["values"]]
    text = s.cast(pl.String).drop_nulls()
    outside = text.filter(~text.is_in(allowed))
    shown = outside.unique(maintain_order=True).head(5).to_list()
    found = f"{outside.len()} value(s) outside, e.g. {', '.join(map(repr, shown))}" if outside.len() else "all allowed"
    return _result(rule, outside.len() == 0, f"one of {', '.join(allowed[:12])}{' ...' if len(allowed) > 12 else ''}",
                   found, outside.len())


def _check_distribution(frame: pl.DataFrame, s: pl.Series, rule: Rule) -> RuleResult | None:
    n, threshold = frame.height, rule.params["threshold"]
    if n < _PSI_MIN_ROWS:
        return _result(rule, True, f"PSI <= {threshold:g}", f"not checked: {n} < {_PSI_MIN_ROWS} rows")
    value = psi_against_profile(rule.params["reference"], s)
    if value is None:
        return None
    ok = value <= threshold
    return _result(rule, ok, f"PSI <= {threshold:g} vs reference", f"PSI {value:.3f}", 0 if ok else n)


_TableCheck = Callable[[pl.DataFrame, Rule, pl.DataFrame | None], RuleResult | None]
_ColumnCheck = Callable[[pl.DataFrame, pl.Series, Rule], RuleResult | None]
_TABLE_CHECKS: dict[str, _TableCheck] = {
    "columns": _check_columns, "required": _check_columns, "min_rows": _check_min_rows,
    "unique": _check_unique, "expression": _check_expression,
}
# a column rule whose column is missing is not run (the columns/required rule reports it)
_COLUMN_CHECKS: dict[str, _ColumnCheck] = {
    "dtype": _check_dtype, "nulls": _check_nulls, "range": _check_range,
    "allowed": _check_allowed, "domain": _check_allowed, "distribution": _check_distribution,
}


def _check(frame: pl.DataFrame, rule: Rule, existing: pl.DataFrame | None) -> RuleResult | None:
    """Run one rule; None when it does not apply (its column is missing: reported elsewhere)."""
    if rule.kind in _TABLE_CHECKS:
        return _TABLE_CHECKS[rule.kind](frame, rule, existing)
    if rule.kind not in _COLUMN_CHECKS:
        raise ValueError(f"unknown rule kind {rule.kind!r}")
    if rule.column is None or rule.column not in frame.columns:
        return None
    return _COLUMN_CHECKS[rule.kind](frame, frame[rule.column], rule)


def validate(
    frame: pl.DataFrame,
    rules: list[Rule] | tuple[Rule, ...],
    *,
    existing: pl.DataFrame | None = None,
    reference_version: int | None = None,
) -> ValidationReport:
    """Check ``frame`` against ``rules``.

    Args:
        frame: the batch.
        rules: inferred and/or declared rules.
        existing: rows already in the dataset (only the ``unique`` columns are needed), so that
            uniqueness also holds across versions.
        reference_version: the dataset version the inferred rules came from (for the report).

    Returns:
        The report; ``report.ok`` is False when an error rule failed.
    """
    results = [r for r in (_check(frame, rule, existing) for rule in rules) if r is not None]
    return ValidationReport(tuple(results), frame.height, reference_version)
