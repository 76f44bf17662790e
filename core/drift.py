"""Drift statistics on arrays and frames: KS, Wasserstein, PSI, chi-square, Jensen-Shannon (pure, no I/O).

Definitions (each checked against scipy to 1e-9 in ``tests/test_drift.py``):

* **KS** two-sample Kolmogorov-Smirnov, two-sided: ``D = max_x |F_ref(x) - F_cur(x)|`` over every
  observed value (right-continuous ECDFs). The p-value follows ``scipy.stats.ks_2samp`` with its
  default ``method="auto"``: when ``max(n_ref, n_cur) <= 10_000`` the samples are small and
  scipy's *exact* distribution is used (we call ``ks_2samp`` itself, so statistic and p-value are
  scipy's to the bit); otherwise the *asymptotic* one, ``kstwo.sf(D, round(n*m/(n+m)))``, as
  scipy does, with our vectorised ``D``.
* **Wasserstein** (earth mover's distance, order 1) = ``∫ |F_ref - F_cur| dx`` =
  ``scipy.stats.wasserstein_distance(ref, cur)``; ``wasserstein_norm`` divides it by the
  reference's population standard deviation (ddof=0), floored at ``1e-3`` as Evidently does.
* **PSI** (population stability index) ``Σ (q_i - p_i) ln(q_i / p_i)`` (natural log) over bins;
  numeric bins are the reference's deciles (``numpy.quantile`` linear, interior edges, duplicates
  dropped, right-closed bins ``(e_{k-1}, e_k]`` with open outer ends); categorical bins are the
  union of categories. Empty bins get the proportion ``EPSILON = 1e-4`` (not renormalised).
  Equals ``scipy.stats.entropy(q, p) + scipy.stats.entropy(p, q)`` when no bin is empty.
* **chi-square** Pearson's test of homogeneity on the 2 × K table (reference counts, current
  counts) over the union of categories seen in either sample, no continuity correction:
  ``scipy.stats.chi2_contingency(table, correction=False)``; K = 1 gives (0, 1) as scipy does.
* **Jensen-Shannon divergence**, exactly ``D_JS(P||Q) = ½ KL(P||M) + ½ KL(Q||M)``,
  ``M = ½ (P + Q)``, over the union of categories, in **bits** (log base 2, so 0 <= D_JS <= 1):
  ``scipy.spatial.distance.jensenshannon(P, Q, base=2) ** 2`` (scipy returns the distance, the
  square root).

Nulls, NaN and ±inf are dropped before a numeric test; nulls before a categorical one.

Default test (Evidently-like, by the smaller of the two sample sizes; overridable per model and
per feature, see ``DriftPolicy``): ``<= 1000`` rows: KS (drift when p < 0.05) for numeric,
chi-square (p < 0.05) for categorical; ``> 1000`` rows: normed Wasserstein (drift when > 0.1) for
numeric, Jensen-Shannon divergence (> 0.1) for categorical. PSI (> 0.1) can be chosen. The
dataset drifts when the share of drifted features is ``>= 0.5``.

Speed: a reference (sorted values, quantile edges, bin shares, category counts) is built once per
reference dataset version (``build_reference``) and kept by ``core.monitoring``; a check then sorts
each current column once and merges it with the stored sorted reference in linear time
(``searchsorted`` + cumulative counts), so KS, Wasserstein and PSI share one sort.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import special, stats

from core.errors import ConfigError

__all__ = [
    "EPSILON",
    "TESTS",
    "CategoricalReference",
    "CategoricalStats",
    "DatasetDrift",
    "DriftPolicy",
    "FeatureDrift",
    "FeatureRule",
    "NumericReference",
    "NumericStats",
    "Reference",
    "TestSpec",
    "build_reference",
    "categorical_stats",
    "check_column",
    "chi_square",
    "compare",
    "default_test",
    "jensen_shannon",
    "ks_test",
    "numeric_stats",
    "psi",
    "psi_categorical",
    "reference_from_bytes",
    "reference_to_bytes",
    "sorted_finite",
    "wasserstein",
]

EPSILON = 1e-4
"""Proportion given to an empty PSI bin (Evidently's value); bins are not renormalised."""
DEFAULT_BINS = 10
SMALL_SAMPLE = 1000
_KS_EXACT_MAX_N = 10_000  # scipy's MAX_AUTO_N: 'auto' is exact up to here
_STD_FLOOR = 1e-3

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


# ---------------------------------------------------------------------------- references
def sorted_finite(values: Any) -> np.ndarray:
    """Return the finite values of ``values`` as a sorted float64 array (nulls, NaN, inf dropped)."""
    if isinstance(values, pl.Series):
        s = values.cast(pl.Float64)
        arr = (s.fill_null(np.nan) if s.null_count() else s).to_numpy()
    else:
        arr = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(arr)
    arr = arr[finite] if not finite.all() else arr.copy()
    arr.sort()  # numpy's SIMD sort: several times faster than polars' here
    return arr


def _quantile_edges(sorted_values: np.ndarray, bins: int) -> np.ndarray:
    if sorted_values.size == 0:
        return np.empty(0)
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.quantile(sorted_values, qs))


