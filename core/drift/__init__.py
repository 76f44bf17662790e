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
each current column once and merges it with the stored sorted reference in linear time (a
stable argsort of two sorted runs is one timsort merge; ECDFs are cumulative integer counts), so
KS and Wasserstein share one sort, and PSI is a ``searchsorted`` of the bin edges into it.
Samples with many ties (integer ages, rounded charges) are merged in run-length form
(distinct values with counts), which is exact and much smaller.

Modules: ``reference`` (building and serialising references), ``stats`` (the statistics),
``policy`` (test choice, thresholds, verdicts).
"""

from core.drift.policy import (
    SMALL_SAMPLE,
    TESTS,
    DatasetDrift,
    DriftPolicy,
    FeatureDrift,
    FeatureRule,
    TestSpec,
    check_column,
    compare,
    default_test,
)
from core.drift.reference import (
    DEFAULT_BINS,
    CategoricalReference,
    NumericReference,
    Reference,
    build_reference,
    reference_from_bytes,
    reference_to_bytes,
    sorted_finite,
)
from core.drift.stats import (
    EPSILON,
    CategoricalStats,
    NumericStats,
    categorical_stats,
    chi_square,
    jensen_shannon,
    ks_test,
    numeric_stats,
    psi,
    psi_categorical,
    wasserstein,
)

__all__ = [
    "DEFAULT_BINS",
    "EPSILON",
    "SMALL_SAMPLE",
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
