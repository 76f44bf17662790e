"""The Experiments page, run with Streamlit's AppTest against a temporary lake."""


from streamlit.testing.v1 import AppTest

from core import datasets, demo, tracking
from core.flows.train import train_model
from tests.pages_support import run_page

FAST = {"num_iterations": 20, "num_leaves": 7, "min_data_in_leaf": 10}


def _run() -> AppTest:
    return run_page("pages/experiments.py")


def test_empty_lake_shows_hint(ui_lake):
    assert "No run yet" in _run().info[0].value


def test_runs_curves_compare_importance_lineage(ui_lake, settings):
    datasets.ingest("churn", demo.generate(n=1000), lake=ui_lake, settings=settings)
    a = train_model("churn", target="churned", params=FAST, seed=1, name="small", lake=ui_lake, settings=settings)
    b = train_model(
        "churn", target="churned", params={**FAST, "num_leaves": 15}, seed=2, name="bigger", lake=ui_lake
    , settings=settings)
    with tracking.start_run("scratch", name="manual", lake=ui_lake) as run:
        run.log_metric("score", 1.0)
    tracking.flush(ui_lake)

    at = _run()
    table = at.dataframe[0].value
    assert table["name"].tolist() == ["manual", "bigger", "small"]
    assert "metrics.auc" in table.columns
    at.selectbox(key="experiment").set_value("churn").run()
    at.text_input(key="filter").set_value("params.num_leaves = '15'").run()
    assert at.dataframe[0].value["run_id"].tolist() == [b.run_id]
    at.text_input(key="filter").set_value("metrics.auc > 0").run()
    at.text_input(key="order").set_value("attributes.seed asc").run()
    assert at.dataframe[0].value["run_id"].tolist() == [a.run_id, b.run_id]
    assert at.multiselect(key="selected").value == [b.run_id]  # the previous selection is kept
    at.multiselect(key="selected").set_value([a.run_id, b.run_id]).run()
    assert at.multiselect(key="curve_keys").value == ["valid.auc"]
    assert len(at.get("vega_lite_chart")) >= 2  # curves and importance
    compare = at.dataframe[1].value
    row = compare[compare["key"] == "num_leaves"].iloc[0]
    assert list(row.iloc[2:]) == ["7", "15"]
    at.selectbox(key="importance_run").set_value(b.run_id).run()
    assert not at.exception
    lineage = at.dataframe[2].value
    values = dict(zip(lineage["field"], lineage["value"], strict=True))
    assert values["dataset"] == "churn@v1" and values["seed"] == "1" and "lightgbm" in values["packages"]
    at.text_input(key="filter").set_value("metrics.auc >>> 1").run()
    assert "expected" in at.error[0].value