def _bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in right-closed bins (-inf, e0], (e0, e1], ..., (e_last, inf) of a sorted array."""
    cum = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], cum, [sorted_values.size])))


_RUNS_WORTH_IT = 0.5  # keep (unique, count) runs instead of raw values below this unique share


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Run-length form of a sorted array when it has many ties: (uniques, counts), else (values, None)."""
    if sorted_values.size < 2:
        return sorted_values, None
    change = sorted_values[1:] != sorted_values[:-1]
    n_unique = int(np.count_nonzero(change)) + 1
    if n_unique > _RUNS_WORTH_IT * sorted_values.size:
        return sorted_values, None
    ends = np.flatnonzero(np.concatenate((change, [True])))
    counts = np.diff(np.concatenate(([-1], ends)))
    return sorted_values[ends], counts.astype(np.int64)


@dataclass(frozen=True, eq=False)
class NumericReference:
    """A numeric reference distribution: sorted finite values (run-length form when tied),
    PSI quantile edges and bin counts, mean and standard deviation (ddof=0).

    ``uniques``/``counts``: the sorted values, or their distinct values and multiplicities when
    ties make that at least 2x smaller (``counts`` is None for the plain form).
    """

    uniques: np.ndarray
    counts: np.ndarray | None
    edges: np.ndarray
    bin_counts: np.ndarray
    mean: float
    std: float

    @classmethod
    def from_values(cls, values: Any, *, bins: int = DEFAULT_BINS) -> NumericReference:
        """Build the reference from raw values (sorted once here, never again per check)."""
        arr = sorted_finite(values)
        edges = _quantile_edges(arr, bins)
        mean = float(arr.mean()) if arr.size else math.nan
        std = float(arr.std()) if arr.size else math.nan
        uniques, counts = _runs(arr)
        return cls(uniques, counts, edges, _bin_counts(arr, edges), mean, std)

    @property
    def n(self) -> int:
        """Number of finite reference values."""
        return int(self.uniques.size if self.counts is None else self.counts.sum())

    @property
    def values(self) -> np.ndarray:
        """The sorted finite reference values (expanded from the run-length form if needed)."""
        return self.uniques if self.counts is None else np.repeat(self.uniques, self.counts)


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """A categorical reference distribution: levels and their counts (nulls excluded)."""

    levels: tuple[str, ...]
    counts: np.ndarray

    @classmethod
    def from_values(cls, values: Any) -> CategoricalReference:
        """Build the reference from raw category values."""
        levels, counts = _value_counts(values)
        return cls(levels, counts)

    @property
    def n(self) -> int:
        """Number of non-null reference values."""
        return int(self.counts.sum())


