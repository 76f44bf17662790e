"""Monitoring: per-feature status and data quality, drift heatmap, what moved the score, multivariate drift,
estimated vs realised performance, distributions, scores over time, open alerts."""

import json

import altair as alt
import streamlit as st

from core import monitoring, registry
from core.errors import LakeopsError
from core.flows import monitor
from pages._common import lake, settings

STATUS_COLORS = alt.Scale(domain=["ok", "drift", "no_data", "insufficient"],
                          range=["#cfe8cf", "#d9534f", "#6f42c1", "#c8c8c8"])

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
            verdict = {True: "DRIFT", False: "no drift", None: "NO DATA to compare"}[rep.drifted]
            (st.error if rep.drifted is not False else st.success)(
                f"{verdict}: share {rep.result.share:.2f}; alert {rep.alert or 'none'}; "
                f"data-quality alert {rep.quality_alert or 'none'}"
            )
    if c2.button("Run performance check now", key="run_perf"):
        perf = monitor.check_performance(model, lake=lake(), settings=settings())
        est = perf.estimate.estimate if perf.estimate is not None else None
        st.info(f"{perf.labelled} of {perf.predictions} predictions labelled; {perf.metric} = {perf.value}; "
                f"degraded: {perf.degraded}" + (f"; estimated {perf.metric} {est.value:.3f} "
                                                f"[{est.lower:.3f}, {est.upper:.3f}]" if est else ""))
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

# ---- latest check: per-feature status and data quality; heatmap of statuses over checks
st.subheader("Drift by feature and window")
hist = monitoring.drift_history(model, last=20, lake=lake())
if hist.height == 0:
    st.caption("No drift report yet: run a check, or let the scheduler's drift job run.")
else:
    verdicts = hist.filter(hist["feature"] == monitoring.DATASET_ROW)
    last = verdicts.row(-1, named=True)
    label = {"drift": "DRIFT", "ok": "no drift", "no_data": "NO DATA", "insufficient": "too few rows"}
    st.metric("Latest verdict", label.get(last["status"], last["status"]),
              "no feature could be compared" if last["statistic"] is None or last["statistic"] != last["statistic"]
              else f"{last['statistic']:.0%} of compared features drifted (score and multivariate drift also count)")
    status = monitoring.feature_status(model, lake=lake())
    counts = status.group_by("status").len().sort("status")
    st.caption("Latest check: " + ", ".join(f"{r['len']} {r['status']}" for r in counts.iter_rows(named=True))
               + " (no_data: no usable value in the window, never 'no drift'; expected_drift features are "
                 "reported, not counted)")
    st.dataframe(status, hide_index=True, key="feature_status")
    heat = hist.filter(~hist["feature"].is_in([monitoring.DATASET_ROW, monitoring.MULTIVARIATE_ROW]))
    heat = heat.with_columns(heat["at"].dt.strftime("%m-%d %H:%M:%S").alias("window")).to_pandas()
    st.altair_chart(
        alt.Chart(heat).mark_rect().encode(
            x=alt.X("window:O", title="check (window end)"),
            y=alt.Y("feature:N", sort="ascending"),
            color=alt.Color("status:N", scale=STATUS_COLORS),
            tooltip=["feature", "status", "test", "statistic", "p_value", "threshold", "window_rows"],
        ),
        width="stretch",
    )

    # ---- what moved the score: attribution of one check
    st.subheader("What moved the score")
    checks = verdicts.filter(verdicts["status"] != "insufficient").sort("at", descending=True)
    if checks.height:
        chosen = st.selectbox("Check", checks["report_id"].to_list(), key="attribution_check",
                              format_func=lambda r: f"{checks.filter(checks['report_id'] == r)['at'][0]:%m-%d %H:%M:%S}")
        att = monitoring.attribution_of(model, report_id=chosen, lake=lake())
        if att.height:
            st.caption(f"mean raw-score shift {att['score_shift'][0]:+.4f} (log-odds) against the holdout; each bar is "
                       "a feature's shift of mean contribution (LightGBM pred_contrib); the bars add up to the shift")
            st.altair_chart(
                alt.Chart(att.to_pandas()).mark_bar().encode(
                    x=alt.X("shift:Q", title="shift of mean contribution"), y=alt.Y("feature:N", sort="-x"),
                    color=alt.condition("datum.shift > 0", alt.value("#d9534f"), alt.value("#337ab7")),
                    tooltip=["feature", "shift", "share", "reference_mean", "current_mean"],
                ),
                width="stretch",
            )

    # ---- multivariate drift over time
    st.subheader("Multivariate drift (domain classifier)")
    mv = monitoring.multivariate_over_time(model, lake=lake())
    if mv.height:
        base = alt.Chart(mv.to_pandas()).encode(x=alt.X("at:T", title="check"))
        st.altair_chart(
            base.mark_line(point=True).encode(y=alt.Y("auc:Q", title="cross-validated AUC", scale=alt.Scale(domain=[0.4, 1])),
                                              tooltip=["at", "auc", "threshold", "drifted", "top", "window_rows"])
            + base.mark_line(strokeDash=[4, 4], color="gray").encode(y="threshold:Q"),
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
    st.caption(f"reference: {ref.dataset}@v{ref.dataset_version} ({ref.mode}, {ref.rows} rows; scores: "
               f"{ref.holdout_rows} holdout rows); current: the latest window")
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

# ---- scores, estimated and realised performance over time
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
st.subheader("Estimated vs realised performance")
try:
    est = monitoring.estimated_performance_over_time(model, every=every, lake=lake(), settings=settings())
except LakeopsError as exc:
    est = None
    st.error(str(exc))
if est is not None and est.height:
    st.caption(f"{est['metric'][0]} estimated from the calibrated scores (CBPE) with its ± 3 sampling-error band; "
               "dots: realised on the labels that arrived; label coverage in the tooltip")
    base = alt.Chart(est.to_pandas()).encode(x=alt.X("bucket:T", title="time"))
    tip = ["bucket", "estimate", "lower", "upper", "realised", "labelled", "predictions", "coverage"]
    st.altair_chart(
        base.mark_area(opacity=0.25).encode(y=alt.Y("lower:Q", title=est["metric"][0]), y2="upper:Q")
        + base.mark_line().encode(y="estimate:Q", tooltip=tip)
        + base.mark_point(filled=True, color="black").encode(y="realised:Q", tooltip=tip),
        width="stretch",
    )
    st.dataframe(est.select("bucket", "predictions", "labelled", "coverage", "estimate", "lower", "upper", "realised"),
                 hide_index=True, key="estimates")
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
