"""Which test decides drift for a column (by kind and sample size), thresholds, per-feature overrides, verdicts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from core.drift.reference import DEFAULT_BINS, NumericReference, Reference, sorted_finite
from core.drift.stats import CategoricalStats, NumericStats, categorical_stats, numeric_stats
from core.errors import ConfigError

__all__ = [
    "SMALL_SAMPLE",
    "TESTS",
    "DatasetDrift",
    "DriftPolicy",
    "FeatureDrift",
    "FeatureRule",
    "TestSpec",
    "check_column",
    "compare",
    "default_test",
]

SMALL_SAMPLE = 1000

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class TestSpec:
    """One drift test: which column kind it applies to, its default threshold and direction."""

    name: str
    kinds: tuple[str, ...]
    threshold: float
    p_value: bool  # True: drift when p < threshold; False: drift when statistic > threshold
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
    """A per-feature override: the test to use and/or its threshold."""

    test: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftPolicy:
    """How drift is decided: default tests per kind and sample size, thresholds, dataset share.

    TOML (``[drift]`` for every model, ``[models.<name>.drift]`` wins)::

        share = 0.5                  # dataset drifts when >= this share of features drift
        small_sample = 1000          # <= this many rows: p-value tests, else distances
        bins = 10                    # PSI quantile bins
        numeric_test = "ks"          # force one test for every numeric feature (default: auto)
        categorical_test = "psi"     # same for categorical features
        [models.churn.drift.thresholds]
        wasserstein = 0.15           # change a test's default threshold
        [models.churn.drift.features.tenure_months]
        test = "psi"
        threshold = 0.2
    """

    share: float = 0.5
    small_sample: int = SMALL_SAMPLE
    bins: int = DEFAULT_BINS
    numeric_test: str | None = None
    categorical_test: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    features: Mapping[str, FeatureRule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"drift share must be in (0, 1], got {self.share!r}")
        if self.small_sample < 0 or self.bins < 2:
            raise ConfigError(f"drift small_sample must be >= 0 and bins >= 2, got {self.small_sample}, {self.bins}")
        for key, name in (("numeric_test", self.numeric_test), ("categorical_test", self.categorical_test)):
            if name is not None:
                _check_test(name, key, "numeric" if key == "numeric_test" else "categorical")
        for name in self.thresholds:
            _check_test(name, f"thresholds.{name}", None)
        for feat, rule in self.features.items():
            if rule.test is not None:
                _check_test(rule.test, f"features.{feat}.test", None)

    @classmethod
    def from_config(cls, *sections: Mapping[str, Any]) -> DriftPolicy:
        """Build a policy from TOML sections, later ones overriding earlier ones.

        Raises:
            ConfigError: naming the bad key.
        """
        merged: dict[str, Any] = {}
        thresholds: dict[str, float] = {}
        features: dict[str, FeatureRule] = {}
        known = {"share", "small_sample", "bins", "numeric_test", "categorical_test", "thresholds", "features"}
        passthrough = {"window_rows", "window_hours", "min_rows"}  # read by core.monitoring
        for sec in sections:
            for key, value in sec.items():
                if key in passthrough:
                    continue
                if key not in known:
                    raise ConfigError(f"[drift] unknown key {key!r}; known: {', '.join(sorted(known | passthrough))}")
                if key == "thresholds":
                    for tname, tval in dict(value).items():
                        thresholds[tname] = _float(f"drift.thresholds.{tname}", tval)
                elif key == "features":
                    for feat, rule in dict(value).items():
                        rule = dict(rule)
                        bad = set(rule) - {"test", "threshold"}
                        if bad:
                            raise ConfigError(f"[drift.features.{feat}] unknown key(s) {sorted(bad)}; use test, threshold")
                        thr = rule.get("threshold")
                        features[feat] = FeatureRule(
                            rule.get("test"), None if thr is None else _float(f"drift.features.{feat}.threshold", thr)
                        )
                else:
                    merged[key] = value
        try:
            return cls(
                share=_float("drift.share", merged.get("share", 0.5)),
                small_sample=int(merged.get("small_sample", SMALL_SAMPLE)),
                bins=int(merged.get("bins", DEFAULT_BINS)),
                numeric_test=merged.get("numeric_test"),
                categorical_test=merged.get("categorical_test"),
                thresholds=thresholds,
                features=features,
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"[drift] invalid value: {exc}") from None

    def rule_for(self, feature: str, kind: Kind, n_ref: int, n_cur: int) -> tuple[str, float]:
        """Return ``(test, threshold)`` for one feature given its kind and sample sizes."""
        rule = self.features.get(feature, FeatureRule())
        forced = self.numeric_test if kind == "numeric" else self.categorical_test
        test = rule.test or forced or default_test(kind, n_ref, n_cur, small_sample=self.small_sample)
        if kind not in TESTS[test].kinds:
            raise ConfigError(f"drift test {test!r} does not apply to {kind} feature {feature!r}")
        threshold = rule.threshold if rule.threshold is not None else self.thresholds.get(test, TESTS[test].threshold)
        return test, float(threshold)


def _float(key: str, value: Any) -> float:
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
    """The verdict for one feature: the chosen test, its statistic, p-value, threshold and all stats."""

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    n_ref: int
    n_cur: int
    stats: dict[str, Any]


@dataclass(frozen=True)
class DatasetDrift:
    """Per-feature verdicts and the dataset-level one (share of drifted features >= ``share_threshold``)."""

    features: list[FeatureDrift]
    share: float
    share_threshold: float
    drifted: bool

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features."""
        return [f.feature for f in self.features if f.drifted]

    def to_frame(self) -> pl.DataFrame:
        """One row per feature (feature, kind, test, statistic, p_value, threshold, drifted, n)."""
        return pl.DataFrame(
            [
                {
                    "feature": f.feature,
                    "kind": f.kind,
                    "test": f.test,
                    "statistic": f.statistic,
                    "p_value": f.p_value,
                    "threshold": f.threshold,
                    "drifted": f.drifted,
                    "n_ref": f.n_ref,
                    "n_cur": f.n_cur,
                }
                for f in self.features
            ],
            schema={
                "feature": pl.String, "kind": pl.String, "test": pl.String, "statistic": pl.Float64,
                "p_value": pl.Float64, "threshold": pl.Float64, "drifted": pl.Boolean,
                "n_ref": pl.Int64, "n_cur": pl.Int64,
            },
        )