Reference = NumericReference | CategoricalReference


def _value_counts(values: Any) -> tuple[tuple[str, ...], np.ndarray]:
    s = values if isinstance(values, pl.Series) else pl.Series("v", list(values), dtype=pl.String)
    vc = s.cast(pl.String).drop_nulls().value_counts(name="n").sort(s.name if s.name else "v")
    name = vc.columns[0]
    return tuple(vc[name].to_list()), vc["n"].to_numpy().astype(np.int64)


def build_reference(
    frame: pl.DataFrame, *, numeric: Sequence[str], categorical: Sequence[str], bins: int = DEFAULT_BINS
) -> dict[str, Reference]:
    """Build the stored reference of every listed column of ``frame`` (computed once per version).

    Args:
        frame: the reference data (e.g. the champion's training dataset version).
        numeric: numeric columns (sorted values + quantile edges are kept).
        categorical: categorical columns (level counts are kept).
        bins: number of PSI quantile bins.

    Returns:
        ``{column: NumericReference | CategoricalReference}``.
    """
    out: dict[str, Reference] = {}
    for col in numeric:
        out[col] = NumericReference.from_values(frame[col], bins=bins)
    for col in categorical:
        out[col] = CategoricalReference.from_values(frame[col])
    return out


def reference_to_bytes(reference: Mapping[str, Reference]) -> bytes:
    """Serialise references to an uncompressed ``.npz`` (plain arrays, no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for i, (name, ref) in enumerate(reference.items()):
        arrays[f"{i}.name"] = np.array([name])
        if isinstance(ref, NumericReference):
            arrays[f"{i}.values"] = ref.uniques
            if ref.counts is not None:
                arrays[f"{i}.runs"] = ref.counts
            arrays[f"{i}.edges"] = ref.edges
            arrays[f"{i}.bin_counts"] = ref.bin_counts
            arrays[f"{i}.moments"] = np.array([ref.mean, ref.std])
        else:
            arrays[f"{i}.levels"] = np.array(ref.levels, dtype=np.str_)
            arrays[f"{i}.counts"] = ref.counts
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def reference_from_bytes(data: bytes) -> dict[str, Reference]:
    """Load references written by ``reference_to_bytes``."""
    out: dict[str, Reference] = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        keys = set(npz.files)
        i = 0
        while f"{i}.name" in keys:
            name = str(npz[f"{i}.name"][0])
            if f"{i}.values" in keys:
                mean, std = npz[f"{i}.moments"].tolist()
                runs = npz[f"{i}.runs"] if f"{i}.runs" in keys else None
                out[name] = NumericReference(
                    npz[f"{i}.values"], runs, npz[f"{i}.edges"], npz[f"{i}.bin_counts"], float(mean), float(std)
                )
            else:
                out[name] = CategoricalReference(
                    tuple(str(v) for v in npz[f"{i}.levels"].tolist()), npz[f"{i}.counts"].astype(np.int64)
                )
            i += 1
    return out


# ---------------------------------------------------------------------------- numeric statistics
@dataclass(frozen=True)
class NumericStats:
    """Every numeric statistic of one column, from one merge of the sorted samples."""

    n_ref: int
    n_cur: int
    ks: float
    ks_p_value: float
    wasserstein: float
    wasserstein_norm: float
    psi: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for reports)."""
        return {
            "ks": self.ks,
            "ks_p_value": self.ks_p_value,
            "wasserstein": self.wasserstein,
            "wasserstein_norm": self.wasserstein_norm,
            "psi": self.psi,
        }


