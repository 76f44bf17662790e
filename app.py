"""The lakeops Streamlit app: a router over the pages (``streamlit run app.py``)."""

from pathlib import Path

import streamlit as st

_HERE = Path(__file__).parent
_PAGES = [
    ("pages/overview.py", "Overview", ":material/dashboard:"),
    ("pages/datasets.py", "Datasets", ":material/dataset:"),
    ("pages/experiments.py", "Experiments", ":material/science:"),
    ("pages/models.py", "Models", ":material/deployed_code:"),
    ("pages/monitoring.py", "Monitoring", ":material/monitoring:"),
    ("pages/jobs.py", "Jobs", ":material/schedule:"),
    ("pages/sql.py", "SQL console", ":material/terminal:"),
]

# A local favicon: a material-icon or emoji favicon is fetched from an external host (fails offline).
st.set_page_config(page_title="lakeops", page_icon=str(_HERE / "assets" / "favicon.png"), layout="wide")
pages = [
    st.Page(str(_HERE / path), title=title, icon=icon, default=(i == 0))
    for i, (path, title, icon) in enumerate(_PAGES)
    if (_HERE / path).is_file()
]
st.navigation(pages).run()
