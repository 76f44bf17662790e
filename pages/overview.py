"""Overview: each model's champion and its story (since when, by whom, why), live metric, last check, alerts, events."""

import altair as alt
import polars as pl
import streamlit as st

from core.errors import LakeopsError
from core.overview import ModelStory, model_story, overview
from pages._common import lake, settings
from pages._ui import empty, link, num, show_error, table, time_axis, when


def _timeline_chart(events: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(events.to_pandas())
        .mark_point(size=90, filled=True)
        .encode(
            x=time_axis("at", "when", values=events["at"]),
            y=alt.Y("source:N", title=None),
            color=alt.Color("event:N", scale=alt.Scale(scheme="tableau10"), title="event"),
            tooltip=[alt.Tooltip("at:T", format="%Y-%m-%d %H:%M:%S"), "event", "version", "actor", "detail"],
        )
        .properties(height=140)
    )


def _story(story: ModelStory) -> None:
    left, mid, right = st.columns(3)
    with left:
        st.metric("Champion", f"v{story.champion}" if story.champion is not None else "none")
        if story.champion_since is not None:
            why = story.champion_reason or ""
            why = why if len(why) <= 160 else why[:159] + "…"
            st.caption(f"since {when(story.champion_since)} by **{story.champion_by}**: {why}")
            link("models", f"Version v{story.champion} in Models", ":material/deployed_code:",
                 model=story.model, version=story.champion)
    with mid:
        if story.live_value is None:
            st.metric(f"Live {story.metric or 'metric'}", "-")
            st.caption(f"{story.labelled} labelled predictions of the champion so far: the live metric needs "
                       "feedback labels (POST /v1/models/NAME/feedback, or `lakeops simulate`).")
        else:
            delta = None if story.gate_value is None else story.live_value - story.gate_value
            st.metric(f"Live {story.metric} ({story.labelled:,} labelled)", num(story.live_value),
                      delta=None if delta is None else f"{delta:+.4g} vs gate {num(story.gate_value)}")
            bound = story.alert_below if story.alert_below is not None else story.alert_above
            if bound is not None:
                side = "below" if story.alert_below is not None else "above"
                st.caption(f"the performance alert opens {side} {num(bound)}")
    with right:
        if story.last_check_at is None:
            st.metric("Last drift check", "none yet")
            st.caption("The scheduler's drift_check job checks every 5 minutes once predictions arrive.")
        else:
            st.metric("Last drift check", "DRIFT" if story.last_check_drifted else "no drift",
                      delta=f"{story.last_check_share:.0%} of features drifted", delta_color="inverse"
                      if story.last_check_drifted else "off", delta_arrow="off")
            st.caption(f"at {when(story.last_check_at)}")
            link("monitoring", "Drift in Monitoring", ":material/monitoring:", model=story.model)
    if story.open_alerts.height:
        for row in story.open_alerts.iter_rows(named=True):
            (st.warning if row["status"] == "acknowledged" else st.error)(
                f"**{row['status']}** since {when(row['opened_at'])}: {row['message']}", icon=":material/notifications:")
        link("monitoring", "Handle the alerts in Monitoring", ":material/notifications:", model=story.model)
    st.markdown("**Latest events**")
    if story.timeline.height:
        st.altair_chart(_timeline_chart(story.timeline), width="stretch")
        table(story.timeline)
    else:
        st.caption("No event yet.")


st.title("lakeops")
try:
    with st.spinner("Reading the lake..."):
        ov = overview(lake=lake())
except LakeopsError as exc:
    show_error(exc)
    st.stop()

st.caption(f"Lake: `{ov.lake_uri}`")
c1, c2, c3 = st.columns(3)
c1.metric("Datasets", ov.datasets)
c2.metric("Runs", ov.runs)
c3.metric("Open alerts", ov.open_alerts, delta="needs attention" if ov.open_alerts else None,
          delta_color="inverse", delta_arrow="off")
if ov.open_alerts:
    with c3:
        link("monitoring", "See the alerts", ":material/notifications:")

if not ov.models:
    empty("No registered model yet.", "Run `lakeops up` to seed the demo, or `lakeops train --register NAME ...`.")
for m in ov.models:
    st.subheader(f"Model `{m.name}`")
    st.caption(f"{m.predictions_recent:,} predictions in the last {ov.recent_hours:g} h, {m.predictions_total:,} in all"
               + (f"; last at {when(m.last_prediction_at)}" if m.last_prediction_at is not None else ""))
    try:
        _story(model_story(m.name, lake=lake(), settings=settings()))
    except LakeopsError as exc:
        show_error(exc)