def _merge_cdfs(
    ref: np.ndarray, ref_counts: np.ndarray | None, cur: np.ndarray, cur_counts: np.ndarray | None
) -> tuple[float, float]:
    """KS statistic and Wasserstein distance of two sorted samples from one linear merge.

    A stable argsort of ``[ref, cur]`` is a single timsort merge of two sorted runs (linear), so
    neither sample is sorted again. At merged position ``k`` the ECDF difference is
    ``F - G = (r_k·m - c_k·n) / (n·m)`` with ``r_k``, ``c_k`` the reference and current counts so
    far: exact integers, divided once. Inside a group of equal values the delta to the next value
    is 0, so partial counts there add nothing to the integral, and KS looks only where the value
    changes (the last of each group), which is exactly scipy's ``searchsorted(side="right")``.
    Samples in run-length form (``*_counts``) are merged by their distinct values, with weights.
    """
    n = ref.size if ref_counts is None else int(ref_counts.sum())
    m = cur.size if cur_counts is None else int(cur_counts.sum())
    total = ref.size + cur.size
    both = np.concatenate((ref, cur))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both
    is_cur = order[:-1] >= ref.size
    if ref_counts is None and cur_counts is None:
        diff = np.cumsum(is_cur, dtype=np.int64)
        diff *= -(n + m)
        diff += np.arange(m, total * m, m, dtype=np.int64)
    else:
        weights = np.concatenate(
            (np.ones(ref.size, np.int64) if ref_counts is None else ref_counts,
             np.ones(cur.size, np.int64) if cur_counts is None else cur_counts)
        )[order[:-1]]
        cur_w = np.where(is_cur, weights, 0)
        ref_w = weights - cur_w
        diff = np.cumsum(ref_w, dtype=np.int64) * m
        diff -= np.cumsum(cur_w, dtype=np.int64) * n
    del order, is_cur
    np.abs(diff, out=diff)
    deltas = np.diff(merged)
    del merged
    scale = float(n) * float(m)
    w = float(np.dot(diff.astype(np.float64), deltas)) / scale
    changes = diff[deltas != 0]
    d = float(changes.max()) / scale if changes.size else 0.0
    return d, w


def _ks_p_asymp(d: float, n: int, m: int) -> float:
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = EPSILON) -> float:
    p = ref_counts / max(int(ref_counts.sum()), 1)
    q = cur_counts / max(int(cur_counts.sum()), 1)
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_stats(reference: NumericReference, current_sorted: np.ndarray) -> NumericStats:
    """KS, Wasserstein (raw and normed) and PSI of a sorted current sample against a reference.

    Args:
        reference: the stored reference.
        current_sorted: finite current values, sorted ascending (``sorted_finite``).

    Returns:
        The statistics; NaN everywhere when either sample is empty.
    """
    n, m = reference.n, current_sorted.size
    if n == 0 or m == 0:
        nan = math.nan
        return NumericStats(n, m, nan, nan, nan, nan, nan)
    if max(n, m) <= _KS_EXACT_MAX_N:
        res = stats.ks_2samp(reference.values, current_sorted)  # small: scipy's exact p-value
        d, p = float(res.statistic), float(res.pvalue)
        _, w = _merge_cdfs(reference.uniques, reference.counts, current_sorted, None)
    else:
        uniques, counts = _runs(current_sorted)
        d, w = _merge_cdfs(reference.uniques, reference.counts, uniques, counts)
        p = _ks_p_asymp(d, n, m)
    norm = w / max(reference.std, _STD_FLOOR)
    cur_counts = _bin_counts(current_sorted, reference.edges)
    return NumericStats(n, m, d, p, w, norm, _psi_from_counts(reference.bin_counts, cur_counts))


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value (``scipy.stats.ks_2samp``, method auto)."""
    s = numeric_stats(NumericReference.from_values(reference), sorted_finite(current))
    return s.ks, s.ks_p_value


def wasserstein(reference: Any, current: Any, *, normed: bool = False) -> float:
    """Order-1 Wasserstein distance (``scipy.stats.wasserstein_distance``); ``normed`` divides by the reference std."""
    s = numeric_stats(NumericReference.from_values(reference), sorted_finite(current))
    return s.wasserstein_norm if normed else s.wasserstein


def psi(reference: Any, current: Any, *, bins: int = DEFAULT_BINS, eps: float = EPSILON) -> float:
    """PSI of numeric samples over the reference's quantile bins (see the module docstring)."""
    ref = NumericReference.from_values(reference, bins=bins)
    cur = sorted_finite(current)
    return _psi_from_counts(ref.bin_counts, _bin_counts(cur, ref.edges), eps)


