"""Prediction (score) drift alone raises the drift alert by default, and can be turned off."""

from __future__ import annotations

from core.flows.monitor import check_drift_and_alert
from tests.monitor_world import build_champion, log_predictions, settings_for, traffic


def test_score_drift_alone_raises_the_alert_unless_turned_off(tmp_path):
    lake = build_champion(tmp_path / "lake")
    log_predictions(lake, traffic(1500, seed=3, campaign=True))
    # share = 1.0: the feature rule alone would need every feature to drift
    on = settings_for(lake, models={"churn": {"drift": {"share": 1.0}}})
    rep = check_drift_and_alert("churn", lake=lake, settings=on)
    assert rep.score is not None and rep.score.drifted
    assert rep.result is not None and not rep.result.drifted
    assert rep.drifted and rep.alert == "opened"
    assert rep.multivariate is not None and rep.multivariate.drifted  # the campaign also separates the rows
    off = settings_for(lake, models={"churn": {"drift": {"share": 1.0}, "monitoring": {
        "alert_on_score_drift": False, "alert_on_multivariate_drift": False}}})
    rep2 = check_drift_and_alert("churn", lake=lake, settings=off)
    assert rep2.drifted is False and rep2.alert == "resolved"
