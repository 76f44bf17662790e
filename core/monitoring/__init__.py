"""Monitoring: windows over prediction logs, stored drift references, drift reports, performance with delayed labels, alerts.

A drift check compares a window of ``predictions/<model>`` (the last N rows or hours answered by
the champion) with the champion's reference: its training dataset version (by default the
holdout part, i.e. the most recent rows when the split is by time, which is what the gate
measured; ``reference = "all"`` takes every row) plus the champion's scores on that holdout.
The feature distributions are computed once per training dataset version (and split) and the
holdout scores once per model version, and stored in the lake (``artifacts/drift/...ref``, listed
in ``drift_references``), so a check only reads the window and the stored arrays. Each check writes one ``drift_reports`` row
per feature, one for ``score`` and one ``__dataset__`` verdict, in one commit.

Performance joins ``feedback`` labels to the champion's predictions (only labelled rows count;
their number and share are reported), computes ``core.training.compute_metrics`` and compares
the policy metric with its gate-time value (the champion's latest gate report, else its
registered validation metrics).

Alerts are ``alerts`` rows keyed by a fingerprint (``drift:<model>``, ``performance:<model>``):
a condition opens one alert, repeats while it persists write nothing, and its clearing writes a
``resolved`` row. A person can acknowledge an alert or resolve it by hand, with a reason
(``acknowledge_alert``, ``close_alert``). Opening and resolving POST the row as JSON to ``[alerts] webhook_url`` if set.

Configuration (all optional)::

    [models.churn.monitoring]
    window_rows = 5000        # default drift window (or window_hours = 24)
    min_rows = 200            # fewer rows in a window: no verdict
    reference = "holdout"     # or "all"
    metric = "auc"            # performance metric (default: the task's gate metric)
    alert_on_score_drift = true  # score (prediction) drift alone also raises the drift alert
    tolerance = 0.05          # alert when the metric is worse than at the gate by more than this
    min_labels = 200          # fewer labelled predictions: no performance verdict
    performance_window_hours = 168
    [models.churn.drift]      # drift tests and thresholds, see core.drift.DriftPolicy
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
    DriftReport,
    check_drift,
    drift_history,
    feature_distribution,
    features_of,
    log_scan,
    passthrough_of,
    score_over_time,
    window,
)
from core.monitoring.config import MonitorConfig, champion, monitor_config
from core.monitoring.performance import (
    PerformanceReport,
    check_performance,
    ground_truth,
    labelled_window,
    orphan_labels,
    performance_over_time,
)
from core.monitoring.references import SCORE_ROW, ModelReference, clear_cache, reference

__all__ = [
    "DATASET_ROW",
    "HANDLED_KEY",
    "SCORE_ROW",
    "Alert",
    "DriftReport",
    "ModelReference",
    "MonitorConfig",
    "PerformanceReport",
    "acknowledge_alert",
    "alert_history",
    "alerts",
    "champion",
    "check_drift",
    "check_performance",
    "clear_cache",
    "close_alert",
    "drift_history",
    "feature_distribution",
    "ground_truth",
    "features_of",
    "find_alert",
    "log_scan",
    "passthrough_of",
    "labelled_window",
    "monitor_config",
    "orphan_labels",
    "performance_over_time",
    "raise_alert",
    "reference",
    "resolve_alert",
    "score_over_time",
    "supersede_alerts",
    "window",
]
