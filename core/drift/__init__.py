"""Drift statistics on arrays and frames, data-quality drift, verdicts with an explicit status, CBPE and attribution (pure, no I/O).

Definitions (each checked against scipy to 1e-9 in ``tests/test_drift.py``):

* **Wasserstein** (earth mover's distance, order 1) = ``∫ |F_ref - F_cur| dx`` =
  ``scipy.stats.wasserstein_distance(ref, cur)``, computed as ``∫_0^1 |Q_ref(u) - Q_cur(u)| du``
  over the merged quantile breakpoints (integer arithmetic, no merge of the data);
  ``wasserstein_norm`` divides it by the reference's population standard deviation (ddof=0),
  floored at ``1e-3`` as Evidently does. Values beyond ~1e150 are scaled by an exact power of
  two first, so magnitudes near 1e308 give finite statistics.
* **KS** two-sample Kolmogorov-Smirnov, two-sided: ``D = max_x |F_ref(x) - F_cur(x)|`` over every
  observed value (right-continuous ECDFs). The p-value follows ``scipy.stats.ks_2samp`` with its
  default ``method="auto"``: when ``max(n_ref, n_cur) <= 10_000`` scipy's *exact* distribution
  (we call ``ks_2samp`` itself), otherwise the *asymptotic* ``kstwo.sf(D, round(n*m/(n+m)))``
  with our ``D`` from one linear merge. Computed only when the verdict uses KS or the policy
  asks for ``statistics = "all"``: at 1M rows the p-value alone can cost 0.35 CPU s.
* **PSI** (population stability index) ``Σ (q_i - p_i) ln(q_i / p_i)`` (natural log) over bins;
  numeric bins are the reference's deciles (``numpy.quantile`` linear, interior edges, duplicates
  dropped, right-closed bins ``(e_{k-1}, e_k]`` with open outer ends); categorical bins are the
  union of categories. Empty bins get the proportion ``EPSILON = 1e-4`` (not renormalised).
  Equals ``scipy.stats.entropy(q, p) + scipy.stats.entropy(p, q)`` when no bin is empty; NaN
  when either sample is empty.
* **chi-square** Pearson's test of homogeneity on the 2 × K table (reference counts, current
  counts) over the union of categories seen in either sample, no continuity correction:
  ``scipy.stats.chi2_contingency(table, correction=False)``; K = 1 gives (0, 1) as scipy does.
* **Jensen-Shannon distance** (the categorical statistic, Evidently's scale): the square root of
  ``D_JS(P||Q) = ½ KL(P||M) + ½ KL(Q||M)``, ``M = ½ (P + Q)``, in natural-log units, over the
  union of categories: ``scipy.spatial.distance.jensenshannon(P, Q)`` (0 <= d <= sqrt(ln 2)).
  The divergence in bits (``js_divergence_bits``, the seed's number) is reported beside it:
  distance 0.1 is divergence 0.0144 bits.

Nulls, NaN and ±inf are dropped before a numeric test (and counted by the quality checks); nulls
before a categorical one.

Default test (Evidently's, by the smaller of the two sample sizes; overridable per model and per
feature, see ``DriftPolicy``): ``<= 1000`` rows: KS (drift when p <= 0.05) for numeric,
chi-square (p <= 0.05) for categorical; ``> 1000`` rows: normed Wasserstein (drift when >= 0.1)
for numeric, Jensen-Shannon distance (>= 0.1) for categorical. PSI (>= 0.1) can be chosen.

Each column also gets the data-quality checks of ``core.drift.quality`` (null share ±0.05,
NaN/inf share +0.01, out-of-range share 0.02, new-level share 0.01: a new category holding
8 % of the window is drift on its own) and an explicit status: ``ok``, ``drift``, ``no_data``
(no usable value in the window or the reference: never "no drift") or ``insufficient`` (fewer
than ``min_values = 30`` usable values). The dataset drifts when the share of drifted features,
among the counted features that could be compared, is ``>= 0.5``; features with role
``expected_drift`` (calendar features) are reported and never counted.

Beyond univariate drift: ``multivariate_verdict`` decides on a domain classifier's AUC
(``core.training.domain_classifier``), ``cbpe`` estimates a binary classifier's performance
before labels arrive, ``attribution`` splits the score shift into per-feature shares.

Speed: a reference (sorted values, quantile edges, bin shares, category counts) is built once per
reference dataset version (``build_reference``) and kept by ``core.monitoring``; a check sorts
each current column once (numpy's SIMD sort); Wasserstein then costs integer arithmetic over the
quantile breakpoints and PSI a ``searchsorted`` of the bin edges. Samples with many ties are kept
in run-length form (distinct values with counts), which is exact and much smaller.

Modules: ``reference`` (building and serialising references), ``stats`` (the statistics),
``quality`` (data-quality shares), ``policy`` (test choice, thresholds, roles, verdicts),
``cbpe`` (performance estimation), ``attribution`` (score-shift attribution), ``sketch`` (mergeable
per-partition summaries for drift checks run as map-reduce on a cluster, with stated error bounds).
"""