def _verdict(feature: str, kind: Kind, st: NumericStats | CategoricalStats, policy: DriftPolicy) -> FeatureDrift:
    test, threshold = policy.rule_for(feature, kind, st.n_ref, st.n_cur)
    spec = TESTS[test]
    values = st.as_dict()
    statistic = float(values[spec.statistic])
    p_value = float(values[f"{spec.statistic}_p_value"]) if spec.p_value else None
    if math.isnan(statistic):
        drifted = False
    elif spec.p_value:
        assert p_value is not None
        drifted = p_value < threshold
    else:
        drifted = statistic > threshold
    return FeatureDrift(feature, kind, test, statistic, p_value, threshold, bool(drifted), st.n_ref, st.n_cur, values)


def check_column(
    feature: str, reference: Reference, current: pl.Series, policy: DriftPolicy | None = None
) -> FeatureDrift:
    """Compare one current column with its stored reference and decide drift."""
    policy = policy or DriftPolicy()
    if isinstance(reference, NumericReference):
        return _verdict(feature, "numeric", numeric_stats(reference, sorted_finite(current)), policy)
    vc = current.cast(pl.String).drop_nulls().value_counts(name="__n")
    levels = vc[vc.columns[0]].to_list()
    return _verdict(feature, "categorical", categorical_stats(reference, levels, vc["__n"].to_numpy()), policy)


def compare(
    reference: Mapping[str, Reference], current: pl.DataFrame, policy: DriftPolicy | None = None
) -> DatasetDrift:
    """Compare every referenced column present in ``current`` and give the dataset verdict.

    Args:
        reference: stored references by column (``build_reference``).
        current: the current window (extra columns are ignored).
        policy: tests and thresholds (default ``DriftPolicy()``).

    Returns:
        A ``DatasetDrift`` with one ``FeatureDrift`` per compared column.
    """
    policy = policy or DriftPolicy()
    results = [check_column(col, ref, current[col], policy) for col, ref in reference.items() if col in current.columns]
    share = sum(r.drifted for r in results) / len(results) if results else 0.0
    return DatasetDrift(results, share, policy.share, bool(results) and share >= policy.share)

