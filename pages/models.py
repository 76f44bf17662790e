"""Models: versions with status and metrics, aliases, gate reports, deployment history, guarded actions.

Every action calls the same ``core.flows.promote`` functions as the CLI and needs a reason; the
two that move the champion alias (promote, roll back) also ask for a confirmation in a dialog
that names who acts and what will serve traffic afterwards.
"""

import altair as alt
import polars as pl
import streamlit as st

from core import registry
from core.errors import LakeopsError
from core.flows import promote
from pages._common import lake, settings
from pages._rollout import render_rollout
from pages._ui import PALETTE, empty, link, megabytes, num, pick, show_error, table, time_axis, when


def _done(message: str) -> None:
    """Show ``message`` after the rerun that makes the tables below current."""
    st.session_state.pop("models_dialog", None)
    st.session_state["models_done"] = message
    st.rerun()


def _close_dialog() -> None:
    st.session_state.pop("models_dialog", None)


# The dialog stays open across reruns (its own widgets rerun the script) until confirmed or dismissed.
@st.dialog("Move the champion", width="large", on_dismiss=_close_dialog)
def _confirm(model: str, action: str, version: int | None, champion: int | None) -> None:
    """Reason, who, and an explicit confirmation before the champion alias moves."""
    if action == "promote":
        st.write(f"**v{version}** of `{model}` becomes champion: the API answers with it within seconds "
                 f"(now **v{champion}**)." if champion is not None else f"**v{version}** becomes the first champion.")
        force = st.checkbox("Force past a failed or missing gate (recorded as forced)", key="dlg_force")
    else:
        force = False
        st.write(f"The champion of `{model}` goes back from **v{champion}** to the previous champion.")
    reason = st.text_area("Reason (required, recorded in the audit trail)", key="dlg_reason")
    who = st.text_input("Who (recorded as the actor)", value=settings().actor, key="dlg_actor")
    sure = st.checkbox("I understand this changes what production serves", key="dlg_sure")
    left, right = st.columns(2)
    if right.button("Cancel", key="dlg_cancel", width="stretch"):
        _close_dialog()
        st.rerun()
    if left.button("Confirm", type="primary", disabled=not (reason.strip() and who.strip() and sure), key="dlg_confirm",
                   width="stretch"):
        try:
            with st.spinner("Moving the alias..."):
                if action == "promote":
                    ch = promote.promote(model, version, reason=reason, actor=who, force=force, lake=lake(),
                                         settings=settings())
                else:
                    ch = promote.rollback(model, reason=reason, actor=who, lake=lake(), settings=settings())
        except LakeopsError as exc:
            show_error(exc)
        else:
            _done(f"Champion of {model}: v{ch.previous_version} → v{ch.version} ({who}: {reason.strip()})")


def _actions(model: str, version: int, champion: int | None) -> None:
    with st.container(border=True):
        st.markdown(f"**Actions on v{version}**")
        reason = st.text_input("Reason (required for approve and reject)", key="reason")
        cols = st.columns(5)
        clicks = {name: col.button(name, key=f"btn_{name.lower().replace(' ', '_')}", width="stretch")
                  for name, col in zip(["Evaluate", "Approve", "Reject", "Promote…", "Roll back…"], cols, strict=True)}
    try:
        if clicks["Evaluate"]:
            with st.spinner(f"Running the gate for v{version} (the candidate and the champion on the same holdout)..."):
                rep = promote.evaluate(model, version, actor=settings().actor, lake=lake(), settings=settings())
            _done(f"Gate {'passed' if rep.passed else 'FAILED'} for v{version}: see the report below.")
        for name, decide in (("Approve", promote.approve), ("Reject", promote.reject)):
            if clicks[name]:
                if not reason.strip():
                    st.warning(f"Write a reason before you {name.lower()} v{version}: it goes into the audit trail.")
                else:
                    decide(model, version, reason=reason, actor=settings().actor, lake=lake(), settings=settings())
                    _done(f"{name}d v{version}.")
    except LakeopsError as exc:
        show_error(exc)
    if clicks["Promote…"]:
        st.session_state["models_dialog"] = ("promote", version)
    if clicks["Roll back…"]:
        st.session_state["models_dialog"] = ("rollback", None)
    pending = st.session_state.get("models_dialog")
    if pending:
        _confirm(model, pending[0], pending[1], champion)


