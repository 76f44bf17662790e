"""Read-only, sandboxed SQL over the lake with DuckDB: the only module that imports ``duckdb``.

Each query gets a fresh DuckDB connection (LAKE-FACTS: objects of one connection are shared
and a user could drop or shadow them) with external access disabled and configuration locked,
so file reads/writes, ATTACH, INSTALL/LOAD and SET are refused by DuckDB itself. On top of that
only ``SELECT``-shaped statements (``SELECT``, ``WITH``, ``FROM``, ``DESCRIBE``, ``SHOW``,
``SUMMARIZE``, ``EXPLAIN``) are accepted, one per call, so nothing can be created or written.

Every lake table is visible as a view over a snapshot pinned to one version: ``runs``,
``metrics``, ``data_churn`` (dataset ``churn``), ``predictions_churn`` (model ``churn``) and the
derived views below (``predictions`` = every model's common columns, ``runs_latest`` ...).
A dataset version is reachable as ``data_<name>_v<N>`` (e.g. ``select * from data_churn_v3``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from core.errors import LakeopsError, SqlError, SqlRefusedError, TableNotFoundError
from core.lake import Lake

__all__ = ["DERIVED_VIEWS", "query", "query_arrow", "quote_at", "view_name", "views"]

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_VERSIONED = re.compile(r"^data_(?P<name>[A-Za-z0-9_-]+)_v(?P<version>\d+)$")

_PRED_COMMON = 'prediction_id, "at", day, model_version, score, {label} as predicted_label, latency_ms'  # AT is a DuckDB keyword


@dataclass(frozen=True)
class DerivedView:
    """A view defined in SQL over lake tables; created only when every table it needs exists."""

    sql: str
    requires: tuple[str, ...]
    description: str = ""


# name -> view; "predictions" is built from the per-model tables at query time.
DERIVED_VIEWS: dict[str, DerivedView] = {
    "runs_latest": DerivedView(
        """select * exclude (rn) from (
               select r.*, row_number() over (partition by run_id order by r."at" desc) as rn from runs r
           ) where rn = 1""",
        ("runs",),
        "the current state of each run (its latest status row)",
    ),
    "metrics_latest": DerivedView(
        """select run_id, key, arg_max(value, (step, "at")) as value, max(step) as step
           from metrics group by run_id, key""",
        ("metrics",),
        "the last value of each run's metrics (highest step, then latest time)",
    ),
    "runs_wide": DerivedView(
        """select r.* exclude (rn), m.metrics, p.params, t.tags from (
               select r.*, row_number() over (partition by run_id order by r."at" desc) as rn from runs r
           ) r
           left join (select run_id, map_from_entries(list((key, value))) as metrics from (
               select run_id, key, arg_max(value, (step, "at")) as value from metrics group by run_id, key
           ) group by run_id) m using (run_id)
           left join (select run_id, map_from_entries(list((key, value))) as params from (
               select run_id, key, arg_max(value, "at") as value from params group by run_id, key
           ) group by run_id) p using (run_id)
           left join (select run_id, map_from_entries(list((key, value))) as tags from (
               select run_id, key, arg_max(value, "at") as value from tags group by run_id, key
           ) group by run_id) t using (run_id)
           where r.rn = 1""",
        ("runs", "metrics", "params", "tags"),
        "each run's latest state with metrics/params/tags maps: metrics['auc'], params['num_leaves']",
    ),
    "registered_versions": DerivedView(
        """select v.* from model_versions v where exists (
               select 1 from registry_events e where e.action = 'register' and e.event_id = v.registration_id
                   and e.model = v.model and e.version = v.version
           )""",
        ("model_versions", "registry_events"),
        "model versions that completed registration (model_versions also holds lost version claims)",
    ),
}


def view_name(table: str) -> str:
    """Return the SQL view name of lake table ``table`` (``data/churn`` -> ``data_churn``)."""
    return table.replace("/", "_").replace("-", "_")


def views(lake: Lake) -> dict[str, str]:
    """Return every queryable view name mapped to what it is (a table name or a description)."""
    tables = lake.tables()
    out = {view_name(t): t for t in tables}
    if any(t.startswith("predictions/") for t in tables):
        out["predictions"] = "every model's prediction log (common columns, with a model column)"
    for name, view in DERIVED_VIEWS.items():
        if all(r in tables for r in view.requires):
            out[name] = view.description
    return dict(sorted(out.items()))


_parser: duckdb.DuckDBPyConnection | None = None
_parser_lock = threading.Lock()


def _extract(sql: str) -> list[Any]:
    """Parse only (nothing runs): one shared connection, as a new one costs 50-300 ms."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(config={"enable_external_access": False})
        return list(_parser.extract_statements(sql))


def quote_at(sql: str) -> str:
    """Quote bare ``at`` column references: ``at`` is a DuckDB keyword, and every lakeops table
    has an ``at`` timestamp column, so ``order by at`` would otherwise be a syntax error.

    Only keyword tokens spelled ``at`` that are not followed by ``(`` (DuckDB's ``AT (VERSION =>
    ...)`` clause) are rewritten; strings, quoted names and comments are left alone.
    """
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error:
        return sql
    out, last = [], 0
    for pos, kind in tokens:
        if kind != duckdb.token_type.keyword or sql[pos : pos + 2].lower() != "at":
            continue
        end = pos + 2
        if end < len(sql) and (sql[end].isalnum() or sql[end] == "_"):
            continue
        if sql[end:].lstrip().startswith("("):
            continue
        out.append(sql[last:pos])
        out.append(f'"{sql[pos:end]}"')
        last = end
    out.append(sql[last:])
    return "".join(out)


