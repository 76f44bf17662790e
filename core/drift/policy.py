"""Which test decides drift for a column (by kind and sample size), thresholds, per-feature roles and overrides,
data-quality tolerances, and the per-column and dataset verdicts with an explicit status."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import polars as pl

from core.drift.quality import (
    ColumnQuality,
    QualityTolerances,
    categorical_quality,
    numeric_quality,
    numeric_quality_counts,
)
from core.drift.reference import (
    DEFAULT_BINS,
    CategoricalReference,
    NumericColumn,
    NumericReference,
    Reference,
    numeric_column,
)
from core.drift.stats import CategoricalStats, NumericStats, categorical_stats, numeric_stats
from core.errors import ConfigError
from core.sections import parse_section

__all__ = [
    "MIN_VALUES",
    "ROLES",
    "SMALL_SAMPLE",
    "STATUSES",
    "TESTS",
    "DatasetDrift",
    "DriftPolicy",
    "FeatureDrift",
    "FeatureRule",
    "TestSpec",
    "check_categorical",
    "check_column",
    "check_numeric",
    "check_numeric_sketch",
    "compare",
    "dataset_verdict",
    "default_test",
    "multivariate_verdict",
]

SMALL_SAMPLE = 1000
MIN_VALUES = 30
STATUSES = ("ok", "drift", "no_data", "insufficient")
"""``ok``: compared, no drift; ``drift``: the test or a data-quality check fired; ``no_data``: no usable
value in the window (or in the reference), so nothing could be compared, which is never "no drift";
``insufficient``: fewer than ``min_values`` usable values on a side, no verdict from the test."""
ROLES = ("feature", "expected_drift")
"""``expected_drift``: a feature expected to move (month, day of week): reported, never counted."""

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class TestSpec:
    """One drift test: which column kind it applies to, its default threshold and direction.

    Direction follows Evidently: a p-value test drifts when ``p <= threshold``, a distance when
    ``statistic >= threshold``.
    """

    name: str
    kinds: tuple[str, ...]
    threshold: float
    p_value: bool  # True: drift when p <= threshold; False: drift when statistic >= threshold
    statistic: str  # key in the stats dict


TESTS: dict[str, TestSpec] = {
    t.name: t
    for t in (
        TestSpec("ks", ("numeric",), 0.05, True, "ks"),
        TestSpec("wasserstein", ("numeric",), 0.1, False, "wasserstein_norm"),
        TestSpec("psi", ("numeric", "categorical"), 0.1, False, "psi"),
        TestSpec("chisquare", ("categorical",), 0.05, True, "chisquare"),
        TestSpec("jensenshannon", ("categorical",), 0.1, False, "jensenshannon"),
    )
}


@dataclass(frozen=True)
class FeatureRule:
    """A per-feature override: the test to use, its threshold, and the feature's role."""

    test: str | None = None
    threshold: float | None = None
    role: str = "feature"