def _gate(model: str, version: int) -> None:
    st.subheader(f"Gate report of v{version}")
    report = promote.latest_gate(model, version, lake=lake())
    if report is None:
        empty("Not evaluated yet.", "Press Evaluate above (or `lakeops models evaluate MODEL VERSION`).")
        return
    (st.success if report.passed else st.error)(report.summary())
    shown = lambda name, v: megabytes(v) if name.endswith("size_bytes") and isinstance(v, int | float) else num(v)  # noqa: E731
    checks = pl.DataFrame([{"check": c.name, "value": shown(c.name, c.value), "threshold": shown(c.name, c.threshold),
                            "passed": c.passed, "detail": c.detail} for c in report.checks])
    table(checks, column_config={"passed": st.column_config.CheckboxColumn("passed")})


def _timeline(frame: pl.DataFrame) -> alt.LayerChart:
    data = frame.to_pandas()
    base = alt.Chart(data).encode(x=time_axis("at", values=frame["at"]),
                                  y=alt.Y("version:Q", title="version", axis=alt.Axis(tickMinStep=1, format="d")))
    line = base.mark_line(interpolate="step-after", color="#888").transform_filter("datum.applied")
    points = base.mark_point(size=110, filled=True).encode(
        color=alt.Color("action:N", scale=alt.Scale(scheme=PALETTE)), shape=alt.Shape("forced:N"),
        tooltip=[alt.Tooltip("at:T", format="%Y-%m-%d %H:%M:%S"), "action", "version", "previous_version", "actor",
                 "reason", "applied", "forced"],
    )
    return (line + points).properties(height=240)


st.title("Models")
models = registry.list_models(lake=lake())
if models.height == 0:
    empty("No registered model yet.", "Train and register one: `lakeops train --dataset NAME --target COL --register NAME`.")
    st.stop()
model = pick("Model", models["model"].to_list(), key="model")
versions = registry.versions(model, lake=lake())
version = pick("Version", versions["version"].to_list()[::-1], key="version")
champion = registry.champion_version(model, lake())
if "models_done" in st.session_state:
    st.success(st.session_state.pop("models_done"), icon=":material/check_circle:")
_actions(model, version, champion)

row = versions.filter(pl.col("version") == version).row(0, named=True)
st.caption(f"v{version}: {row['status']}, registered {when(row['created_at'])} by {row['created_by']}, "
           f"{megabytes(row['size_bytes'])}, sha256 `{row['sha256'][:12]}…`")
c1, c2 = st.columns(2)
with c1:
    link("experiments", f"Its run {row['run_id'][-8:]}", ":material/science:", run=row["run_id"])
if row["dataset_name"]:
    with c2:
        link("datasets", f"Trained on {row['dataset_name']} v{row['dataset_version']}", ":material/dataset:",
             dataset=row["dataset_name"], version=row["dataset_version"])

st.subheader("Aliases")
amap = registry.aliases(model, lake=lake())
if amap:
    for col, (name, v) in zip(st.columns(max(1, len(amap))), sorted(amap.items()), strict=False):
        col.metric(name, f"v{v}")
else:
    empty("No alias yet.", "Evaluate a version, then promote it.")

render_rollout(model, version, champion)

st.subheader("Versions")
table(versions.drop("sha256").with_columns((pl.col("size_bytes") / 1e6).alias("size_MB")).drop("size_bytes"))
_gate(model, version)

st.subheader("Deployment history")
hist = registry.history(model, lake=lake())
if hist.height == 0:
    empty("No alias has moved yet.", "Promote a version to make it champion.")
else:
    alias_pick = st.selectbox("Alias", sorted(set(hist["alias"].to_list()), key=lambda a: (a != "champion", a)),
                              key="hist_alias")
    shown = hist.filter(pl.col("alias") == alias_pick)
    st.altair_chart(_timeline(shown), width="stretch")
    table(shown.drop("event_id"))
