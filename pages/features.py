"""Features: feature views, their versions and definitions, online freshness, and one entity's current vector."""

import json

import altair as alt
import polars as pl
import streamlit as st

from core import features
from core.errors import LakeopsError
from pages._common import lake
from pages._ui import empty, link, num, pick, show_error, table, time_axis, when


def _runs_chart(runs: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(runs.select("as_of", "entities", "mode", "view_version").to_pandas())
        .mark_bar()
        .encode(
            x=time_axis("as_of", "materialised as of", values=runs["as_of"]),
            y=alt.Y("entities:Q", title="entities written"),
            color=alt.Color("mode:N", scale=alt.Scale(domain=["full", "incremental"], range=["#1f77b4", "#2ca02c"])),
            tooltip=[alt.Tooltip("as_of:T", format="%Y-%m-%d %H:%M:%S"), "view_version", "mode", "entities"],
        )
    )


st.title("Features")
try:
    views = features.list_views(lake=lake())
    fresh = features.freshness(lake=lake())
except LakeopsError as exc:
    show_error(exc)
    st.stop()
if views.height == 0:
    empty("No feature view yet.", "Register one with `lakeops features register view.toml` (or `views.py`), or seed the demo with `lakeops up`.")
    st.stop()
table(views)

name = pick("Feature view", views["name"].to_list(), key="view")
versions = features.versions(name, lake=lake())
version = pick("Version", versions["version"].to_list(), key="view_version")
view = features.get_view(name, version, lake=lake())
row = versions.filter(pl.col("version") == version).row(0, named=True)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Source", view.source)
c2.metric("Entity", view.entity)
c3.metric("Features", len(view.all_feature_names))
c4.metric("Unknown entity", "default" if view.missing == "default" else "422 error")
st.caption(f"Event time `{view.event_time}` · content hash `{row['content_hash']}` · registered {when(row['created_at'])} "
           f"by {row['created_by'] or '-'}" + (f" · {view.description}" if view.description else ""))
link("datasets", f"Source dataset {view.source}", ":material/dataset:", dataset=view.source)

tab_def, tab_online, tab_entity, tab_lineage = st.tabs(["Definition", "Online freshness", "Entity lookup", "Training sets"])
with tab_def:
    table(pl.DataFrame([{"feature": f.name, "expression": f.expr or "(rows)", "aggregate": f.agg or "latest value",
                         "window": f.window or "", "default": json.dumps(f.fill), "description": f.description}
                        for f in view.features]
                       + [{"feature": f.name, "expression": f.expr, "aggregate": "per request", "window": "",
                           "default": "", "description": f.description} for f in view.request_features]))
    if view.request_fields:
        st.caption("Request features are computed per row from the request-time fields "
                   + ", ".join(f"`{n}` ({t})" for n, t in view.request_fields)
                   + " and the looked-up features, in training sets and in each prediction request alike.")
    table(versions.select("version", pl.col("content_hash").str.slice(0, 16).alias("hash"), "created_at", "created_by"))
    with st.expander("Definition as data (what `lakeops features register` reads, as TOML)"):
        st.json(view.to_dict())


with tab_online:
    mine = fresh.filter((pl.col("view") == name) & (pl.col("version") == version))
    if mine.height == 0:
        empty(f"{name} v{version} has no online values yet:",
              f"`lakeops features materialize {name} --version {version}` (the scheduler's features_materialize job "
              "does it for each view's latest version and the versions champions use).")
    else:
        f = mine.row(0, named=True)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("As of", when(f["as_of"]))
        c2.metric("Age", f"{num(f['age_s'] / 60)} min")
        c3.metric("Last run", f"{f['mode']}, {f['entities']:,} entities")
        lag = (f["latest_source_version"] or 0) - (f["source_version"] or 0)
        c4.metric("Source version", f"v{f['source_version']}", delta=f"{lag} version(s) behind" if lag else "current",
                  delta_color="inverse" if lag else "off")
        runs = features.materializations(name, lake=lake()).filter(pl.col("view_version") == version)
        st.altair_chart(_runs_chart(runs), width="stretch")
        table(runs.select("as_of", "mode", "entities", "source_version", "online_version", "started_at", "at"))

with tab_entity:
    key = st.text_input(f"{view.entity}", key="entity_key", placeholder="an entity key, e.g. C0000001")
    if key:
        try:
            vector = features.entity_vector(name, key, version=version, lake=lake())
        except LakeopsError as exc:
            show_error(exc)
        else:
            st.caption(f"as of {when(vector['__as_of'], seconds=True)} (materialisation {vector['__materialization_id']}, "
                       f"source v{vector['__source_version']})")
            table(pl.DataFrame({"feature": view.feature_names, "value": [num(vector[n]) for n in view.feature_names]}))

with tab_lineage:
    sets = features.training_sets(name, lake=lake()).filter(pl.col("view_version") == version)
    if sets.height == 0:
        empty(f"No training set built from {name} v{version} yet:",
              f"`lakeops features build-training --labels <dataset> --view {name}@v{version} --name <set>`.")
    else:
        table(sets.select("dataset", "dataset_version", "label_dataset", "label_version", "label_time_column",
                          "source_dataset", "source_version", "rows", "at"))
