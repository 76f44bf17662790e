"""The Models page's staged-rollout section: the challenger, its live comparison, and guarded actions."""

from __future__ import annotations

import json

import altair as alt
import polars as pl
import streamlit as st

from core import registry
from core.errors import LakeopsError
from core.flows import rollout
from pages._common import lake, settings
from pages._ui import PALETTE, empty, num, show_error, table, when

__all__ = ["render_rollout"]


def _close() -> None:
    st.session_state.pop("rollout_dialog", None)


@st.dialog("Staged rollout", width="large", on_dismiss=_close)
def _dialog(model: str, action: str, version: int) -> None:
    """Reason, who and a confirmation before a challenger meets (or leaves) live traffic."""
    mode, fraction = "shadow", 0.1
    if action == "stage":
        st.write(f"**v{version}** of `{model}` meets live traffic beside the champion after a smoke test.")
        mode = st.radio("Mode", ["shadow", "canary"], horizontal=True, key="ro_mode",
                        help="shadow: scored on every request, never the answer; canary: answers a share of customers")
        if mode == "canary":
            fraction = st.slider("Share of customers answered by the challenger", 0.01, 0.5, 0.1, key="ro_fraction")
    elif action == "unstage":
        st.write(f"The challenger **v{version}** of `{model}` leaves live traffic; the champion answers everything.")
    else:
        st.write(f"The live gate of `{model}` runs now: it promotes **v{version}** if it passed, withdraws it if it "
                 "failed, or waits for more traffic.")
    reason = st.text_area("Reason (required, recorded in the audit trail)", key="ro_reason")
    who = st.text_input("Who (recorded as the actor)", value=settings().actor, key="ro_actor")
    sure = st.checkbox("I understand this changes what production traffic meets", key="ro_sure")
    if st.button("Confirm", type="primary", disabled=not (reason.strip() and who.strip() and sure), key="ro_confirm"):
        try:
            with st.spinner("Working..."):
                if action == "stage":
                    rollout.stage(model, version, mode=mode, fraction=fraction, reason=reason, actor=who, lake=lake(),
                                  settings=settings())
                    message = f"v{version} is the {mode} challenger"
                elif action == "unstage":
                    rollout.unstage(model, reason=reason, actor=who, lake=lake(), settings=settings())
                    message = "the staged rollout ended"
                else:
                    out = rollout.check_rollout(model, lake=lake(), settings=settings(), actor=who)
                    message = f"live gate: {out.action if out else 'nothing staged'} ({out.why if out else ''})"
        except LakeopsError as exc:
            show_error(exc)
        else:
            _close()
            st.session_state["models_done"] = message
            st.rerun()


def _overlay(scores: pl.DataFrame) -> alt.Chart:
    return alt.Chart(scores.to_pandas()).transform_density(
        "score", groupby=["role"], as_=["score", "density"], extent=[0, 1],
    ).mark_area(opacity=0.45).encode(
        x=alt.X("score:Q", title="score"), y=alt.Y("density:Q", title="density", stack=None),
        color=alt.Color("role:N", scale=alt.Scale(scheme=PALETTE)),
    ).properties(height=200)


def render_rollout(model: str, version: int, champion: int | None) -> None:
    """The staged rollout of ``model``: who is challenger, how, since when, and how it compares live."""
    st.subheader("Staged rollout")
    stage = registry.state(model, lake=lake()).stage
    if stage is None:
        empty("No challenger meets live traffic.",
              f"Stage a version that passed its gate (below, or `lakeops models stage {model} VERSION --mode shadow`).")
        if version != champion and st.button(f"Stage v{version}…", key="btn_stage"):
            st.session_state["rollout_dialog"] = ("stage", version)
    else:
        c = st.columns(4)
        c[0].metric("Challenger", f"v{stage.version}")
        c[1].metric("Mode", stage.mode)
        c[2].metric("Traffic share", f"{stage.fraction:.0%}" if stage.mode == "canary" else "shadow (0 %)")
        c[3].metric("Since", when(stage.since))
        st.caption(f"staged by {stage.actor}: {stage.reason}")
        reports = rollout.live_reports(model, lake=lake())
        latest = reports.filter(pl.col("challenger_version") == stage.version)
        if latest.height:
            rep = json.loads(latest["report_json"][-1])
            verdict = {True: "passed", False: "failed", None: "collecting traffic"}[rep["passed"]]
            st.write(f"Latest live comparison ({when(latest['at'][-1])}): **{verdict}**: {rep['why']}")
            m = st.columns(4)
            m[0].metric("Requests", f"{rep['requests']:,}")
            m[1].metric("Labelled", f"{rep['labelled']:,}")
            m[2].metric("Agreement", "—" if rep["agreement"] is None else f"{rep['agreement']:.1%}")
            cmp = rep.get("comparison") or {}
            m[3].metric(f"Realised {rep['metric']} (challenger − champion)",
                        "—" if not cmp else f"{cmp['improvement']:+.4f}",
                        None if not cmp else f"CI [{cmp['ci_low']:+.4f}, {cmp['ci_high']:+.4f}]", delta_color="off")
            table(pl.DataFrame([{"check": k["name"], "value": num(k["value"]), "threshold": num(k["threshold"]),
                                 "passed": k["passed"], "detail": k["detail"]} for k in rep["checks"]]),
                  column_config={"passed": st.column_config.CheckboxColumn("passed")})
        else:
            empty("Not compared yet.", "The scheduler's rollout job compares every 2 minutes; or run the live gate now.")
        scores = rollout.live_scores(model, lake=lake())
        if scores.height:
            st.altair_chart(_overlay(scores), width="stretch")
        cols = st.columns(2)
        if cols[0].button("Run the live gate…", key="btn_live_gate"):
            st.session_state["rollout_dialog"] = ("gate", stage.version)
        if cols[1].button("Abort the rollout…", key="btn_unstage"):
            st.session_state["rollout_dialog"] = ("unstage", stage.version)
    pending = st.session_state.get("rollout_dialog")
    if pending:
        try:
            _dialog(model, pending[0], pending[1])
        except LakeopsError as exc:
            show_error(exc)
