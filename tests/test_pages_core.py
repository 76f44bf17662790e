"""The Overview and SQL console pages, run with Streamlit's AppTest against a temp lake."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.ids import utcnow
from tests.pages_support import run_page


def _page(path: str) -> AppTest:
    return run_page(path)


def test_sql_console_runs_a_query_and_shows_rows(ui_lake):
    ui_lake.append("feedback", [{"prediction_id": f"p{i}", "label": float(i % 2), "at": utcnow()} for i in range(7)])
    at = _page("pages/sql.py")
    at.text_area(key="sql_text").set_value("select count(*) as n, sum(label) as s from feedback").run()
    at.button(key="run_sql").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    frame = at.dataframe[0].value
    assert frame["n"].tolist() == [7]
    assert frame["s"].tolist() == [3.0]
    sidebar_text = " ".join(m.value for m in at.sidebar.markdown)
    assert "feedback" in sidebar_text


def test_sql_console_refuses_file_access_with_a_clear_error(ui_lake):
    ui_lake.append("feedback", [{"prediction_id": "p", "label": 1.0, "at": utcnow()}])
    at = _page("pages/sql.py")
    at.text_area(key="sql_text").set_value("select * from read_csv('/etc/passwd')").run()
    at.button(key="run_sql").click().run()
    assert at.error and "refused" in at.error[0].value
    assert ui_lake.version("feedback") == 1


def test_overview_without_models_says_how_to_start(ui_lake):
    at = _page("pages/overview.py")
    assert any("No registered model" in i.value for i in at.info)
    assert [m.value for m in at.metric][:3] == ["0", "0", "0"]