@dataclass(frozen=True)
class DriftPolicy:
    """How drift is decided: default tests per kind and sample size, thresholds, roles, quality, dataset share.

    TOML (``[drift]`` for every model, ``[models.<name>.drift]`` wins)::

        share = 0.5                  # dataset drifts when >= this share of compared features drift
        small_sample = 1000          # <= this many rows: p-value tests, else distances
        min_values = 30              # fewer usable values on a side: status "insufficient"
        bins = 10                    # PSI quantile bins
        statistics = "verdict"       # or "all": also KS and its p-value when no verdict needs them
        numeric_test = "ks"          # force one test for every numeric feature (default: auto)
        categorical_test = "psi"     # same for categorical features
        multivariate = true          # domain-classifier check (core.training.domain_classifier)
        multivariate_threshold = 0.55  # cross-validated AUC at or above this: multivariate drift
        multivariate_sample = 10000  # rows per side the classifier sees at most
        attribution_sample = 5000    # rows per side for the score-shift attribution (0: off)
        [models.churn.drift.thresholds]
        wasserstein = 0.15           # change a test's default threshold
        [models.churn.drift.quality]
        null_share = 0.05            # see core.drift.quality
        [models.churn.drift.features.tenure_months]
        test = "psi"
        threshold = 0.2
        [models.churn.drift.features.month]
        role = "expected_drift"      # reported, never counted in the verdict
    """

    share: float = 0.5
    small_sample: int = SMALL_SAMPLE
    min_values: int = MIN_VALUES
    bins: int = DEFAULT_BINS
    statistics: str = "verdict"
    numeric_test: str | None = None
    categorical_test: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    features: Mapping[str, FeatureRule] = field(default_factory=dict)
    quality: QualityTolerances = field(default_factory=QualityTolerances)
    multivariate: bool = True
    multivariate_threshold: float = 0.55
    multivariate_sample: int = 10_000
    attribution_sample: int = 5_000

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"drift share must be in (0, 1], got {self.share!r}")
        if self.small_sample < 0 or self.bins < 2 or self.min_values < 1:
            raise ConfigError(
                f"drift small_sample must be >= 0, bins >= 2 and min_values >= 1, got "
                f"{self.small_sample}, {self.bins}, {self.min_values}"
            )
        if self.statistics not in ("verdict", "all"):
            raise ConfigError(f"[drift] statistics must be 'verdict' or 'all', got {self.statistics!r}")
        if not 0.5 <= self.multivariate_threshold <= 1.0:
            raise ConfigError(f"[drift] multivariate_threshold is an AUC in [0.5, 1], got {self.multivariate_threshold!r}")
        if self.multivariate_sample < 50 or self.attribution_sample < 0:
            raise ConfigError("[drift] multivariate_sample must be >= 50 and attribution_sample >= 0")
        for key, name in (("numeric_test", self.numeric_test), ("categorical_test", self.categorical_test)):
            if name is not None:
                _check_test(name, key, "numeric" if key == "numeric_test" else "categorical")
        for name in self.thresholds:
            _check_test(name, f"thresholds.{name}", None)
        for feat, rule in self.features.items():
            if rule.test is not None:
                _check_test(rule.test, f"features.{feat}.test", None)
            if rule.role not in ROLES:
                raise ConfigError(f"[drift.features.{feat}] role must be one of {', '.join(ROLES)}, got {rule.role!r}")

    @classmethod
    def from_config(cls, *sections: Mapping[str, Any]) -> DriftPolicy:
        """Build a policy from TOML sections, later ones overriding earlier ones.

        A key a section lacks keeps the field default of ``cls``; ``thresholds`` and ``quality``
        merge key by key, ``features`` feature by feature and key by key.

        Raises:
            ConfigError: naming the bad key.
        """
        merged = _merge(sections)
        for feat, rule in merged["features"].items():
            parse_section(FeatureRule, rule, where=f"[drift.features.{feat}]")  # names a bad key of one feature
        for tname, tval in merged["thresholds"].items():
            _float(f"drift.thresholds.{tname}", tval)
        parse_section(QualityTolerances, merged["quality"], where="[drift.quality]")
        return parse_section(cls, merged, where="[drift]", ignore=_PASSTHROUGH)

    def role_of(self, feature: str) -> str:
        """The feature's role: ``feature`` (counted) or ``expected_drift`` (reported only)."""
        return self.features.get(feature, FeatureRule()).role

    def rule_for(self, feature: str, kind: Kind, n_ref: int, n_cur: int) -> tuple[str, float]:
        """Return ``(test, threshold)`` for one feature given its kind and sample sizes."""
        rule = self.features.get(feature, FeatureRule())
        forced = self.numeric_test if kind == "numeric" else self.categorical_test
        test = rule.test or forced or default_test(kind, n_ref, n_cur, small_sample=self.small_sample)
        if kind not in TESTS[test].kinds:
            raise ConfigError(f"drift test {test!r} does not apply to {kind} feature {feature!r}")
        threshold = rule.threshold if rule.threshold is not None else self.thresholds.get(test, TESTS[test].threshold)
        return test, float(threshold)


_PASSTHROUGH = ("window_rows", "window_hours", "min_rows")  # read by core.monitoring
_NESTED = ("thresholds", "quality", "features")


