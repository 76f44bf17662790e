"""SQL console: read-only DuckDB queries over every lake table."""

import streamlit as st

from core.errors import LakeopsError
from core.sql import query, views
from pages._common import lake, settings
from pages._ui import show_error, table

st.title("SQL console")
st.caption("Read-only: one SELECT per run. Every table is a view over a consistent snapshot.")

with st.sidebar:
    st.subheader("Tables and views")
    try:
        for name, what in views(lake()).items():
            st.markdown(f"`{name}`  \n<small>{what}</small>", unsafe_allow_html=True)
    except LakeopsError as exc:
        st.error(str(exc))

default = "select model, model_version, count(*) as predictions, avg(score) as mean_score\nfrom predictions\ngroup by all\norder by all"
sql_text = st.text_area("Query", value=st.session_state.get("sql_text", default), height=160, key="sql_text")
if st.button("Run", type="primary", key="run_sql"):
    s = settings()
    try:
        with st.spinner("Running the query..."):
            result = query(lake(), sql_text, memory_limit=s.sql_memory_limit, threads=s.sql_threads,
                           timeout_s=s.sql_timeout_s)
    except LakeopsError as exc:
        show_error(exc)
    else:
        st.caption(f"{result.height} rows" + (" (the first 10,000 shown; the CSV has all)" if result.height > 10_000 else ""))
        table(result.head(10_000))
        st.download_button("Download CSV", result.write_csv(), file_name="query.csv", mime="text/csv")
