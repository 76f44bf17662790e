"""Jobs: the scheduler's lease and schedule, recent runs with their outcome (filtered), and "run now".

A job that can move a model alias (retrain) runs only after a dialog with a reason, who runs it,
and a confirmation; every run from here is recorded under that person's name, the scheduler's
under ``scheduler:<job>``.
"""

import json
from datetime import timedelta

import altair as alt
import polars as pl
import streamlit as st

from core.errors import LakeopsError
from core.flows.manual import moves_aliases, outcome, run_by_hand, scheduler_notes
from core.ids import utcnow
from core.jobruns import JobRunResult, current_holder, history, list_jobs
from pages._common import lake, settings
from pages._ui import empty, kv, pick, show_error, table, time_axis, when

_BAD = ("failed", "interrupted", "abandoned")
_STATUS_COLORS = (["finished", "running", "failed", "interrupted", "abandoned"],
                  ["#2e7d32", "#1565c0", "#c62828", "#ef6c00", "#6d4c41"])


@st.cache_data(ttl=600, show_spinner=False)
def _history(uri: str, table_version: int) -> pl.DataFrame:
    """Every execution with its outcome line; recomputed only when ``job_runs`` has a new commit."""
    runs = history(lake=lake())
    outcomes = [outcome(j, o, e) for j, o, e in runs.select("job", "outputs_json", "error").iter_rows()]
    return runs.with_columns(pl.Series("outcome", outcomes, dtype=pl.String))


def _all_runs() -> pl.DataFrame:
    return _history(lake().uri, lake().latest_version_hint("job_runs"))


@st.cache_data(ttl=10, show_spinner=False)
def _schedule(uri: str, runs_version: int, leases_version: int) -> pl.DataFrame:
    """The schedule with next and last runs; recomputed on a new run or lease commit, or after 10 s."""
    return list_jobs(lake=lake(), settings=settings())


