"""Monitoring: windows over prediction logs, stored references, drift reports, performance with delayed labels
and estimated before them, alerts.

A drift check compares a window of ``predictions/<model>`` (the last N rows or hours answered by
the champion) with the champion's reference (``core.monitoring.references``): feature
distributions of its *training distribution* (every row of its training dataset version with a
target, a seeded sample of ``reference_rows`` when larger; ``reference = "holdout"`` takes the
time-split holdout instead), and the champion's scores on its holdout. Each part is computed once
and stored in the lake (``artifacts/drift/...``, listed in ``drift_references``), so a check only
reads the window and the stored arrays.

Each check writes, in one commit, one ``drift_reports`` row per feature (with its status ``ok``,
``drift``, ``no_data`` or ``insufficient``, its data-quality shares and reasons in ``stats_json``;
``drifted`` is null when there was nothing to decide on), one for ``score`` (with the score-shift
attribution in ``stats_json``), one ``__multivariate__`` row (the domain classifier's
cross-validated AUC, its effective threshold and the separating features) and the
``__dataset__`` verdict. The verdict is "drift" when the share of drifted counted features
reaches the policy's share (0.5), *or* the score distribution drifted (``alert_on_score_drift``,
default true: the model's own output moving is the most direct sign that it meets a different
world), *or* the domain classifier tells the window from the reference
(``alert_on_multivariate_drift``, default true). A window under ``min_rows`` rows writes only a
``__dataset__`` row with status ``insufficient``.

Performance joins ``feedback`` labels to the champion's predictions (only labelled rows count;
their number and share are reported), computes ``core.training.compute_metrics`` and compares
the policy metric with its gate-time value (the champion's latest gate report, else its
registered validation metrics). Before labels arrive, ``estimate_performance`` (CBPE) estimates
the same metrics from the calibrated scores and writes ``performance_estimates``.

Alerts are ``alerts`` rows keyed by a fingerprint (``drift:<model>``, ``data_quality:<model>``,
``performance:<model>``, ``estimated_performance:<model>``): a condition opens one alert,
repeats while it persists write nothing, and its clearing writes a ``resolved`` row. A person can
acknowledge an alert or resolve it by hand, with a reason (``acknowledge_alert``,
``close_alert``). Opening and resolving POST the row as JSON to ``[alerts] webhook_url`` if set.

Configuration (all optional)::

    [models.churn.monitoring]
    window_rows = 5000        # default drift window (or window_hours = 24)
    min_rows = 200            # fewer rows in a window: no verdict
    reference = "training"    # or "holdout" ("all" is read as "training")
    reference_rows = 1000000  # a seeded sample of the training distribution above this
    metric = "auc"            # performance metric (default: the task's gate metric)
    alert_on_score_drift = true  # score (prediction) drift alone also raises the drift alert
    alert_on_multivariate_drift = true  # so does the domain classifier
    tolerance = 0.05          # alert when the metric is worse than at the gate by more than this
    estimate_tolerance = 0.05 # the same for the CBPE estimate (default: tolerance)
    min_labels = 200          # fewer labelled predictions: no performance verdict
    performance_window_hours = 168
    [models.churn.drift]      # drift tests, thresholds, roles, quality, see core.drift.DriftPolicy
    [alerts]
    webhook_url = "http://127.0.0.1:9000/hook"
    timeout_s = 5
"""


from core.monitoring.alerts import (
    HANDLED_KEY,
    Alert,
    acknowledge_alert,
    alert_history,
    alerts,
    close_alert,
    find_alert,
    raise_alert,
    resolve_alert,
    supersede_alerts,
)
from core.monitoring.checks import (
    DATASET_ROW,
    MULTIVARIATE_ROW,
    DriftReport,
    attribution_of,
    drift_history,
    feature_distribution,
    feature_status,
    features_of,
    log_scan,
    measure_drift,
    multivariate_over_time,
    passthrough_of,
    score_over_time,
    window,
    window_features,
)
from core.monitoring.config import MonitorConfig, champion, monitor_config
from core.monitoring.estimation import EstimateReport, estimate_performance, estimated_performance_over_time
from core.monitoring.performance import (
    PerformanceReport,
    ground_truth,
    labelled_window,
    measure_performance,
    orphan_labels,
    performance_over_time,
)
from core.monitoring.references import SCORE_ROW, ModelReference, clear_cache, reference

__all__ = [
    "DATASET_ROW",
    "HANDLED_KEY",
    "MULTIVARIATE_ROW",
    "SCORE_ROW",
    "Alert",
    "DriftReport",
    "EstimateReport",
    "ModelReference",
    "MonitorConfig",
    "PerformanceReport",
    "acknowledge_alert",
    "alert_history",
    "alerts",
    "attribution_of",
    "champion",
    "measure_performance",
    "clear_cache",
    "close_alert",
    "drift_history",
    "estimate_performance",
    "estimated_performance_over_time",
    "feature_distribution",
    "ground_truth",
    "feature_status",
    "features_of",
    "find_alert",
    "log_scan",
    "passthrough_of",
    "labelled_window",
    "measure_drift",
    "monitor_config",
    "orphan_labels",
    "multivariate_over_time",
    "performance_over_time",
    "raise_alert",
    "reference",
    "resolve_alert",
    "score_over_time",
    "supersede_alerts",
    "window",
    "window_features",
]
