"""Monitoring: drift heatmap, reference vs current distributions, scores and performance over time, open alerts."""

import json

import altair as alt
import streamlit as st

from core import monitoring, registry
from core.errors import LakeopsError
from core.flows import monitor
from pages._common import lake, settings

st.title("Monitoring")
models = registry.list_models(lake=lake())
models = models.filter(models["champion"].is_not_null()) if models.height else models
if models.height == 0:
    st.info("No model with a champion yet: promote one (`lakeops models promote NAME VERSION --reason ...`).")
    st.stop()
model = st.selectbox("Model", models["model"].to_list(), key="model")

c1, c2 = st.columns(2)
try:
    if c1.button("Run drift check now", key="run_drift"):
        rep = monitor.check_drift(model, lake=lake(), settings=settings())
        if rep.status != "ok":
            st.warning(f"only {rep.window_rows} predictions in the window: no verdict")
        else:
            (st.error if rep.drifted else st.success)(
                f"{'DRIFT' if rep.drifted else 'no drift'}: share {rep.result.share:.2f}; alert {rep.alert or 'none'}"
            )
    if c2.button("Run performance check now", key="run_perf"):
        perf = monitor.check_performance(model, lake=lake(), settings=settings())
        st.info(f"{perf.labelled} of {perf.predictions} predictions labelled; {perf.metric} = {perf.value}; "
                f"degraded: {perf.degraded}")
except LakeopsError as exc:
    st.error(str(exc))

# ---- open alerts with their evidence
st.subheader("Open alerts")
open_alerts = monitoring.alerts(model, lake=lake())
if open_alerts.height == 0:
    st.caption("No open alert.")
for row in open_alerts.iter_rows(named=True):
    with st.expander(f"[{row['severity']}] {row['kind']}: {row['message']}"):
        st.caption(f"opened {row['opened_at']:%Y-%m-%d %H:%M:%S} UTC · {row['fingerprint']}")
        st.json(json.loads(row["payload_json"] or "{}"))

# ---- drift heatmap: feature x check
st.subheader("Drift by feature and window")
hist = monitoring.drift_history(model, last=20, lake=lake())
if hist.height == 0:
    st.caption("No drift report yet: run a check, or let the scheduler's drift job run.")
else:
    verdicts = hist.filter(hist["feature"] == monitoring.DATASET_ROW)
    st.metric("Latest verdict", "DRIFT" if verdicts["drifted"][-1] else "no drift",
              f"{verdicts['statistic'][-1]:.0%} of features drifted (score drift also counts)")
    heat = hist.filter(hist["feature"] != monitoring.DATASET_ROW)
    heat = heat.with_columns(heat["at"].dt.strftime("%m-%d %H:%M:%S").alias("window")).to_pandas()
    st.altair_chart(
        alt.Chart(heat).mark_rect().encode(
            x=alt.X("window:O", title="check (window end)"),
            y=alt.Y("feature:N", sort="ascending"),
            color=alt.Color("drifted:N", scale=alt.Scale(domain=[False, True], range=["#cfe8cf", "#d9534f"])),
            tooltip=["feature", "test", "statistic", "p_value", "threshold", "drifted", "window_rows"],
        ),
        width="stretch",
    )

# ---- reference vs current distribution of one feature
st.subheader("Reference vs current")
try:
    ref = monitoring.reference(model, lake=lake(), settings=settings())
    feature = st.selectbox(
        "Feature", [monitoring.SCORE_ROW, *ref.kinds], key="feature",
        format_func=lambda f: "model score" if f == monitoring.SCORE_ROW else f,
    )
    dist = monitoring.feature_distribution(model, feature, lake=lake(), settings=settings()).to_pandas()
    st.caption(f"reference: {ref.dataset}@v{ref.dataset_version} ({ref.rows} rows); current: the latest window")
    st.altair_chart(
        alt.Chart(dist).mark_bar(opacity=0.55).encode(
            x=alt.X("bin:N", sort=None, title="model score" if feature == monitoring.SCORE_ROW else feature),
            y=alt.Y("share:Q", stack=None),
            color=alt.Color("source:N"), tooltip=["source", "bin", "share"],
        ),
        width="stretch",
    )
except LakeopsError as exc:
    st.error(str(exc))

# ---- scores and performance over time
every = st.selectbox("Time bucket", ["1m", "10m", "1h", "1d"], index=2, key="every")
scores = monitoring.score_over_time(model, every=every, lake=lake())
st.subheader("Score distribution over time")
if scores.height:
    base = alt.Chart(scores.to_pandas()).encode(x=alt.X("bucket:T", title="time"))
    st.altair_chart(
        base.mark_area(opacity=0.3).encode(y=alt.Y("p10:Q", title="score"), y2="p90:Q")
        + base.mark_line().encode(y="p50:Q", color=alt.Color("model_version:N"), tooltip=["bucket", "n", "p50", "mean"]),
        width="stretch",
    )
st.subheader("Performance over time (labelled predictions only)")
perf_time = monitoring.performance_over_time(model, every=every, lake=lake())
if perf_time.height:
    metric = st.selectbox("Metric", sorted(m for m in perf_time["metric"].unique().to_list() if m), key="metric")
    shown = perf_time.filter(perf_time["metric"] == metric).to_pandas()
    st.altair_chart(
        alt.Chart(shown).mark_line(point=True).encode(
            x=alt.X("bucket:T", title="time"), y=alt.Y("value:Q", title=metric),
            color="model_version:N", tooltip=["bucket", "value", "labelled", "predictions", "coverage"],
        ),
        width="stretch",
    )
    st.dataframe(perf_time.filter(perf_time["metric"] == metric).select(
        "bucket", "model_version", "predictions", "labelled", "coverage", "value"), hide_index=True)
