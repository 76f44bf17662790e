"""SQL written the way users write it: bare ``at`` columns, rows given as dicts with uneven keys."""

from __future__ import annotations

from datetime import timedelta

from core.ids import utcnow
from core.sql import query, quote_at


def test_bare_at_column_works_in_select_where_and_order_by(lake):
    now = utcnow()
    lake.append("feedback", [{"prediction_id": "old", "at": now - timedelta(hours=2)}, {"prediction_id": "new", "at": now}])
    out = query(lake, "select prediction_id, at from feedback where at > now() - interval 1 hour order by at desc")
    assert out["prediction_id"].to_list() == ["new"]


def test_quote_at_leaves_strings_quoted_names_and_at_clauses_alone():
    sql = "select at, 'at' as s, \"at\", x.at, attr from t at (version => 1)"
    assert quote_at(sql) == "select \"at\", 'at' as s, \"at\", x.\"at\", attr from t at (version => 1)"


def test_append_of_row_dicts_takes_the_union_of_their_keys(lake):
    now = utcnow()
    lake.append("feedback", [{"prediction_id": "a", "at": now}, {"prediction_id": "b", "at": now, "label": 1.0, "source": "x"}])
    rows = lake.read("feedback").sort("prediction_id").select("prediction_id", "label", "source").rows()
    assert rows == [("a", None, None), ("b", 1.0, "x")]
