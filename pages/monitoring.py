"""Monitoring: alerts with their evidence, per-feature status and data quality, drift heatmap, what moved the score,
multivariate drift, reference vs current, scores and estimated vs realised performance over time."""

import json
from datetime import timedelta

import altair as alt
import polars as pl
import streamlit as st

from core import monitoring, registry
from core.errors import LakeopsError
from core.flows import monitor
from core.ids import utcnow
from pages._common import acting, can, lake, settings
from pages._ui import (
    PALETTE,
    empty,
    link,
    num,
    pick,
    show_error,
    table,
    time_axis,
    time_format,
    when,
    zone_name,
)

_BUCKETS = {"1m": timedelta(minutes=1), "10m": timedelta(minutes=10), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
_DRIFT_COLUMNS = ["feature", "status", "test", "statistic", "threshold", "p_value", "drifted"]
STATUS_COLORS = alt.Scale(domain=["ok", "drift", "no_data", "insufficient"],
                          range=["#cfe8cf", "#d9534f", "#6f42c1", "#c8c8c8"])
_VERDICT = {"drift": "DRIFT", "ok": "no drift", "no_data": "NO DATA", "insufficient": "too few rows"}


# ---------------------------------------------------------------- actions
def _check_buttons(model: str) -> None:
    if not can("admin"):  # checks write reports and alerts: an admin's
        return
    c1, c2 = st.columns(2)
    try:
        if c1.button("Run drift check now", key="run_drift", icon=":material/play_arrow:"):
            with st.spinner("Checking drift..."):
                rep = monitor.check_drift_and_alert(model, lake=lake(), settings=settings())
            if rep.status != "ok":
                st.warning(f"Only {rep.window_rows} predictions in the window: no verdict yet.")
            else:
                verdict = {True: "DRIFT", False: "No drift", None: "NO DATA to compare"}[rep.drifted]
                (st.warning if rep.drifted is not False else st.success)(
                    f"{verdict}: {rep.result.share:.0%} of features drifted (threshold "
                    f"{rep.result.share_threshold:.0%}); alert {rep.alert or 'none'}; "
                    f"data-quality alert {rep.quality_alert or 'none'}")
        if c2.button("Run performance check now", key="run_perf", icon=":material/play_arrow:"):
            with st.spinner("Checking performance..."):
                perf = monitor.check_performance_and_alert(model, lake=lake(), settings=settings())
            est = perf.estimate.estimate if perf.estimate is not None else None
            text = (f"{perf.labelled:,} of {perf.predictions:,} predictions labelled; {perf.metric} {num(perf.value)} "
                    f"vs {num(perf.baseline)} at the {perf.baseline_source}"
                    + (f"; estimated {perf.metric} {num(est.value)} [{num(est.lower)}, {num(est.upper)}]" if est else ""))
            (st.warning if perf.degraded else st.info)(text + ("; DEGRADED" if perf.degraded else ""))
    except LakeopsError as exc:
        show_error(exc)


# ---------------------------------------------------------------- alerts
def _evidence(model: str, row: dict) -> None:
    evidence = json.loads(row["payload_json"] or "{}")
    handled = evidence.get(monitoring.HANDLED_KEY)
    if handled:
        st.caption(f"{handled['action']}d by **{handled['actor']}** at {handled['at'][:19]} UTC: {handled['reason']}")
    version = evidence.get("model_version")
    report = evidence.get("report_id")
    if report:
        rows = monitoring.drift_history(model, last=50, lake=lake()).filter(pl.col("report_id") == report)
        feats = rows.filter(~pl.col("feature").is_in([monitoring.DATASET_ROW, monitoring.MULTIVARIATE_ROW])).sort(
            "drifted", "statistic", descending=True, nulls_last=True)
        win = evidence.get("window", {})
        st.write(f"Drift report `{report[-12:]}`: {win.get('rows', '?')} predictions of v{version} vs "
                 f"{evidence.get('reference', {}).get('dataset')}@v{evidence.get('reference', {}).get('version')}; "
                 f"{evidence.get('share', 0):.0%} of features drifted (threshold {evidence.get('share_threshold', 0):.0%}).")
        if feats.height:
            table(feats.select(_DRIFT_COLUMNS), key=f"evidence_{row['fingerprint']}")
    elif evidence.get("metric"):
        st.write(f"{evidence['metric']} {num(evidence.get('value'))} on {evidence.get('labelled', 0):,} labelled "
                 f"predictions vs {num(evidence.get('baseline'))} at the {evidence.get('baseline_source')} "
                 f"(tolerance {evidence.get('tolerance')}).")
    if version is not None:
        _lineage_links(model, int(version))
    with st.expander("Raw evidence (JSON)", expanded=False):
        st.json(evidence, expanded=False)


def _lineage_links(model: str, version: int) -> None:
    try:
        mv = registry.get_version(model, version, lake=lake())
    except LakeopsError:
        return
    cols = st.columns(3)
    with cols[0]:
        link("models", f"Model {model} v{version}", ":material/deployed_code:", model=model, version=version)
    with cols[1]:
        link("experiments", f"Run {mv.run_id[-8:]}", ":material/science:", run=mv.run_id)
    if mv.dataset_name:
        with cols[2]:
            link("datasets", f"Dataset {mv.dataset_name} v{mv.dataset_version}", ":material/dataset:",
                 dataset=mv.dataset_name, version=mv.dataset_version)


def _handle_alert(row: dict) -> None:
    if not can("admin"):
        return
    fp = row["fingerprint"]
    reason = st.text_input("Reason (required)", key=f"alert_reason_{fp}", placeholder="what you found, what you did")
    c1, c2 = st.columns(2)
    ack = c1.button("Acknowledge", key=f"ack_{fp}", disabled=row["status"] == "acknowledged",
                    help="You own it; the retrain job leaves it to you; checks still resolve it when it clears")
    close = c2.button("Resolve", key=f"resolve_{fp}", help="Closed by you; if the condition persists, a new alert opens")
    if ack or close:
        if not reason.strip():
            st.warning("Write a reason first: it is recorded with the alert.")
            return
        try:
            handle = monitoring.acknowledge_alert if ack else monitoring.close_alert
            with acting():
                done = handle(fp, reason=reason, actor=settings().actor, lake=lake(), settings=settings())
        except LakeopsError as exc:
            show_error(exc)
        else:
            st.success(f"Alert {fp} {done.status}.")
            st.rerun()


def _alerts(model: str) -> None:
    st.subheader("Alerts")
    current = monitoring.alerts(model, status=None, lake=lake()).filter(pl.col("status").is_in(["open", "acknowledged"]))
    if current.height == 0:
        st.success("No open alert: the last checks found nothing to act on.", icon=":material/check_circle:")
    for row in current.iter_rows(named=True):
        icon = ":material/notifications_active:" if row["status"] == "open" else ":material/notifications_paused:"
        title = row["message"] if len(row["message"]) <= 200 else row["message"][:199] + "…"
        with st.expander(f"{row['status'].upper()} · {row['kind']} · {title}", expanded=True, icon=icon):
            st.write(row["message"])
            st.caption(f"since {when(row['opened_at'])} · severity {row['severity']} · `{row['fingerprint']}`")
            _evidence(model, row)
            _handle_alert(row)


# ---------------------------------------------------------------- drift
def _verdict(hist: pl.DataFrame) -> None:
    verdicts = hist.filter(pl.col("feature") == monitoring.DATASET_ROW)
    last = verdicts.row(-1, named=True)
    share = last["statistic"]
    warn = last["status"] in ("drift", "no_data")
    st.metric("Latest verdict", _VERDICT.get(last["status"], last["status"]),
              delta="no feature could be compared" if share is None or share != share
              else f"{share:.0%} of compared features drifted (score and multivariate drift also count)",
              delta_color="red" if warn else "off", delta_arrow="off", border=True)
    st.caption(f"check at {when(last['at'])} on {last['window_rows']:,} predictions "
               f"({when(last['window_start'])} to {when(last['window_end'])})")


def _feature_status(model: str) -> None:
    status = monitoring.feature_status(model, lake=lake())
    counts = status.group_by("status").len().sort("status")
    st.caption("Latest check: " + ", ".join(f"{r['len']} {r['status']}" for r in counts.iter_rows(named=True))
               + " (no_data: no usable value in the window, never 'no drift'; expected_drift features are "
                 "reported, not counted)")
    table(status, key="feature_status")


def _heatmap(hist: pl.DataFrame) -> alt.Chart:
    heat = hist.filter(~pl.col("feature").is_in([monitoring.DATASET_ROW, monitoring.MULTIVARIATE_ROW])).to_pandas()
    return (
        alt.Chart(heat).mark_rect().encode(
            x=alt.X("at:O", title=f"check ({zone_name()})",
                    axis=alt.Axis(labelExpr=f"timeFormat(datum.value, '{time_format(hist['at'])}')")),
            y=alt.Y("feature:N", sort="ascending"),
            color=alt.Color("status:N", scale=STATUS_COLORS),
            tooltip=["feature", "status", "test", alt.Tooltip("statistic:Q", format=".4g"),
                     alt.Tooltip("p_value:Q", format=".3g"), "threshold", "window_rows"],
        )
    )


def _attribution(model: str, hist: pl.DataFrame) -> None:
    st.subheader("What moved the score")
    verdicts = hist.filter(pl.col("feature") == monitoring.DATASET_ROW)
    checks = verdicts.filter(pl.col("status") != "insufficient").sort("at", descending=True)
    if checks.height == 0:
        empty("No check with enough rows yet.", "It appears after a drift check on a full window.")
        return
    chosen = st.selectbox("Check", checks["report_id"].to_list(), key="attribution_check",
                          format_func=lambda r: when(checks.filter(pl.col("report_id") == r)["at"][0], seconds=True))
    att = monitoring.attribution_of(model, report_id=chosen, lake=lake())
    if att.height == 0:
        empty("This check has no attribution.", "Checks record it when the champion's holdout is available.")
        return
    st.caption(f"mean raw-score shift {att['score_shift'][0]:+.4f} (log-odds) against the holdout; each bar is "
               "a feature's shift of mean contribution (LightGBM pred_contrib); the bars add up to the shift")
    st.altair_chart(
        alt.Chart(att.to_pandas()).mark_bar().encode(
            x=alt.X("shift:Q", title="shift of mean contribution"), y=alt.Y("feature:N", sort="-x"),
            color=alt.condition("datum.shift > 0", alt.value("#d9534f"), alt.value("#337ab7")),
            tooltip=["feature", alt.Tooltip("shift:Q", format=".4g"), alt.Tooltip("share:Q", format=".1%"),
                     alt.Tooltip("reference_mean:Q", format=".4g"), alt.Tooltip("current_mean:Q", format=".4g")],
        ),
        width="stretch",
    )


def _multivariate(model: str) -> None:
    st.subheader("Multivariate drift (domain classifier)")
    mv = monitoring.multivariate_over_time(model, lake=lake())
    if mv.height == 0:
        empty("No multivariate check yet.", "Drift checks on a full window record the domain classifier's AUC.")
        return
    base = alt.Chart(mv.to_pandas()).encode(x=time_axis("at", "check", values=mv["at"]))
    st.altair_chart(
        base.mark_line(point=True).encode(
            y=alt.Y("auc:Q", title="cross-validated AUC", scale=alt.Scale(domain=[0.4, 1])),
            tooltip=[alt.Tooltip("at:T", format="%Y-%m-%d %H:%M:%S"), alt.Tooltip("auc:Q", format=".4g"),
                     alt.Tooltip("threshold:Q", format=".4g"), "drifted", "top", "window_rows"])
        + base.mark_line(strokeDash=[4, 4], color="gray").encode(y="threshold:Q"),
        width="stretch",
    )


def _reference_vs_current(model: str, hist: pl.DataFrame) -> None:
    st.subheader("Reference vs current")
    try:
        ref = monitoring.reference(model, lake=lake(), settings=settings())
        feature = pick("Feature", [monitoring.SCORE_ROW, *ref.kinds], key="feature",
                       format_func=lambda f: "model score" if f == monitoring.SCORE_ROW else f)
        dist = monitoring.feature_distribution(model, feature, lake=lake(), settings=settings())
    except LakeopsError as exc:
        show_error(exc)
        return
    shown = "model score" if feature == monitoring.SCORE_ROW else feature
    last = hist.filter(pl.col("feature") == feature).tail(1) if hist.height else hist
    if last.height:
        r = last.row(0, named=True)
        verdict = {"drift": "drifted", "ok": "not drifted", "no_data": "no usable data",
                   "insufficient": "too few values"}.get(r.get("status") or "", "not compared")
        pv = f", p-value {num(r['p_value'])}" if r["p_value"] is not None else ""
        st.write(f"**{shown}**: {r['test']} {num(r['statistic'])}{pv} (threshold {num(r['threshold'])}) → **{verdict}** "
                 f"at the last check; current = its window of {r['window_rows']:,} predictions, "
                 f"{when(r['window_start'])} to {when(r['window_end'])}.")
    st.caption(f"reference: {ref.dataset}@v{ref.dataset_version} ({ref.mode}, {ref.rows:,} rows; scores: "
               f"{ref.holdout_rows:,} holdout rows)")
    chart = alt.Chart(dist.to_pandas()).mark_bar().encode(
        x=alt.X("bin:N", sort=None, title=shown), xOffset="source:N", y=alt.Y("share:Q", title="share", axis=alt.Axis(format="%")),
        color=alt.Color("source:N", scale=alt.Scale(domain=["reference", "current"], range=["#9e9e9e", "#e6550d"])),
        tooltip=["source", "bin", alt.Tooltip("share:Q", format=".1%")],
    )
    st.altair_chart(chart, width="stretch")


# ---------------------------------------------------------------- over time
def _auto_bucket(model: str) -> str:
    """The finest bucket that keeps the span under ~60 buckets."""
    fine = monitoring.score_over_time(model, every="1m", lake=lake())
    if fine.height == 0:
        return "1h"
    span = fine["bucket"].max() - fine["bucket"].min()
    return next((k for k, width in _BUCKETS.items() if span / width <= 60), "1d")


def _segments(frame: pl.DataFrame, every: str) -> pl.DataFrame:
    """Number each run of consecutive buckets per version, so lines break at gaps; mark lone buckets."""
    width = _BUCKETS[every]
    frame = frame.sort("model_version", "bucket").with_columns(
        ((pl.col("bucket").diff() != width).fill_null(True).cum_sum().over("model_version")).alias("segment"))
    return frame.with_columns(
        pl.format("v{}", "model_version").alias("version"),
        pl.format("v{}-{}", "model_version", "segment").alias("run"),
        (pl.len().over("model_version", "segment") == 1).alias("alone"),
    )


def _promotion_rules(model: str) -> alt.Chart | None:
    hist = registry.history(model, "champion", lake=lake()).filter(pl.col("applied"))
    if hist.height == 0:
        return None
    rules = hist.select("at", pl.format("{} v{}", "action", "version").alias("label")).to_pandas()
    base = alt.Chart(rules).encode(x="at:T")
    return base.mark_rule(strokeDash=[4, 3], color="#555") + base.mark_text(align="left", dx=3, dy=-6, color="#555").encode(
        text="label:N", y=alt.value(8))


def _score_chart(model: str, scores: pl.DataFrame, every: str) -> alt.LayerChart:
    data = _segments(scores, every).to_pandas()
    color = alt.Color("version:N", title="version", scale=alt.Scale(scheme=PALETTE))
    base = alt.Chart(data).encode(x=time_axis("bucket", values=scores["bucket"]), color=color, detail="run:N")
    tip = [alt.Tooltip("bucket:T", format="%Y-%m-%d %H:%M"), "version", "n",
           alt.Tooltip("p10:Q", format=".3f"), alt.Tooltip("p50:Q", format=".3f"), alt.Tooltip("p90:Q", format=".3f")]
    layers = [
        base.mark_area(opacity=0.2).encode(y=alt.Y("p10:Q", title="score (p10–p90, median)"), y2="p90:Q"),
        base.mark_line().encode(y="p50:Q", tooltip=tip),
        base.transform_filter("datum.alone").mark_rule(strokeWidth=2).encode(y="p10:Q", y2="p90:Q"),
        base.transform_filter("datum.alone").mark_point(filled=True, size=60).encode(y="p50:Q", tooltip=tip),
    ]
    rules = _promotion_rules(model)
    return alt.layer(*layers, *([rules] if rules is not None else [])).properties(height=300)


def _performance_chart(frame: pl.DataFrame, every: str, metric: str) -> alt.Chart:
    data = _segments(frame, every).to_pandas()
    return alt.Chart(data).mark_line(point=True).encode(
        x=time_axis("bucket", values=frame["bucket"]), y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("version:N", scale=alt.Scale(scheme=PALETTE)), detail="run:N",
        tooltip=[alt.Tooltip("bucket:T", format="%Y-%m-%d %H:%M"), "version", alt.Tooltip("value:Q", format=".4g"),
                 "labelled", "predictions", alt.Tooltip("coverage:Q", format=".0%")],
    ).properties(height=260)


def _estimates(model: str, every: str) -> None:
    st.subheader("Estimated vs realised performance")
    try:
        est = monitoring.estimated_performance_over_time(model, every=every, lake=lake(), settings=settings())
    except LakeopsError as exc:
        show_error(exc)
        return
    if est.height == 0:
        empty("No estimate yet.", "The performance check estimates the metric from the scores (CBPE) before labels arrive.")
        return
    st.caption(f"{est['metric'][0]} estimated from the calibrated scores (CBPE) with its ± 3 sampling-error band; "
               "dots: realised on the labels that arrived; label coverage in the tooltip")
    base = alt.Chart(est.to_pandas()).encode(x=time_axis("bucket", values=est["bucket"]))
    tip = [alt.Tooltip("bucket:T", format="%Y-%m-%d %H:%M"), alt.Tooltip("estimate:Q", format=".4g"),
           alt.Tooltip("lower:Q", format=".4g"), alt.Tooltip("upper:Q", format=".4g"),
           alt.Tooltip("realised:Q", format=".4g"), "labelled", "predictions", alt.Tooltip("coverage:Q", format=".0%")]
    st.altair_chart(
        base.mark_area(opacity=0.25).encode(y=alt.Y("lower:Q", title=est["metric"][0]), y2="upper:Q")
        + base.mark_line().encode(y="estimate:Q", tooltip=tip)
        + base.mark_point(filled=True, color="black").encode(y="realised:Q", tooltip=tip),
        width="stretch",
    )
    table(est.select("bucket", "predictions", "labelled", "coverage", "estimate", "lower", "upper", "realised"),
          key="estimates")


def _over_time(model: str) -> None:
    auto = _auto_bucket(model)
    every = st.selectbox("Time bucket", list(_BUCKETS), index=list(_BUCKETS).index(auto), key="every",
                         help=f"default: {auto}, the finest that keeps the chart readable")
    st.subheader("Score distribution over time")
    scores = monitoring.score_over_time(model, every=every, lake=lake())
    if scores.height == 0:
        empty("No prediction logged yet.", "Send traffic to the API (`lakeops simulate`) and it appears here.")
    else:
        st.altair_chart(_score_chart(model, scores, every), width="stretch")
        st.caption("One band and median line per model version; lines break where no prediction arrived; "
                   "a lone bucket is a point with its p10–p90 range; dashed rules mark champion changes.")
    _estimates(model, every)
    st.subheader("Performance over time (labelled predictions only)")
    perf = monitoring.performance_over_time(model, every=every, lake=lake(), settings=settings())
    perf = perf.filter(pl.col("metric").is_not_null())
    if perf.height == 0:
        empty("No labelled prediction yet.", "Labels arrive through POST /v1/models/NAME/feedback "
              "(`lakeops simulate` sends them late, as in real life).")
        return
    metric = st.selectbox("Metric", sorted(perf["metric"].unique().to_list()), key="metric")
    shown = perf.filter(pl.col("metric") == metric)
    st.altair_chart(_performance_chart(shown, every, metric), width="stretch")
    table(shown.select("bucket", "model_version", "predictions", "labelled", "coverage", "value"))


# ---------------------------------------------------------------- page
st.title("Monitoring")
models = registry.list_models(lake=lake())
models = models.filter(pl.col("champion").is_not_null()) if models.height else models
if models.height == 0:
    st.info("No model with a champion yet: promote one (`lakeops models promote NAME VERSION --reason ...`).")
    st.stop()
model = pick("Model", models["model"].to_list(), key="model")
_check_buttons(model)
_alerts(model)


@st.fragment(run_every=timedelta(seconds=30))
def _live() -> None:
    st.subheader("Drift by feature and check")
    hist = monitoring.drift_history(model, last=20, lake=lake())
    if hist.height == 0:
        empty("No drift check yet.", "Run one above, or let the scheduler's drift_check job run (every 5 minutes).")
    else:
        _verdict(hist)
        _feature_status(model)
        st.altair_chart(_heatmap(hist), width="stretch")
        _attribution(model, hist)
        _multivariate(model)
    _reference_vs_current(model, hist)
    _over_time(model)
    st.caption(f"Refreshes every 30 s · last at {when(utcnow(), seconds=True)}")


_live()
