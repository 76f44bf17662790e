"""Datasets: versions over time, the profile of a version, validation reports, quarantine, diffs."""

import json

import altair as alt
import polars as pl
import streamlit as st

from core import datasets
from core.errors import LakeopsError
from core.profiling import histogram_frame, summary_frame
from core.validation import ValidationReport
from pages._common import lake


def _versions_chart(rows: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(rows.select("version", "created_at", "total_rows", "rows", "validation_status").to_pandas())
        .mark_line(point=alt.OverlayMarkDef(size=80, filled=True))
        .encode(
            x=alt.X("created_at:T", title="committed at"),
            y=alt.Y("total_rows:Q", title="rows in version"),
            color=alt.Color("validation_status:N", title="validation",
                            scale=alt.Scale(domain=["passed", "warned", "skipped"], range=["#2ca02c", "#ff7f0e", "#999"])),
            tooltip=["version", "created_at", "rows", "total_rows", "validation_status"],
        )
    )


def _histogram_chart(hist: pl.DataFrame, column: str) -> alt.Chart:
    return (
        alt.Chart(hist.to_pandas())
        .mark_bar()
        .encode(x=alt.X("bin:N", sort=None, title=column), y=alt.Y("count:Q"), tooltip=["bin", "count", "frequency"])
    )


def _psi_chart(cols: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(cols.drop_nulls("psi").to_pandas())
        .mark_bar()
        .encode(x=alt.X("psi:Q", title="PSI (b on a's bins)"), y=alt.Y("column:N", sort="-x"),
                color=alt.condition(alt.datum.psi > 0.25, alt.value("#d62728"), alt.value("#1f77b4")))
    )


st.title("Datasets")
try:
    listed = datasets.list_datasets(lake=lake())
except LakeopsError as exc:
    st.error(str(exc))
    st.stop()
if listed.height == 0:
    st.info("No dataset yet. Ingest one with `lakeops data ingest churn file.csv` or seed the demo with `lakeops up`.")
    st.stop()
st.dataframe(listed, hide_index=True, width="stretch")

name = st.selectbox("Dataset", listed["name"].to_list(), key="dataset")
rows = datasets.versions(name, lake=lake())
st.subheader("Versions")
st.altair_chart(_versions_chart(rows), width="stretch")
st.dataframe(
    rows.select("version", "created_at", "mode", "rows", "total_rows", "validation_status",
                pl.col("content_hash").str.slice(0, 16).alias("hash"), "created_by", "source"),
    hide_index=True, width="stretch",
)

tab_profile, tab_validation, tab_diff, tab_quarantine = st.tabs(["Profile", "Validation", "Diff", "Quarantine"])
with tab_profile:
    version = st.selectbox("Version", rows["version"].to_list(), key="profile_version")
    info = datasets.describe(name, version, lake=lake())
    c1, c2, c3 = st.columns(3)
    c1.metric("Rows", f"{info['total_rows']:,}")
    c2.metric("Validation", info["validation_status"])
    c3.metric("Columns", len(info["profile"].get("columns", {})))
    st.caption(f"Content hash `{info['content_hash']}` · from {info['source'] or '-'} by {info['created_by'] or '-'}")
    st.dataframe(summary_frame(info["profile"]), hide_index=True, width="stretch")
    column = st.selectbox("Column", list(info["profile"].get("columns", {})), key="profile_column")
    hist = histogram_frame(info["profile"], column)
    if hist.height:
        st.altair_chart(_histogram_chart(hist, column), width="stretch")
    else:
        st.caption("No histogram for this column (dates, or no values).")

with tab_validation:
    vv = st.selectbox("Version", rows["version"].to_list(), key="validation_version")
    report = datasets.describe(name, vv, lake=lake())["report"]
    ref = f" against version {report.reference_version}" if report.reference_version is not None else ""
    st.write(f"Validation **{report.status}**{ref}: {len(report.results)} rules, "
             f"{len(report.errors)} errors, {len(report.warnings)} warnings.")
    for r in report.errors:
        st.error(r.line())
    for r in report.warnings:
        st.warning(r.line())
    if report.results:
        failed_red = lambda row: ["background-color: #fde2e1" if not row["passed"] else "" for _ in row]  # noqa: E731
        st.dataframe(report.frame().to_pandas().style.apply(failed_red, axis=1), hide_index=True, width="stretch")

with tab_diff:
    have = sorted(rows["version"].to_list())
    a = st.selectbox("From version", have, index=max(len(have) - 2, 0), key="diff_a")
    b = st.selectbox("To version", have, index=len(have) - 1, key="diff_b")
    try:
        d = datasets.diff(name, a, b, lake=lake())
    except LakeopsError as exc:
        st.error(str(exc))
    else:
        c1, c2, c3 = st.columns(3)
        c1.metric("Rows", f"{d.rows_b:,}", delta=d.rows_b - d.rows_a)
        c2.metric("Rows added", f"{d.added:,}")
        c3.metric("Rows removed", f"{d.removed:,}")
        if d.schema_changes:
            st.dataframe(d.schema_changes, hide_index=True)
        else:
            st.caption("Schema unchanged.")
        if d.columns["psi"].drop_nulls().len():
            st.altair_chart(_psi_chart(d.columns), width="stretch")
        st.dataframe(d.columns, hide_index=True, width="stretch")

with tab_quarantine:
    q = datasets.quarantined(name, lake=lake())
    if q.height == 0:
        st.caption("No quarantined batch.")
    else:
        st.dataframe(q.drop("validation_json"), hide_index=True, width="stretch")
        qid = st.selectbox("Batch", q["quarantine_id"].to_list(), key="quarantine_id")
        for r in ValidationReport.from_dict(json.loads(q.filter(pl.col("quarantine_id") == qid)["validation_json"].item())).errors:
            st.error(r.line())
