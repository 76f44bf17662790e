"""The Datasets page, run with Streamlit's AppTest against a temporary lake."""


import pytest
from streamlit.testing.v1 import AppTest

from core import datasets, demo
from core.errors import DataValidationError
from tests.pages_support import run_page


def _run() -> AppTest:
    return run_page("pages/datasets.py")


def test_empty_lake_shows_hint(ui_lake):
    at = _run()
    assert "No dataset yet" in at.info[0].value


def test_versions_profile_validation_diff_quarantine(ui_lake, settings):
    f = demo.generate(3_000, seed=4)
    datasets.ingest("churn", f.head(1_800), lake=ui_lake, spec={}, settings=settings)
    datasets.ingest("churn", f.tail(1_200), lake=ui_lake, spec={}, settings=settings)
    with pytest.raises(DataValidationError):
        datasets.ingest("churn", f.head(10).drop("plan"), lake=ui_lake, source="broken.csv", spec={}, settings=settings)
    at = _run()
    assert at.dataframe[0].value["name"].tolist() == ["churn"]
    versions = at.dataframe[1].value
    assert versions["version"].tolist() == [2, 1]
    assert versions["validation_status"].tolist() == ["warned", "passed"]
    assert at.metric[0].value == "3,000"  # the newest version is shown first
    # profile tab: version selector lists newest first; pick version 1
    assert at.selectbox(key="profile_column").value != "customer_id"  # an identifier makes no histogram
    at.selectbox(key="version").set_value(1).run()
    assert at.metric[0].value == "1,800" and at.metric[1].value == "passed"
    summary = at.dataframe[2].value
    assert "monthly_charges" in summary["column"].tolist()
    at.selectbox(key="profile_column").set_value("age").run()
    assert not at.exception
    # validation tab: warnings of version 2 are shown
    at.selectbox(key="validation_version").set_value(2).run()
    warnings = [w.value for w in at.warning]
    assert any("domain(plan)" in w for w in warnings)
    assert any("Validation **warned** against version 1" in m.value for m in at.markdown)
    # diff tab: 1 -> 2
    labels = {m.label: m.value for m in at.metric}
    assert labels["Rows added"] == "1,200" and labels["Rows removed"] == "0"
    # quarantine tab lists the refused batch
    q = [d.value for d in at.dataframe if "quarantine_id" in d.value.columns]
    assert q and q[0]["source"].tolist() == ["broken.csv"]
    errors = [e.value for e in at.error]
    assert any("ERROR columns" in e and "missing plan" in e for e in errors)  # the quarantined batch's report
    psi = [c for c in at.get("vega_lite_chart") if "PSI" in c.proto.spec]
    assert psi and '"domain": [0' in psi[0].proto.spec.replace("[0.0", "[0")  # a fixed scale from 0
    # a version compared with itself: said, not an empty chart
    at.selectbox(key="diff_a").set_value(2).run()
    assert any("compared with itself" in i.value for i in at.info)