from core.drift.attribution import Attribution, attribute
from core.drift.cbpe import BAND_SIGMAS, CBPE_METRICS, Calibration, Estimate, estimate_performance
from core.drift.policy import (
    MIN_VALUES,
    ROLES,
    SMALL_SAMPLE,
    STATUSES,
    TESTS,
    DatasetDrift,
    DriftPolicy,
    FeatureDrift,
    FeatureRule,
    TestSpec,
    check_categorical,
    check_column,
    check_numeric,
    check_numeric_sketch,
    compare,
    dataset_verdict,
    default_test,
    multivariate_verdict,
)
from core.drift.quality import (
    ColumnQuality,
    QualityTolerances,
    categorical_quality,
    numeric_quality,
    numeric_quality_counts,
)
from core.drift.reference import (
    DEFAULT_BINS,
    ArrayPacker,
    CategoricalReference,
    NumericColumn,
    NumericReference,
    Reference,
    build_reference,
    numeric_column,
    reference_from_bytes,
    reference_to_bytes,
    scale_of,
    sorted_finite,
    unpack_arrays,
)
from core.drift.sketch import (
    Grid,
    NumericSketch,
    categorical_partial,
    make_grid,
    merge_categorical,
    merge_numeric,
    numeric_partial,
    sketch_stats,
)
from core.drift.stats import (
    EPSILON,
    CategoricalStats,
    NumericStats,
    categorical_stats,
    chi_square,
    jensen_shannon,
    jensen_shannon_distance,
    ks_test,
    numeric_stats,
    psi,
    psi_categorical,
    wasserstein,
)

__all__ = [
    "BAND_SIGMAS",
    "CBPE_METRICS",
    "DEFAULT_BINS",
    "EPSILON",
    "MIN_VALUES",
    "ROLES",
    "SMALL_SAMPLE",
    "STATUSES",
    "TESTS",
    "ArrayPacker",
    "Attribution",
    "Calibration",
    "CategoricalReference",
    "CategoricalStats",
    "ColumnQuality",
    "DatasetDrift",
    "DriftPolicy",
    "Estimate",
    "FeatureDrift",
    "FeatureRule",
    "Grid",
    "NumericColumn",
    "NumericReference",
    "NumericSketch",
    "NumericStats",
    "QualityTolerances",
    "Reference",
    "TestSpec",
    "attribute",
    "build_reference",
    "categorical_partial",
    "categorical_quality",
    "categorical_stats",
    "check_categorical",
    "check_column",
    "check_numeric",
    "check_numeric_sketch",
    "chi_square",
    "compare",
    "dataset_verdict",
    "default_test",
    "estimate_performance",
    "jensen_shannon",
    "jensen_shannon_distance",
    "ks_test",
    "make_grid",
    "merge_categorical",
    "merge_numeric",
    "multivariate_verdict",
    "numeric_column",
    "numeric_partial",
    "numeric_quality",
    "numeric_quality_counts",
    "numeric_stats",
    "psi",
    "psi_categorical",
    "reference_from_bytes",
    "reference_to_bytes",
    "scale_of",
    "sketch_stats",
    "sorted_finite",
    "unpack_arrays",
    "wasserstein",
]