def _statements(sql: str) -> None:
    try:
        stmts = _extract(sql)
    except duckdb.Error as exc:
        raise SqlError(_first_line(exc)) from None
    if not stmts:
        raise SqlError("the query is empty")
    if len(stmts) > 1:
        raise SqlRefusedError(f"one statement per query, got {len(stmts)}")
    kind = stmts[0].type
    if kind not in _ALLOWED:
        what = str(kind).rsplit(".", 1)[-1]
        raise SqlRefusedError(
            f"{what} statements are refused: the SQL console is read-only (SELECT queries only)"
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _connect(memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        config={
            "enable_external_access": False,
            "memory_limit": memory_limit,
            "threads": threads,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    # UTC, not the host's zone: results keep the lake's UTC type and ::date / hour() agree with
    # the `day` partitions. TimeZone cannot go in the connect config (ICU loads after it).
    con.execute("set TimeZone = 'UTC'")
    con.execute("set lock_configuration = true")
    return con


def _register(con: duckdb.DuckDBPyConnection, lake: Lake, sql: str) -> None:
    """Register the tables the query needs (all of them when it looks at the catalog)."""
    tables = lake.tables()
    by_view = {view_name(t): t for t in tables}
    try:
        wanted = {n.split(".")[-1].lower() for n in duckdb.get_table_names(sql)}
    except duckdb.Error:  # e.g. prepared parameters: register everything instead
        wanted = set()
    known = set(by_view) | set(DERIVED_VIEWS) | {"predictions"}
    needs_all = bool(wanted - known - {m for m in wanted if _VERSIONED.match(m)}) or not wanted
    needed: set[str] = set(by_view) if needs_all else set()
    for w in wanted:
        if w in by_view:
            needed.add(w)
        elif w in DERIVED_VIEWS:
            needed |= {view_name(r) for r in DERIVED_VIEWS[w].requires if r in tables}
        elif w == "predictions":
            needed |= {view_name(t) for t in tables if t.startswith("predictions/")}
    for v in sorted(needed):
        con.register(v, lake.snapshot(by_view[v]))
    for w in wanted:
        m = _VERSIONED.match(w)
        # map back through the view name: dataset "my-set" is data_my_set, so data_my_set_v1
        table = {k.lower(): t for k, t in by_view.items()}.get(f"data_{m['name']}") if m else None
        if m and table and table.startswith("data/"):
            try:
                con.register(w, lake.snapshot(table, version=int(m["version"])))
            except TableNotFoundError as exc:
                raise SqlError(f"{w}: {exc}") from None
    for name, view in DERIVED_VIEWS.items():
        if (needs_all or name in wanted) and all(r in tables for r in view.requires):
            con.execute(f"create temp view {name} as {view.sql}")
    preds = [t for t in tables if t.startswith("predictions/")]
    if preds and (needs_all or "predictions" in wanted):
        # tables of earlier releases call the predicted class ``label`` (features at the top level)
        label = {t: "predicted_label" if "predicted_label" in lake.schema(t).names else "label" for t in preds}
        union = " union all ".join(
            f"select '{t.split('/', 1)[1]}' as model, {_PRED_COMMON.format(label=label[t])} from {view_name(t)}"
            for t in preds
        )
        con.execute(f"create temp view predictions as {union}")


def query_arrow(
    lake: Lake,
    sql: str,
    params: Sequence[Any] | None = None,
    *,
    memory_limit: str = "2GB",
    threads: int = 2,
    timeout_s: float = 60.0,
) -> pa.Table:
    """Run one read-only query over the lake and return an Arrow table.

    Args:
        lake: the lake to read.
        sql: one SELECT-shaped statement; ``?`` placeholders take ``params``.
        params: values for the placeholders.
        memory_limit: DuckDB memory limit.
        threads: DuckDB threads.
        timeout_s: the query is interrupted after this many seconds.

    Raises:
        SqlRefusedError: the statement writes, touches files, loads extensions or sets options.
        SqlError: DuckDB could not run it (syntax, unknown table or column, timeout).
    """
    sql = quote_at(sql)
    _statements(sql)
    con = _connect(memory_limit, threads)
    timer = threading.Timer(timeout_s, con.interrupt)
    try:
        _register(con, lake, sql)
        timer.start()
        rel = con.sql(sql, params=list(params) if params else None)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.PermissionException as exc:
        raise SqlRefusedError(f"refused: {_first_line(exc)} (the SQL console cannot touch files)") from None
    except duckdb.InterruptException:
        raise SqlError(f"the query ran longer than {timeout_s:g} s and was stopped") from None
    except duckdb.InvalidInputException as exc:
        msg = _first_line(exc)
        if "lock" in msg.lower() or "disabled" in msg.lower():
            raise SqlRefusedError(f"refused: {msg}") from None
        raise SqlError(msg) from None
    except duckdb.CatalogException as exc:
        msg = _first_line(exc)
        if "does not exist" in msg:
            msg += f" (queryable: {', '.join(views(lake)) or 'no tables yet'})"
        raise SqlError(msg) from None
    except duckdb.Error as exc:
        raise SqlError(_first_line(exc)) from None
    except LakeopsError:
        raise
    finally:
        timer.cancel()
        con.close()


def query(lake: Lake, sql: str, params: Sequence[Any] | None = None, **limits: Any) -> pl.DataFrame:
    """Run one read-only query (see ``query_arrow``) and return a polars frame."""
    out = pl.from_arrow(query_arrow(lake, sql, params, **limits))
    assert isinstance(out, pl.DataFrame)
    return out
