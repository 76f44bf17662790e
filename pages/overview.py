"""Overview: each model's champion, its metrics and recent traffic; lake-wide counts."""

import streamlit as st

from core.errors import LakeopsError
from core.overview import overview
from pages._common import lake

st.title("lakeops")
try:
    ov = overview(lake=lake())
except LakeopsError as exc:
    st.error(str(exc))
    st.stop()

st.caption(f"Lake: `{ov.lake_uri}`")
c1, c2, c3 = st.columns(3)
c1.metric("Datasets", ov.datasets)
c2.metric("Runs", ov.runs)
c3.metric("Open alerts", ov.open_alerts)

if not ov.models:
    st.info("No registered model yet. Run `lakeops up` to seed the demo, or `lakeops train` + `lakeops models register`.")
for m in ov.models:
    st.subheader(f"Model `{m.name}`")
    left, right = st.columns([1, 2])
    with left:
        st.metric("Champion version", f"v{m.champion_version}" if m.champion_version is not None else "none")
        st.metric(f"Predictions (last {ov.recent_hours:g} h)", m.predictions_recent)
        st.metric("Predictions (all time)", m.predictions_total)
        if m.last_prediction_at is not None:
            st.caption(f"Last prediction at {m.last_prediction_at:%Y-%m-%d %H:%M:%S} UTC")
        if m.aliases:
            st.write("Aliases: " + ", ".join(f"`{a}` → v{v}" for a, v in sorted(m.aliases.items())))
    with right:
        if m.metrics:
            st.write("Champion metrics (holdout at training time)")
            st.table({k: [round(v, 4)] for k, v in sorted(m.metrics.items())})
