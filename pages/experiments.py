"""Experiments: search runs, plot their step metrics, compare them, feature importance and lineage."""

import altair as alt
import polars as pl
import streamlit as st

from core import tracking
from core.errors import LakeopsError
from core.flows.train import feature_importance
from pages._common import lake
from pages._ui import PALETTE, empty, link, show_error, table


def _curves_chart(history: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(history.select("label", "key", "step", "value").to_pandas())
        .mark_line(point=history["step"].n_unique() <= 30)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", title="value", scale=alt.Scale(zero=False)),
            color=alt.Color("label:N", title="run", scale=alt.Scale(scheme=PALETTE), legend=alt.Legend(labelLimit=320)),
            strokeDash=alt.StrokeDash("key:N", title="metric"),
            tooltip=["label", "key", "step", alt.Tooltip("value:Q", format=".4g")],
        )
    )


def _importance_chart(imp: pl.DataFrame, measure: str) -> alt.Chart:
    return (
        alt.Chart(imp.to_pandas())
        .mark_bar()
        .encode(
            x=alt.X(f"{measure}:Q"), y=alt.Y("feature:N", sort="-x"),
            tooltip=["feature", alt.Tooltip("gain:Q", format=".4g"), "split"]
        )
    )


st.title("Experiments")
try:
    exps = tracking.experiments(lake=lake())
except LakeopsError as exc:
    show_error(exc)
    st.stop()
if exps.height == 0:
    empty("No run yet.", "Train one with `lakeops train --dataset churn --target churned`.")
    st.stop()

c1, c2, c3 = st.columns([1, 2, 1])
experiment = c1.selectbox("Experiment", ["(all)", *exps["experiment"].to_list()], key="experiment")
filter_text = c2.text_input(
    "Filter", "", key="filter", placeholder="metrics.auc > 0.8 and params.num_leaves = '31'"
)
order = c3.text_input("Order by", "attributes.started_at desc", key="order")
try:
    runs = tracking.search_runs(
        None if experiment == "(all)" else experiment,
        filter_text or None,
        [order] if order else None,
        500,
        lake=lake(),
    )
except LakeopsError as exc:
    show_error(exc)
    st.stop()
st.caption(f"{runs.height} run(s)")
shown = [c for c in runs.columns if not c.startswith("params.") and c.count(".") <= 1]
table(runs.select(shown))
if runs.height == 0:
    st.stop()

# The distinctive part first: legends and chips cut long labels at the end.
labels = {r: f"{r[-6:]} · {n or '-'}" for r, n in runs.select("run_id", "name").iter_rows()}
wanted = [r for r in st.query_params.get_all("run") if r in labels]
selected = st.multiselect(
    "Runs to look at", list(labels), default=wanted or list(labels)[:2], format_func=labels.get, key="selected"
)
if not selected:
    empty("No run selected.", "Pick one or more runs above.")
    st.stop()
st.query_params["run"] = selected  # the selection lives in the URL, so the view can be shared

tab_curves, tab_compare, tab_importance, tab_lineage = st.tabs(
    ["Metric curves", "Compare", "Feature importance", "Lineage"]
)
with tab_curves:
    history = tracking.metric_history(selected, lake=lake())
    # a curve needs several steps within one run; single values are in Compare
    stepped = history.group_by("run_id", "key").agg(pl.col("step").n_unique().alias("steps")).filter(pl.col("steps") > 1)
    keys = sorted(stepped["key"].unique().to_list())
    if not keys:
        empty("These runs logged no metric over several steps.", "Their single values are in Compare.")
    else:
        default = [k for k in keys if k.startswith("valid.")][:1] or keys[:1]
        chosen = st.multiselect("Metrics", keys, default=default, key="curve_keys")
        multi = stepped.filter(pl.col("key").is_in(chosen)).select("run_id", "key")
        curves = history.join(multi, on=["run_id", "key"]).with_columns(
            pl.col("run_id").replace_strict(labels).alias("label")
        )
        if curves.height:
            st.altair_chart(_curves_chart(curves), width="stretch")
with tab_compare:
    table(tracking.compare_runs(selected, lake=lake()))
with tab_importance:
    run_id = st.selectbox("Run", selected, format_func=labels.get, key="importance_run")
    imp = feature_importance(run_id, lake=lake())
    if imp.height == 0:
        empty("This run logged no feature importance.", "Runs of `lakeops train` write it (model/importance.json).")
    else:
        measure = st.radio("Importance", ["gain", "split"], horizontal=True, key="importance_measure")
        st.altair_chart(_importance_chart(imp, measure), width="stretch")
with tab_lineage:
    for run_id in selected:
        info = tracking.get_run(run_id, lake=lake())
        st.markdown(f"**{labels[run_id]}** — `{info.status}`" + (f": {info.error}" if info.error else ""))
        lineage = info.lineage()
        st.dataframe(pl.DataFrame({"field": list(lineage), "value": list(lineage.values())}), hide_index=True)
        if info.dataset_name:
            link("datasets", f"Dataset {info.dataset_name} v{info.dataset_version}", ":material/dataset:",
                 dataset=info.dataset_name, version=info.dataset_version)
