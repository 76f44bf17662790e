"""Models: versions with status and metrics, aliases, gate reports, deployment history, actions."""

import altair as alt
import pandas as pd
import streamlit as st

from core import registry
from core.errors import LakeopsError
from core.flows import promote
from pages._common import lake, settings

st.title("Models")
models = registry.list_models(lake=lake())
if models.height == 0:
    st.info("No registered model yet: `lakeops train ...` then `lakeops models register NAME RUN_ID`.")
    st.stop()

model = st.selectbox("Model", models["model"].to_list(), key="model")
all_versions = registry.versions(model, lake=lake())["version"].to_list()
version = st.selectbox("Version", all_versions[::-1], key="version")

# ---- actions: the same core.flows.promote functions as the CLI; every change needs a reason
with st.expander("Actions", expanded=True):
    reason = st.text_input("Reason (required, recorded in the audit trail)", key="reason")
    force = st.checkbox("Force promotion past a failed gate (recorded as forced)", key="force")
    cols = st.columns(5)
    clicked = {
        name: col.button(name, key=f"btn_{name.lower().replace(' ', '_')}")
        for name, col in zip(["Evaluate", "Approve", "Reject", "Promote", "Roll back"], cols, strict=True)
    }
    actor = settings().actor
    try:
        if clicked["Evaluate"]:
            rep = promote.evaluate(model, version, actor=actor, lake=lake(), settings=settings())
            (st.success if rep.passed else st.warning)(rep.summary())
        if clicked["Approve"]:
            promote.approve(model, version, reason=reason, actor=actor, lake=lake(), settings=settings())
            st.success(f"approved v{version}")
        if clicked["Reject"]:
            promote.reject(model, version, reason=reason, actor=actor, lake=lake(), settings=settings())
            st.success(f"rejected v{version}")
        if clicked["Promote"]:
            ch = promote.promote(
                model, version, reason=reason, actor=actor, force=force, lake=lake(), settings=settings()
            )
            st.success(f"champion: v{ch.previous_version} -> v{ch.version}")
        if clicked["Roll back"]:
            ch = promote.rollback(model, reason=reason, actor=actor, lake=lake(), settings=settings())
            st.success(f"rolled back champion: v{ch.previous_version} -> v{ch.version}")
    except LakeopsError as exc:
        st.error(str(exc))

# ---- state (read after any action above, so it is current)
versions = registry.versions(model, lake=lake())
amap = registry.aliases(model, lake=lake())
st.subheader("Aliases")
if amap:
    for col, (name, v) in zip(st.columns(max(1, len(amap))), sorted(amap.items()), strict=False):
        col.metric(name, f"v{v}")
else:
    st.caption("No alias yet: evaluate a version and promote it.")

st.subheader("Versions")
st.dataframe(versions.to_pandas(), hide_index=True)

st.subheader(f"Gate report of v{version}")
report = promote.latest_gate(model, version, lake=lake())
if report is None:
    st.caption("Not evaluated yet.")
else:
    (st.success if report.passed else st.error)(report.summary())
    checks = pd.DataFrame(
        [
            {
                "check": c.name,
                "value": str(c.value),
                "threshold": str(c.threshold),
                "passed": c.passed,
                "detail": c.detail,
            }
            for c in report.checks
        ]
    )

    def _highlight(row: pd.Series) -> list[str]:
        return ["background-color: #f8d7da" if not row["passed"] else ""] * len(row)

    st.dataframe(checks.style.apply(_highlight, axis=1), hide_index=True)


def _timeline(frame: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(frame).encode(
        x=alt.X("at:T", title="time"),
        y=alt.Y("version:Q", title="version", axis=alt.Axis(tickMinStep=1)),
    )
    line = base.mark_line(interpolate="step-after", color="#888").transform_filter("datum.applied")
    points = base.mark_point(size=90, filled=True).encode(
        color=alt.Color("action:N"),
        shape=alt.Shape("forced:N"),
        tooltip=[
            "at:T",
            "alias:N",
            "action:N",
            "version:Q",
            "previous_version:Q",
            "actor:N",
            "reason:N",
            "applied:N",
            "forced:N",
        ],
    )
    return (line + points).properties(height=260)


st.subheader("Deployment history")
hist = registry.history(model, lake=lake())
if hist.height == 0:
    st.caption("No alias has moved yet.")
else:
    alias_pick = st.selectbox(
        "Alias", sorted(set(hist["alias"].to_list()), key=lambda a: (a != "champion", a)), key="hist_alias"
    )
    shown = hist.filter(hist["alias"] == alias_pick).to_pandas()
    st.altair_chart(_timeline(shown), width="stretch")
    st.dataframe(shown, hide_index=True)
