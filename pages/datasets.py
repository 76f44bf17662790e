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
from pages._ui import empty, pick, show_error, table, time_axis


def _versions_chart(rows: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(rows.select("version", "created_at", "total_rows", "rows", "validation_status").to_pandas())
        .mark_line(point=alt.OverlayMarkDef(size=80, filled=True))
        .encode(
            x=time_axis("created_at", "committed", values=rows["created_at"]),
            y=alt.Y("total_rows:Q", title="rows in version"),
            color=alt.Color("validation_status:N", title="validation",
                            scale=alt.Scale(domain=["passed", "warned", "skipped"], range=["#2ca02c", "#ff7f0e", "#999"])),
            tooltip=["version", alt.Tooltip("created_at:T", format="%Y-%m-%d %H:%M:%S"), "rows", "total_rows",
                     "validation_status"],
        )
    )


def _histogram_chart(hist: pl.DataFrame, column: str) -> alt.Chart:
    return (
        alt.Chart(hist.to_pandas())
        .mark_bar()
        .encode(x=alt.X("bin:N", sort=None, title=column), y=alt.Y("count:Q"), tooltip=["bin", "count", "frequency"])
    )


def _psi_chart(cols: pl.DataFrame) -> alt.LayerChart:
    """PSI per column on a fixed scale (0 to at least 0.5), rules at 0.1 (watch) and 0.25 (shifted)."""
    levels = ["stable (< 0.1)", "watch (0.1–0.25)", "shifted (> 0.25)"]
    data = cols.drop_nulls("psi").with_columns(
        pl.when(pl.col("psi") > 0.25).then(pl.lit(levels[2])).when(pl.col("psi") > 0.1).then(pl.lit(levels[1]))
        .otherwise(pl.lit(levels[0])).alias("level"))
    top = max(0.5, float(data["psi"].max() or 0) * 1.1)
    bars = alt.Chart(data.to_pandas()).mark_bar().encode(
        x=alt.X("psi:Q", title="PSI (b on a's bins)", scale=alt.Scale(domain=[0, top])),
        y=alt.Y("column:N", sort="-x", title=None),
        color=alt.Color("level:N", scale=alt.Scale(domain=levels, range=["#1f77b4", "#ff7f0e", "#d62728"])),
        tooltip=["column", alt.Tooltip("psi:Q", format=".4f"), "level"],
    )
    marks = pl.DataFrame({"psi": [0.1, 0.25], "label": ["0.1 watch", "0.25 shifted"]}).to_pandas()
    rules = alt.Chart(marks).mark_rule(strokeDash=[4, 3], color="#555").encode(x="psi:Q")
    text = alt.Chart(marks).mark_text(align="left", dx=3, dy=-4, color="#555").encode(x="psi:Q", text="label:N",
                                                                                       y=alt.value(0))
    return (bars + rules + text).properties(height=max(160, 22 * data.height))


def _id_like(profile: dict, name: str) -> bool:
    """A column that identifies rows (every value distinct, or named *_id): a useless histogram."""
    col = profile.get("columns", {}).get(name, {})
    return name.lower().endswith("id") or (col.get("kind") != "numeric" and col.get("distinct") == col.get("count"))


st.title("Datasets")
try:
    listed = datasets.list_datasets(lake=lake())
except LakeopsError as exc:
    show_error(exc)
    st.stop()
if listed.height == 0:
    empty("No dataset yet.", "Ingest one with `lakeops data ingest churn file.csv` (`lakeops demo export file.csv` "
          "writes one), or seed the demo with `lakeops up`.")
    st.stop()
table(listed)

name = pick("Dataset", listed["name"].to_list(), key="dataset")
rows = datasets.versions(name, lake=lake())
st.subheader("Versions")
st.altair_chart(_versions_chart(rows), width="stretch")
table(rows.select("version", "created_at", "mode", "rows", "total_rows", "validation_status",
                  pl.col("content_hash").str.slice(0, 16).alias("hash"), "created_by", "source"))

tab_profile, tab_validation, tab_diff, tab_quarantine = st.tabs(["Profile", "Validation", "Diff", "Quarantine"])
with tab_profile:
    version = pick("Version", rows["version"].to_list(), key="version")
    info = datasets.describe(name, version, lake=lake())
    c1, c2, c3 = st.columns(3)
    c1.metric("Rows", f"{info['total_rows']:,}")
    c2.metric("Validation", info["validation_status"])
    c3.metric("Columns", len(info["profile"].get("columns", {})))
    st.caption(f"Content hash `{info['content_hash']}` · from {info['source'] or '-'} by {info['created_by'] or '-'}")
    table(summary_frame(info["profile"]))
    columns = list(info["profile"].get("columns", {}))
    useful = [c for c in columns if not _id_like(info["profile"], c)] or columns
    column = st.selectbox("Column", columns, index=columns.index(useful[0]), key="profile_column")
    hist = histogram_frame(info["profile"], column)
    if hist.height:
        st.altair_chart(_histogram_chart(hist, column), width="stretch")
    else:
        st.caption("No histogram for this column (an identifier, a date, or no values).")

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
        table(report.frame(), column_config={"passed": st.column_config.CheckboxColumn("passed")})

with tab_diff:
    have = sorted(rows["version"].to_list())
    a = st.selectbox("From version", have, index=max(len(have) - 2, 0), key="diff_a")
    b = st.selectbox("To version", have, index=len(have) - 1, key="diff_b")
    if a == b:
        empty(f"Version {a} compared with itself shows no change.", "Pick two different versions.")
        d = None
    else:
        try:
            d = datasets.diff(name, a, b, lake=lake())
        except LakeopsError as exc:
            show_error(exc)
            d = None
    if d is not None:
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
        table(d.columns)

with tab_quarantine:
    q = datasets.quarantined(name, lake=lake())
    if q.height == 0:
        st.caption("No quarantined batch.")
    else:
        table(q.drop("validation_json"))
        qid = st.selectbox("Batch", q["quarantine_id"].to_list(), key="quarantine_id")
        for r in ValidationReport.from_dict(json.loads(q.filter(pl.col("quarantine_id") == qid)["validation_json"].item())).errors:
            st.error(r.line())
