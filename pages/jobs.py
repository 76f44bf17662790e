"""Jobs: the scheduler's lease, each job's schedule and last status, recent runs (failures marked), run now."""

import altair as alt
import polars as pl
import streamlit as st

from core.errors import LakeopsError
from core.jobruns import current_holder, history, list_jobs, run_job
from pages._common import lake, settings

_BAD = ("failed", "interrupted", "abandoned")

st.title("Jobs")
try:
    holder = current_holder(lake=lake())
    jobs = list_jobs(lake=lake(), settings=settings())
    runs = history(lake=lake(), limit=200)
except LakeopsError as exc:
    st.error(str(exc))
    st.stop()

if holder is None:
    st.warning("No scheduler holds this lake's lease: jobs run only when started here or with "
               "`lakeops jobs run NAME`. Start one with `lakeops scheduler` (or `lakeops up`).")
else:
    st.success(f"Scheduler `{holder.holder}` holds the lease (epoch {holder.epoch}) since "
               f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC; renewed until {holder.expires_at:%H:%M:%S} UTC.")

st.subheader("Schedule")
st.dataframe(jobs, hide_index=True, width="stretch")

left, right = st.columns([2, 1])
with left:
    name = st.selectbox("Job", jobs["job"].to_list())
with right:
    st.write("")
    run_now = st.button("Run now", type="primary", width="stretch")
if run_now and name:
    with st.spinner(f"Running {name}..."):
        try:
            result = run_job(name, trigger="manual", lake=lake(), settings=settings())
        except LakeopsError as exc:
            st.error(str(exc))
        else:
            if result.status == "finished":
                st.success(f"{name} finished (run {result.job_run_id})")
                st.json(result.outputs)
            else:
                st.error(f"{name} {result.status}: {result.error}")
            runs = history(lake=lake(), limit=200)

failures = runs.filter(pl.col("status").is_in(_BAD))
st.subheader("Recent runs")
c1, c2, c3 = st.columns(3)
c1.metric("Runs shown", runs.height)
c2.metric("Failures", failures.height)
c3.metric("Running now", runs.filter(pl.col("status") == "running").height)
if failures.height:
    last = failures.row(0, named=True)
    st.error(f"Latest failure: **{last['job']}** ({last['status']}, {last['started_at']:%Y-%m-%d %H:%M:%S} UTC): {last['error']}")

if runs.height:
    chart = (
        alt.Chart(runs.select("job", "status", "started_at", "duration_s").to_pandas())
        .mark_circle(size=70)
        .encode(
            x=alt.X("started_at:T", title="started (UTC)"),
            y=alt.Y("job:N", title=None),
            color=alt.Color("status:N", scale=alt.Scale(
                domain=["finished", "running", "failed", "interrupted", "abandoned"],
                range=["#2e7d32", "#1565c0", "#c62828", "#ef6c00", "#6d4c41"])),
            tooltip=["job", "status", "started_at:T", alt.Tooltip("duration_s:Q", format=".2f")],
        )
        .properties(height=max(140, 45 * runs["job"].n_unique()))
    )
    st.altair_chart(chart, width="stretch")

    def _mark(row: "object") -> list[str]:
        bad = getattr(row, "status", None) in _BAD
        return ["background-color: #fde0e0" if bad else "" for _ in row]  # type: ignore[attr-defined]

    table = runs.select("job", "trigger", "status", "started_at", "duration_s", "error", "host", "pid", "job_run_id").to_pandas()
    st.dataframe(table.style.apply(_mark, axis=1), hide_index=True, width="stretch")
else:
    st.info("No job has run on this lake yet.")
