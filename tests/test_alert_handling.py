"""People handle alerts: acknowledge and resolve with a reason, from core and from the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest

from core import monitoring
from core.cli import run
from core.errors import LakeopsError, NotFoundError
from core.jobruns import pending_alerts


def _open(lake, settings, model="churn"):
    return monitoring.raise_alert("drift", model, message=f"data drift on {model}", evidence={"share": 0.6},
                                  lake=lake, settings=settings)


def test_acknowledged_alert_stays_one_episode_and_leaves_the_retrain_job(lake, settings):
    first = _open(lake, settings)
    assert pending_alerts(lake=lake, settings=settings).height == 1
    ack = monitoring.acknowledge_alert("drift:churn", reason="looking at the campaign", actor="ana",
                                       lake=lake, settings=settings)
    assert ack.status == "acknowledged" and ack.fingerprint == first.fingerprint
    assert ack.evidence["share"] == 0.6
    assert ack.evidence[monitoring.HANDLED_KEY] | {"at": None} == {
        "action": "acknowledge", "actor": "ana", "reason": "looking at the campaign", "at": None}
    # the condition persists: the next check writes nothing new
    assert _open(lake, settings) is None
    assert lake.read("alerts").height == 2
    assert pending_alerts(lake=lake, settings=settings).height == 0
    assert monitoring.alerts(lake=lake).height == 0
    assert monitoring.alerts(status="acknowledged", lake=lake)["fingerprint"].to_list() == ["drift:churn"]
    # the condition clears: the check resolves the acknowledged episode
    resolved = monitoring.resolve_alert("drift", "churn", message="drift cleared", lake=lake, settings=settings)
    assert resolved is not None and resolved.status == "resolved"


def test_close_alert_by_hand_then_a_persisting_condition_opens_a_new_episode(lake, settings):
    first = _open(lake, settings)
    with pytest.raises(LakeopsError, match="needs a reason"):
        monitoring.close_alert(first.alert_id, reason="  ", lake=lake, settings=settings)
    with pytest.raises(NotFoundError, match="no alert with id or fingerprint 'nope'"):
        monitoring.close_alert("nope", reason="x", lake=lake, settings=settings)
    done = monitoring.close_alert(first.alert_id, reason="campaign ended", actor="ben", lake=lake, settings=settings)
    assert done.status == "resolved" and "resolved by ben: campaign ended" in done.message
    with pytest.raises(LakeopsError, match="is resolved since"):
        monitoring.acknowledge_alert("drift:churn", reason="late", lake=lake, settings=settings)
    again = _open(lake, settings)
    assert again is not None and again.status == "open"
    rows = monitoring.alert_history("churn", lake=lake)
    assert rows["status"].to_list() == ["open", "resolved", "open"]
    handled = json.loads(rows["payload_json"][1])[monitoring.HANDLED_KEY]
    assert handled["actor"] == "ben" and handled["reason"] == "campaign ended"


def test_cli_alerts_ack_resolve_and_list(lake, settings, capsys):
    _open(lake, settings)
    _open(lake, settings, model="other")
    assert run(["--lake", lake.uri, "alerts", "ack", "drift:churn"]) == 2
    assert "--reason" in capsys.readouterr().err
    assert run(["--lake", lake.uri, "alerts", "ack", "drift:churn", "--reason", "on it"]) == 0
    assert "alert drift:churn acknowledged by" in capsys.readouterr().out
    assert run(["--lake", lake.uri, "alerts", "list", "--format", "json"]) == 0
    listed = pl.DataFrame(json.loads(capsys.readouterr().out))
    assert dict(zip(listed["fingerprint"], listed["status"], strict=True)) == {
        "drift:churn": "acknowledged", "drift:other": "open"}
    assert run(["--lake", lake.uri, "alerts", "resolve", "drift:other", "--reason", "false alarm"]) == 0
    capsys.readouterr()
    assert run(["--lake", lake.uri, "alerts", "resolve", "drift:other", "--reason", "again"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is resolved since" in err