def _merge(sections: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One section out of several, later keys winning (nested tables merged key by key)."""
    merged: dict[str, Any] = {key: {} for key in _NESTED}
    for sec in sections:
        for key, value in sec.items():
            if key not in _NESTED:
                merged[key] = value
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"[drift.{key}] must be a table, got {value!r}")
            for name, item in value.items():
                if key == "features":
                    if not isinstance(item, Mapping):
                        raise ConfigError(f"[drift.features.{name}] must be a table, got {item!r}")
                    item = {**merged[key].get(name, {}), **item}
                merged[key][name] = item
    return merged


def _float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"[{key}] must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"[{key}] must be a number, got {value!r}") from None


def _check_test(name: str, key: str, kind: str | None) -> None:
    if name not in TESTS:
        raise ConfigError(f"[drift] {key}: unknown test {name!r}; use one of {', '.join(TESTS)}")
    if kind is not None and kind not in TESTS[name].kinds:
        raise ConfigError(f"[drift] {key}: test {name!r} does not apply to {kind} features")


def default_test(kind: Kind, n_ref: int, n_cur: int, *, small_sample: int = SMALL_SAMPLE) -> str:
    """The default test: p-value tests while the smaller sample has <= ``small_sample`` rows."""
    small = min(n_ref, n_cur) <= small_sample
    if kind == "numeric":
        return "ks" if small else "wasserstein"
    return "chisquare" if small else "jensenshannon"


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict for one column: the chosen test, its statistic, p-value, threshold, status and all stats.

    ``drifted`` is True for status ``drift``, False for ``ok`` and None when there was nothing to
    decide on (``no_data``, ``insufficient``). ``reasons`` says in words why the status is what
    it is; ``quality`` holds the data-quality shares (``ColumnQuality.as_dict``).
    """

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool | None
    n_ref: int
    n_cur: int
    stats: dict[str, Any]
    status: str = "ok"
    role: str = "feature"
    reasons: tuple[str, ...] = ()
    quality: dict[str, Any] | None = None

    @property
    def counted(self) -> bool:
        """Whether this column counts in the dataset verdict (not an ``expected_drift`` feature)."""
        return self.role != "expected_drift"

    @property
    def no_data_side(self) -> str | None:
        """``current``, ``reference`` or ``both`` for status ``no_data``, else None."""
        return self.stats.get("no_data") if self.status == "no_data" else None


@dataclass(frozen=True)
class DatasetDrift:
    """Per-feature verdicts and the dataset-level one.

    ``share`` is the share of drifted features among the counted features that could be
    compared (status ``ok`` or ``drift``; ``expected_drift`` features never count). ``drifted``
    is ``share >= share_threshold``, or None when no counted feature could be compared.
    ``status``: ``drift``, ``no_data`` (not drifted, but a counted feature had no data, or
    nothing could be compared) or ``ok``.
    """

    features: list[FeatureDrift]
    share: float
    share_threshold: float
    drifted: bool | None
    status: str = "ok"

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features that count in the verdict."""
        return [f.feature for f in self.features if f.status == "drift" and f.counted]

    @property
    def no_data_features(self) -> list[str]:
        """Counted features with no usable value in the window (populated or not in the reference)."""
        return [f.feature for f in self.features if f.status == "no_data" and f.counted]

    @property
    def quality_flagged(self) -> list[FeatureDrift]:
        """Counted features whose data-quality shares broke tolerance."""
        return [f for f in self.features if f.counted and f.quality and f.quality.get("flags")]

    @property
    def expected_drift(self) -> list[str]:
        """Features with role ``expected_drift`` (reported, not counted)."""
        return [f.feature for f in self.features if not f.counted]

    def to_frame(self) -> pl.DataFrame:
        """One row per feature (feature, kind, role, status, test, statistic, p_value, threshold, drifted, n, reasons)."""
        return pl.DataFrame(
            [
                {
                    "feature": f.feature,
                    "kind": f.kind,
                    "role": f.role,
                    "status": f.status,
                    "test": f.test,
                    "statistic": f.statistic,
                    "p_value": f.p_value,
                    "threshold": f.threshold,
                    "drifted": f.drifted,
                    "n_ref": f.n_ref,
                    "n_cur": f.n_cur,
                    "reasons": "; ".join(f.reasons),
                }
                for f in self.features
            ],
            schema={
                "feature": pl.String, "kind": pl.String, "role": pl.String, "status": pl.String, "test": pl.String,
                "statistic": pl.Float64, "p_value": pl.Float64, "threshold": pl.Float64, "drifted": pl.Boolean,
                "n_ref": pl.Int64, "n_cur": pl.Int64, "reasons": pl.String,
            },
        )


def _verdict(
    feature: str, kind: Kind, st: NumericStats | CategoricalStats, quality: ColumnQuality, policy: DriftPolicy,
    test: str, threshold: float,
) -> FeatureDrift:
    spec = TESTS[test]
    values: dict[str, Any] = st.as_dict()
    role = policy.role_of(feature)
    qual = quality.as_dict()
    reasons = list(quality.reasons)
    if st.n_cur == 0 or st.n_ref == 0:
        side = "both" if st.n_cur == st.n_ref == 0 else ("current" if st.n_cur == 0 else "reference")
        values["no_data"] = side
        if st.n_cur == 0:
            reasons.insert(0, f"no usable value in the window ({quality.rows} rows: {quality.nulls} null, "
                              f"{quality.nonfinite} NaN/inf)")
        if st.n_ref == 0:
            reasons.insert(0, "no usable value in the reference")
        p_value = math.nan if spec.p_value else None
        return FeatureDrift(feature, kind, test, math.nan, p_value, threshold, None, st.n_ref, st.n_cur, values,
                            "no_data", role, tuple(reasons), qual)
    statistic = float(values[spec.statistic])
    p_value = float(values[f"{spec.statistic}_p_value"]) if spec.p_value else None
    fired = (p_value is not None and p_value <= threshold) if spec.p_value else statistic >= threshold
    if fired:
        shown = f"p = {p_value:.3g} <= {threshold:g}" if spec.p_value else f"{statistic:.4g} >= {threshold:g}"
        reasons.insert(0, f"{test} {shown}")
    if quality.flags:
        status = "drift"
    elif min(st.n_ref, st.n_cur) < policy.min_values:
        status = "insufficient"
        reasons.insert(0, f"only {min(st.n_ref, st.n_cur)} usable values (min_values {policy.min_values}): no verdict")
    else:
        status = "drift" if fired else "ok"
    drifted = True if status == "drift" else (False if status == "ok" else None)
    return FeatureDrift(feature, kind, test, statistic, p_value, threshold, drifted, st.n_ref, st.n_cur, values,
                        status, role, tuple(reasons), qual)


def check_column(
    feature: str, reference: Reference, current: pl.Series | None, policy: DriftPolicy | None = None
) -> FeatureDrift:
    """Compare one current column with its stored reference and decide drift.

    Args:
        feature: the column name (looked up in ``policy`` for its rule and role).
        reference: the stored reference of the column.
        current: the window's values; None when the window lacks the column (status ``no_data``).
        policy: tests, thresholds and tolerances (default ``DriftPolicy()``).
    """
    policy = policy or DriftPolicy()
    if isinstance(reference, NumericReference):
        col = numeric_column(current if current is not None else pl.Series(feature, [], dtype=pl.Float64))
        return check_numeric(feature, reference, col, policy)
    assert isinstance(reference, CategoricalReference)
    series = current if current is not None else pl.Series(feature, [], dtype=pl.String)
    nulls = series.null_count()
    vc = series.cast(pl.String).drop_nulls().value_counts(name="__n")
    return check_categorical(feature, reference, vc[vc.columns[0]].to_list(), vc["__n"].to_numpy(),
                             rows=series.len(), nulls=nulls, policy=policy)


def check_numeric(feature: str, reference: NumericReference, column: NumericColumn, policy: DriftPolicy) -> FeatureDrift:
    """``check_column`` for a numeric column already split by ``numeric_column`` (or merged from partitions)."""
    test, threshold = policy.rule_for(feature, "numeric", reference.n, column.values.size)
    st = numeric_stats(reference, column.values, ks=policy.statistics == "all" or test == "ks")
    return _verdict(feature, "numeric", st, numeric_quality(reference, column, policy.quality), policy, test, threshold)


def check_categorical(
    feature: str, reference: CategoricalReference, levels: Sequence[str], counts: Any, *, rows: int, nulls: int,
    policy: DriftPolicy,
) -> FeatureDrift:
    """``check_column`` for a categorical column given as level counts (exact however they were added up)."""
    cst = categorical_stats(reference, levels, counts)
    quality = categorical_quality(reference, rows=rows, nulls=nulls, new_level_share=cst.new_level_share,
                                  new_levels=cst.new_levels, tol=policy.quality)
    test, threshold = policy.rule_for(feature, "categorical", cst.n_ref, cst.n_cur)
    return _verdict(feature, "categorical", cst, quality, policy, test, threshold)


def check_numeric_sketch(feature: str, reference: NumericReference, grid: Any, sketch: Any,
                         policy: DriftPolicy) -> FeatureDrift:
    """``check_column`` from a merged ``core.drift.sketch.NumericSketch``: counts, PSI and quality
    exact; Wasserstein and KS with their stated error bounds in the stats (``*_bound``)."""
    from core.drift.sketch import sketch_stats

    test, threshold = policy.rule_for(feature, "numeric", reference.n, sketch.usable)
    values, extra = sketch_stats(reference, grid, sketch, ks=policy.statistics == "all" or test == "ks")
    st = NumericStats(reference.n, sketch.usable, values["wasserstein"], values["wasserstein_norm"],
                      values["psi"], values["ks"], values["ks_p_value"])
    quality = numeric_quality_counts(reference, rows=sketch.rows, nulls=sketch.nulls, nonfinite=sketch.nonfinite,
                                     usable=sketch.usable, below=extra["below"], above=extra["above"], tol=policy.quality)
    out = _verdict(feature, "numeric", st, quality, policy, test, threshold)
    bounds: dict[str, Any] = {k: extra[k] for k in ("wasserstein_bound", "wasserstein_norm_bound", "ks_bound", "exhaustive_grid")
              if k in extra}
    return replace(out, stats={**out.stats, **bounds, "engine": "sketch"})


def compare(
    reference: Mapping[str, Reference], current: pl.DataFrame, policy: DriftPolicy | None = None
) -> DatasetDrift:
    """Compare every referenced column with ``current`` and give the dataset verdict.

    A referenced column the window lacks is status ``no_data``, never skipped.

    Args:
        reference: stored references by column (``build_reference``).
        current: the current window (extra columns are ignored).
        policy: tests, thresholds, roles and tolerances (default ``DriftPolicy()``).

    Returns:
        A ``DatasetDrift`` with one ``FeatureDrift`` per referenced column.
    """
    policy = policy or DriftPolicy()
    results = [
        check_column(col, ref, current[col] if col in current.columns else None, policy)
        for col, ref in reference.items()
    ]
    return dataset_verdict(results, policy)


def dataset_verdict(results: list[FeatureDrift], policy: DriftPolicy) -> DatasetDrift:
    """The dataset verdict over per-feature results (see ``DatasetDrift``)."""
    counted = [r for r in results if r.counted]
    compared = [r for r in counted if r.status in ("ok", "drift")]
    if not compared:
        return DatasetDrift(results, math.nan, policy.share, None, "no_data")
    share = sum(r.status == "drift" for r in compared) / len(compared)
    drifted = share >= policy.share
    status = "drift" if drifted else ("no_data" if any(r.status == "no_data" for r in counted) else "ok")
    return DatasetDrift(results, share, policy.share, drifted, status)


def multivariate_verdict(auc: float, n_ref: int, n_cur: int, threshold: float) -> tuple[bool | None, float, float]:
    """Decide multivariate drift from a domain classifier's cross-validated AUC.

    The AUC of a classifier that cannot tell the two sets apart is 0.5 with standard error
    ``se0 = sqrt((n_ref + n_cur + 1) / (12·n_ref·n_cur))`` (the Mann-Whitney null). Drift is
    ``auc >= max(threshold, 0.5 + 3·se0)``, so small samples need a clearer separation than the
    threshold alone.

    Returns:
        ``(drifted, effective_threshold, se0)``; drifted is None when a side is empty or the AUC is NaN.
    """
    if n_ref <= 0 or n_cur <= 0 or math.isnan(auc):
        return None, threshold, math.nan
    se0 = math.sqrt((n_ref + n_cur + 1) / (12.0 * n_ref * n_cur))
    effective = max(threshold, 0.5 + 3.0 * se0)
    return auc >= effective, effective, se0
