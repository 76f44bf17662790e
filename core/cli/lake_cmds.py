"""``lakeops sql``, ``lakeops tables``, ``lakeops history`` and ``lakeops maintain``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import polars as pl

from core.cli._common import emit_frame, open_lake, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the lake subcommands to ``sub``."""
    p = sub.add_parser("sql", help="run a read-only SQL query over the lake (DuckDB)")
    p.add_argument("query", help="one SELECT query, e.g. \"select count(*) from predictions\"")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="stream the whole result to a .parquet or .csv file instead (no row or size limit)",
    )
    p.set_defaults(handler=_sql)

    p = sub.add_parser("tables", help="list the lake's tables with their versions")
    p.set_defaults(handler=_tables)

    p = sub.add_parser("history", help="show a table's commit history (with commit metadata)")
    p.add_argument("table", help="table name, e.g. runs or data/churn")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=_history)

    p = sub.add_parser("maintain", help="compact, checkpoint and vacuum lake tables")
    p.add_argument("tables", nargs="*", help="tables to maintain (default: all)")
    p.add_argument("--retention-hours", type=int, default=168)
    p.set_defaults(handler=_maintain)


def _sql(args: argparse.Namespace) -> None:
    from core.sql import export, query

    settings = settings_from(args)
    lake = open_lake(args)
    if args.output:
        # an export may run longer than a console query: ten times the console's time limit
        rows = export(lake, args.query, args.output, timeout_s=settings.sql_timeout_s * 10,
                      memory_limit=settings.sql_memory_limit, threads=settings.sql_threads)
        sys.stdout.write(f"wrote {rows:,} rows to {args.output}\n")
        return
    frame = query(
        lake,
        args.query,
        timeout_s=settings.sql_timeout_s,
        max_rows=settings.sql_max_rows,
        max_bytes=int(settings.sql_max_result_mb * 1e6),
        memory_limit=settings.sql_memory_limit,
        threads=settings.sql_threads,
    )
    emit_frame(frame, args.format)


def _tables(args: argparse.Namespace) -> None:
    from core.sql import view_name

    lake = open_lake(args)
    rows = [
        {"table": t, "sql_name": view_name(t), "version": lake.version(t), "files": lake.file_count(t)}
        for t in lake.tables()
    ]
    emit_frame(pl.DataFrame(rows, schema={"table": pl.String, "sql_name": pl.String, "version": pl.Int64, "files": pl.Int64}))


def _history(args: argparse.Namespace) -> None:
    import json

    lake = open_lake(args)
    rows = []
    for h in lake.history(args.table, args.limit):
        meta = {k: v for k, v in h.items() if k not in {"timestamp", "operation", "operationParameters", "engineInfo", "clientVersion", "operationMetrics", "version"}}
        rows.append(
            {
                "version": h.get("version"),
                "timestamp": h.get("timestamp"),
                "operation": h.get("operation"),
                "rows_added": (h.get("operationMetrics") or {}).get("num_added_rows"),
                "metadata": json.dumps(meta, default=str) if meta else "",
            }
        )
    frame = pl.DataFrame(rows).with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC"))
    emit_frame(frame)


def _maintain(args: argparse.Namespace) -> None:
    lake = open_lake(args)
    reports = lake.maintain(args.tables or None, retention_hours=args.retention_hours)
    for r in reports:
        sys.stdout.write(
            f"{r.table}: files {r.files_before} -> {r.files_after}, vacuumed {r.vacuumed}, "
            f"staging removed {r.staging_removed}, version {r.version}\n"
        )
