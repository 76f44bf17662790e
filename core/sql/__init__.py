"""Read-only, sandboxed SQL over the lake with DuckDB: the only module that imports ``duckdb``.

Only one ``SELECT``-shaped statement is accepted per call (``SELECT``, ``WITH``, ``FROM``,
``PIVOT``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, and ``EXPLAIN [ANALYZE]`` of one of those), so
nothing can be created or written. The statement is checked here, then run in a worker process
on a fresh DuckDB connection (LAKE-FACTS: objects of one connection are shared, a user could
drop or shadow them) with external access disabled, no allowed directory, no spill to disk and
configuration locked, so file reads/writes, ATTACH, INSTALL/LOAD and SET are refused by DuckDB
itself.

Bounds. A query may use ``memory_limit`` of memory: DuckDB's own limit is 70 % of it and the
worker process is stopped when its memory grows past all of it (a single huge value such as
``repeat('x', 2000000000)`` is not covered by DuckDB's limit). Results hold at most ``max_rows``
rows and ``max_bytes`` bytes; :func:`export` streams any size to a file. A query is interrupted
after ``timeout_s`` and its worker killed a few seconds later if it does not stop. The calling
process (CLI, Streamlit) never holds more than one result's bytes.

Every lake table is visible as a view over a snapshot pinned to one version: ``metrics``,
``data_churn`` (dataset ``churn``), ``predictions_churn`` (model ``churn``), ``artifacts`` and the
derived views below. ``runs`` is each run's latest state; its raw history (one row per status
change) is ``runs_history``. Earlier versions of any table: ``data_churn_v3`` or
``FROM data_churn AT (VERSION => 3)``, and by time ``FROM runs_history AT (TIMESTAMP =>
'2026-05-01 12:00:00+00')`` (a literal time; UTC when it has no offset).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from core.config import Settings
from core.errors import LakeopsError, SqlError, SqlRefusedError, SqlResultTooLargeError, TableNotFoundError
from core.sql._pool import Limits, acquire, exchange, parse_size, release, size_text
from core.sql._statements import check, quote_at, time_travel
from core.sql._views import DERIVED_VIEWS, LABELLED_VIEWS, lake_tables, predictions_view, view_name, views

if TYPE_CHECKING:  # the worker process imports this package: keep polars and deltalake out of it
    import polars as pl

    from core.lake import Lake

__all__ = ["DERIVED_VIEWS", "export", "query", "query_arrow", "quote_at", "view_name", "views"]

_VERSIONED = re.compile(r"^data_(?P<name>[A-Za-z0-9_-]+)_v(?P<version>\d+)$")
# the defaults are Settings' ([sql] in lakeops.toml), written once there
_MAX_ROWS = Settings.sql_max_rows
_MAX_BYTES = int(Settings.sql_max_result_mb * 1e6)
_EXPORT_TIMEOUT_S = Settings.sql_timeout_s * 10  # an export streams everything: ten query timeouts
_DUCKDB_SHARE = 0.7  # of memory_limit for DuckDB's buffer pool; the rest is headroom to the kill


@dataclass(frozen=True)
class _Plan:
    sql: str
    datasets: dict[str, Any]  # view name -> pinned pyarrow dataset
    views: list[tuple[str, str]]  # (name, select) created as temp views, in order


def _plan(lake: Lake, sql: str) -> _Plan:
    """Check the statement and pin a snapshot of every table it needs (all when it is unclear)."""
    tables = lake_tables(lake)
    by_view = {view_name(t): t for t in tables}
    datasets: dict[str, Any] = {}
    sql = quote_at(time_travel(sql, lake, by_view, datasets))
    check(sql)
    try:
        named = {n.split(".")[-1].lower() for n in duckdb.get_table_names(sql)}
    except duckdb.Error:  # e.g. prepared parameters or PIVOT: register everything instead
        named = set()
    wanted = named - {k.lower() for k in datasets}
    known = set(by_view) | set(DERIVED_VIEWS) | {"predictions"} | set(LABELLED_VIEWS)
    needs_all = bool(wanted - known - {m for m in wanted if _VERSIONED.match(m)}) or not named
    needed: set[str] = set(by_view) if needs_all else set()
    for w in wanted:
        if w in by_view:
            needed.add(w)
        elif w in DERIVED_VIEWS:
            needed |= {view_name(r) for r in DERIVED_VIEWS[w].requires if r in tables}
        elif w == "predictions" or w in LABELLED_VIEWS:
            needed |= {view_name(t) for t in tables if t.startswith("predictions/")}
            if w in LABELLED_VIEWS and "feedback" in tables:
                needed.add(view_name("feedback"))
    for v in sorted(needed):
        datasets[v] = lake.snapshot(by_view[v])
    lowered = {k.lower(): t for k, t in by_view.items()}
    for w in wanted:
        m = _VERSIONED.match(w)
        # map back through the view name: dataset "my-set" is data_my_set, so data_my_set_v1
        table = lowered.get(f"data_{m['name']}") if m else None
        if m and table and table.startswith("data/"):
            try:
                datasets[w] = lake.snapshot(table, version=int(m["version"]))
            except TableNotFoundError as exc:
                raise SqlError(f"{w}: {exc}") from None
    made = [
        (name, view.sql)
        for name, view in DERIVED_VIEWS.items()
        if (needs_all or name in wanted) and all(r in tables for r in view.requires)
    ]
    union = predictions_view(tables, {t: datasets[view_name(t)].schema.names for t in tables
                                      if t.startswith("predictions/") and view_name(t) in datasets})
    labelled = needs_all or bool(set(LABELLED_VIEWS) & wanted)
    if union and (needs_all or "predictions" in wanted or labelled):
        made.append(("predictions", union))
    if union and labelled and "feedback" in tables:
        made += list(LABELLED_VIEWS.items())
    return _Plan(sql, datasets, made)



def _run(lake: Lake, sql: str, params: Sequence[Any] | None, limits: Limits, sink: Callable[[pa.RecordBatchReader], None]) -> None:
    """Plan ``sql`` here, run it in a worker and hand each received Arrow stream to ``sink``."""
    plan = _plan(lake, sql)
    bound = parse_size(limits.memory_limit)
    job = {
        "sql": plan.sql,
        "params": list(params) if params else None,
        "datasets": plan.datasets,
        "views": plan.views,
        "memory_limit": f"{max(16, int(bound * _DUCKDB_SHARE / 1e6))}MB",
        "threads": limits.threads,
        "timeout_s": limits.timeout_s,
        "max_rows": limits.max_rows,
        "max_bytes": limits.max_bytes,
    }
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    worker = acquire(limits.timeout_s)
    answer: dict[str, Any] | None = None
    try:
        answer = exchange(worker, payload, bound, limits, sink)
    finally:
        release(worker, healthy=answer is not None)
    if answer["tag"] == "D":
        return
    if answer["tag"] == "L":
        raise _too_large(answer)
    kind, msg = answer["kind"], answer["message"]
    if kind == "catalog" and "does not exist" in msg:
        msg += f" (queryable: {', '.join(views(lake)) or 'no tables yet'})"
    raise _error(kind, msg, limits)


def _too_large(info: dict[str, Any]) -> SqlResultTooLargeError:
    limit = info["limit"]
    what = (
        f"more than {limit:,} rows (max_rows; [sql] max_rows in lakeops.toml)"
        if info["what"] == "rows"
        else f"more than {size_text(limit)} (max_bytes; [sql] max_result_mb in lakeops.toml)"
    )
    return SqlResultTooLargeError(
        f"the result has {what}: add a LIMIT or aggregate, or export it to a file with "
        "lakeops sql \"...\" --output result.parquet (core.sql.export)"
    )


def _error(kind: str, msg: str, limits: Limits) -> LakeopsError:
    if kind == "files":
        return SqlRefusedError(f"refused: {msg} (the SQL console cannot touch files)")
    if kind == "refused":
        return SqlRefusedError(f"refused: {msg}")
    if kind == "timeout":
        return SqlError(f"the query ran longer than {limits.timeout_s:g} s and was stopped")
    if kind == "memory":
        return SqlError(
            f"the query needs more memory than its limit ({limits.memory_limit}, [sql] memory_limit in "
            "lakeops.toml) and console queries do not spill to disk; filter or aggregate more"
        )
    return SqlError(msg)


# ---------------------------------------------------------------------------- public API
def query_arrow(
    lake: Lake,
    sql: str,
    params: Sequence[Any] | None = None,
    *,
    memory_limit: str = Settings.sql_memory_limit,
    threads: int = Settings.sql_threads,
    timeout_s: float = Settings.sql_timeout_s,
    max_rows: int | None = _MAX_ROWS,
    max_bytes: int | None = _MAX_BYTES,
) -> pa.Table:
    """Run one read-only query over the lake and return an Arrow table.

    Args:
        lake: the lake to read.
        sql: one SELECT-shaped statement; ``?`` placeholders take ``params``.
        params: values for the placeholders.
        memory_limit: memory the query may use (DuckDB gets 70 % of it; the worker is stopped
            past all of it).
        threads: DuckDB threads.
        timeout_s: the query is interrupted after this many seconds.
        max_rows: a bigger result is refused (None: no limit); use :func:`export` for it.
        max_bytes: a result of more Arrow bytes is refused (None: no limit).

    Raises:
        SqlRefusedError: the statement writes, touches files, loads extensions or sets options.
        SqlResultTooLargeError: the result is over ``max_rows`` or ``max_bytes``.
        SqlError: DuckDB could not run it (syntax, unknown table or column, timeout, memory).
    """
    batches: list[pa.RecordBatch] = []
    schemas: list[pa.Schema] = []

    def collect(reader: pa.RecordBatchReader) -> None:
        schemas.append(reader.schema)
        batches.extend(reader)

    _run(lake, sql, params, Limits(memory_limit, threads, timeout_s, max_rows, max_bytes), collect)
    return pa.Table.from_batches(batches, schema=schemas[0]) if schemas else pa.table({})


def query(lake: Lake, sql: str, params: Sequence[Any] | None = None, **limits: Any) -> pl.DataFrame:
    """Run one read-only query (see ``query_arrow``) and return a polars frame."""
    import polars as pl

    out = pl.from_arrow(query_arrow(lake, sql, params, **limits))
    assert isinstance(out, pl.DataFrame)
    return out


def export(
    lake: Lake,
    sql: str,
    path: str | os.PathLike[str],
    params: Sequence[Any] | None = None,
    *,
    memory_limit: str = Settings.sql_memory_limit,
    threads: int = Settings.sql_threads,
    timeout_s: float = _EXPORT_TIMEOUT_S,
) -> int:
    """Stream the result of one read-only query to a Parquet or CSV file, with no row limit.

    The file is written as ``<path>.partial`` and renamed when the query has finished, so a
    failed export leaves no half file under ``path``.

    Args:
        lake: the lake to read.
        sql: one SELECT-shaped statement.
        path: ``.parquet`` (or ``.pq``) or ``.csv`` file to write.
        params: values for ``?`` placeholders.
        memory_limit: as for :func:`query_arrow`.
        threads: DuckDB threads.
        timeout_s: the export is stopped after this many seconds.

    Returns:
        The number of rows written.

    Raises:
        SqlError: an unsupported suffix, or the query failed (nothing is left at ``path``).
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise SqlError(f"cannot export to {target.name}: use a .parquet or .csv file name")
    partial = target.with_name(target.name + ".partial")
    writers: list[Any] = []
    rows = 0

    def write(reader: pa.RecordBatchReader) -> None:
        nonlocal rows
        if not writers:
            writers.append(
                pq.ParquetWriter(partial, reader.schema) if suffix != ".csv" else pacsv.CSVWriter(partial, reader.schema)
            )
        for batch in reader:
            writers[0].write_batch(batch)
            rows += batch.num_rows

    try:
        _run(lake, sql, params, Limits(memory_limit, threads, timeout_s, None, None), write)
        for w in writers:
            w.close()
        partial.replace(target)
    except BaseException:
        for w in writers:
            try:
                w.close()
            except (OSError, pa.ArrowException):
                pass
        partial.unlink(missing_ok=True)
        raise
    return rows