def _flatten(outputs: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for k, v in outputs.items():
        if isinstance(v, dict):
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v if not isinstance(v, list) else ", ".join(map(str, v))
    return flat


def _show_result(result: JobRunResult) -> None:
    if result.status == "finished":
        st.success(f"{result.job} finished: {outcome(result.job, json.dumps(result.outputs))}")
        with st.expander("Outputs", expanded=False):
            table(kv(_flatten(result.outputs)))
    else:
        st.error(f"{result.job} {result.status}: {result.error}")


def _close_dialog() -> None:
    st.session_state.pop("jobs_dialog", None)


@st.dialog("Run a job that can change production", width="large", on_dismiss=_close_dialog)
def _confirm(name: str) -> None:
    st.write(f"**{name}** may register a new version and, when it passes the gate and the policy allows, make it "
             "the champion the API serves.")
    reason = st.text_area("Reason (required, recorded in the audit trail)", key="job_reason")
    who = st.text_input("Who (recorded as the actor)", value=settings().actor, key="job_actor")
    sure = st.checkbox("I understand this can change what production serves", key="job_sure")
    left, right = st.columns(2)
    if right.button("Cancel", key="job_cancel", width="stretch"):
        _close_dialog()
        st.rerun()
    if left.button("Run", type="primary", key="job_confirm", width="stretch",
                   disabled=not (reason.strip() and who.strip() and sure)):
        _run(name, who, reason)


def _run(name: str, who: str, reason: str | None) -> None:
    with st.status(f"Running {name}...", expanded=False) as status:
        try:
            result = run_by_hand(name, actor=who, reason=reason, lake=lake(), settings=settings())
        except LakeopsError as exc:
            status.update(label=f"{name} refused", state="error")
            show_error(exc)
            return
        status.update(label=f"{name} {result.status}", state="complete" if result.status == "finished" else "error")
    _close_dialog()
    st.session_state["jobs_result"] = result
    st.rerun()


def _run_now(jobs: pl.DataFrame) -> None:
    left, right = st.columns([2, 1])
    name = pick("Job", jobs["job"].to_list(), key="job", container=left)
    right.write("")
    if right.button("Run now…" if moves_aliases(name) else "Run now", type="primary", width="stretch", key="run_now"):
        if moves_aliases(name):
            st.session_state["jobs_dialog"] = name
        else:
            _run(name, settings().actor, None)
    if st.session_state.get("jobs_dialog"):
        _confirm(st.session_state["jobs_dialog"])
    if "jobs_result" in st.session_state:
        _show_result(st.session_state.pop("jobs_result"))


def _chart(runs: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(runs.select("job", "status", "started_at", "duration_s", "outcome").to_pandas())
        .mark_circle(size=70)
        .encode(
            x=time_axis("started_at", "started", values=runs["started_at"]),
            y=alt.Y("job:N", title=None),
            color=alt.Color("status:N", scale=alt.Scale(domain=_STATUS_COLORS[0], range=_STATUS_COLORS[1])),
            tooltip=["job", "status", alt.Tooltip("started_at:T", format="%Y-%m-%d %H:%M:%S"),
                     alt.Tooltip("duration_s:Q", format=".2f"), "outcome"],
        )
        .properties(height=max(140, 45 * runs["job"].n_unique()))
    )


@st.fragment(run_every=timedelta(seconds=15))
def _recent(job_names: list[str]) -> None:
    runs = _all_runs()
    st.subheader("Recent runs")
    c1, c2 = st.columns(2)
    picked_jobs = c1.multiselect("Jobs", job_names, key="filter_jobs", placeholder="all jobs")
    picked_status = c2.multiselect("Status", _STATUS_COLORS[0], key="filter_status", placeholder="any status")
    shown = runs
    if picked_jobs:
        shown = shown.filter(pl.col("job").is_in(picked_jobs))
    if picked_status:
        shown = shown.filter(pl.col("status").is_in(picked_status))
    failures = shown.filter(pl.col("status").is_in(_BAD))
    m1, m2, m3 = st.columns(3)
    m1.metric("Runs", f"{shown.height:,}")
    m2.metric("Failures", f"{failures.height:,}", delta="see below" if failures.height else None,
              delta_color="red", delta_arrow="off")
    m3.metric("Running now", shown.filter(pl.col("status") == "running").height)
    if failures.height:
        last = failures.row(0, named=True)
        st.error(f"Latest failure: **{last['job']}** ({last['status']}, {when(last['started_at'], seconds=True)}): "
                 f"{last['error']}")
    if shown.height == 0:
        empty("No job run matches." if runs.height else "No job has run on this lake yet.",
              "Start the scheduler (`lakeops scheduler` or `lakeops up`), or run one above.")
        return
    recent = shown.head(500)
    st.altair_chart(_chart(recent), width="stretch")
    table(recent.select("job", "trigger", "status", "outcome", "started_at", "duration_s", "host", "pid", "job_run_id"),
          column_config={"duration_s": st.column_config.NumberColumn("duration (s)", format="%.2f")})
    st.caption(f"Showing the latest {recent.height:,} of {shown.height:,} · refreshes every 15 s · "
               f"{when(utcnow(), seconds=True)}")


st.title("Jobs")
try:
    holder = current_holder(lake=lake())
    jobs = _schedule(lake().uri, lake().latest_version_hint("job_runs"), lake().latest_version_hint("leases"))
except LakeopsError as exc:
    show_error(exc)
    st.stop()

if holder is None:
    st.warning("No scheduler holds this lake's lease: jobs run only when started here or with "
               "`lakeops jobs run NAME`. Start one with `lakeops scheduler` (or `lakeops up`).")
else:
    st.success(f"Scheduler `{holder.holder}` holds the lease (epoch {holder.epoch}) since "
               f"{when(holder.acquired_at, seconds=True)}; renewed until {when(holder.expires_at, seconds=True)}.")
    for note in scheduler_notes(holder, settings()):
        st.warning(note)

st.subheader("Schedule")
table(jobs)
_run_now(jobs)
_recent(jobs["job"].to_list())