# ---------------------------------------------------------------------------- categorical statistics
@dataclass(frozen=True)
class CategoricalStats:
    """Every categorical statistic of one column over the union of categories."""

    n_ref: int
    n_cur: int
    chisquare: float
    chisquare_p_value: float
    jensenshannon: float
    psi: float
    new_levels: tuple[str, ...] = ()
    missing_levels: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a plain dict (for reports)."""
        return {
            "chisquare": self.chisquare,
            "chisquare_p_value": self.chisquare_p_value,
            "jensenshannon": self.jensenshannon,
            "psi": self.psi,
            "new_levels": list(self.new_levels),
            "missing_levels": list(self.missing_levels),
        }


def chi_square(ref_counts: Any, cur_counts: Any) -> tuple[float, float]:
    """Pearson chi-square of homogeneity on the 2 x K table of aligned counts (no Yates correction).

    Categories absent from both rows are dropped first (as scipy would refuse a zero expected
    count). Equals ``scipy.stats.chi2_contingency([ref, cur], correction=False)[:2]``.
    """
    table = np.vstack([np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    k = table.shape[1]
    rows = table.sum(axis=1)
    if k <= 1 or np.any(rows == 0):
        return 0.0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(stats.chi2.sf(stat, k - 1))


def jensen_shannon(ref_counts: Any, cur_counts: Any, *, base: float = 2.0) -> float:
    """Jensen-Shannon divergence ½KL(P||M) + ½KL(Q||M) of aligned counts, in log ``base`` (bits)."""
    p = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(cur_counts, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    mid = (p + q) / 2.0
    js = 0.5 * np.sum(special.rel_entr(p, mid)) + 0.5 * np.sum(special.rel_entr(q, mid))
    return float(js / np.log(base))


def psi_categorical(ref_counts: Any, cur_counts: Any, *, eps: float = EPSILON) -> float:
    """PSI over aligned category counts (empty categories get proportion ``eps``)."""
    return _psi_from_counts(np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64), eps)


def categorical_stats(
    reference: CategoricalReference, levels: Sequence[str], counts: Any
) -> CategoricalStats:
    """Chi-square, Jensen-Shannon and PSI of current category counts against a reference."""
    counts = np.asarray(counts, dtype=np.int64)
    ref_index = {lv: i for i, lv in enumerate(reference.levels)}
    new = sorted(lv for lv in levels if lv not in ref_index)
    union = list(reference.levels) + new
    pos = {lv: i for i, lv in enumerate(union)}
    ref_c = np.zeros(len(union), dtype=np.int64)
    ref_c[: len(reference.levels)] = reference.counts
    cur_c = np.zeros(len(union), dtype=np.int64)
    if len(levels):
        np.add.at(cur_c, np.array([pos[lv] for lv in levels], dtype=np.int64), counts)
    n_ref, n_cur = int(ref_c.sum()), int(cur_c.sum())
    seen = set(levels)
    missing = tuple(lv for lv, c in zip(reference.levels, reference.counts, strict=True) if c and lv not in seen)
    if n_ref == 0 or n_cur == 0:
        nan = math.nan
        return CategoricalStats(n_ref, n_cur, nan, nan, nan, nan, tuple(new), missing)
    chi, p = chi_square(ref_c, cur_c)
    return CategoricalStats(
        n_ref, n_cur, chi, p, jensen_shannon(ref_c, cur_c), psi_categorical(ref_c, cur_c), tuple(new), missing
    )


# ---------------------------------------------------------------------------- policy and verdicts
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

