"""``lakeops data ingest|list|show|diff|quarantine``: versioned datasets from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.cli._common import emit_frame, open_lake, render_table, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``data`` subcommands to ``sub``."""
    data = sub.add_parser("data", help="versioned datasets: ingest, list, show, diff, quarantine")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")

    p = dsub.add_parser("ingest", help="validate a CSV/Parquet file and commit it as a new dataset version")
    p.add_argument("name", help="dataset name, e.g. churn")
    p.add_argument("path", help="a .csv, .tsv or .parquet file")
    p.add_argument("--mode", choices=["append", "replace"], default="append")
    p.add_argument("--spec", help="TOML file of declared rules (default: [datasets.NAME] in lakeops.toml)")
    p.add_argument("--delimiter", help="CSV field separator (default: ',' or tab for .tsv)")
    p.add_argument("--no-validate", action="store_true", help="skip validation (not recommended)")
    p.set_defaults(handler=_ingest)

    p = dsub.add_parser("list", help="list datasets with their latest version")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_list)

    p = dsub.add_parser("show", help="show a version: rows, hash, validation, profile summary")
    p.add_argument("name", help="dataset name, e.g. churn (see 'lakeops data list')")
    p.add_argument("--version", type=int, help="dataset version (default: latest)")
    p.add_argument("--versions", action="store_true", help="list every version instead")
    p.set_defaults(handler=_show)

    p = dsub.add_parser("diff", help="compare two versions: rows added/removed, schema, distributions")
    p.add_argument("name", help="dataset name, e.g. churn")
    p.add_argument("a", type=int, help="older version")
    p.add_argument("b", type=int, help="newer version")
    p.set_defaults(handler=_diff)

    p = dsub.add_parser("quarantine", help="list batches refused by validation, or show one report")
    p.add_argument("name", nargs="?", help="dataset name (default: all)")
    p.add_argument("--id", help="show the report of this quarantined batch")
    p.set_defaults(handler=_quarantine)

    data.set_defaults(handler=lambda args: (data.print_help(), 2)[1])


def _ingest(args: argparse.Namespace) -> int:
    from core.datasets import ingest

    settings = settings_from(args)
    lake = open_lake(args, create=True)
    dv = ingest(
        args.name,
        args.path,
        mode=args.mode,
        lake=lake,
        actor=settings.actor,
        spec=args.spec,
        settings=settings,
        separator=args.delimiter,
        validate=not args.no_validate,
    )
    out = sys.stdout
    out.write(
        f"dataset {dv.name}: version {dv.version} ({dv.rows:,} rows {args.mode}ed, {dv.total_rows:,} in total), "
        f"validation {dv.validation_status}, hash {dv.content_hash[:12]}\n"
    )
    for line in dv.warnings:
        out.write(f"  {line}\n")
    return 0


def _list(args: argparse.Namespace) -> None:
    from core.datasets import list_datasets

    emit_frame(list_datasets(lake=open_lake(args)), args.format)


def _show(args: argparse.Namespace) -> None:
    import polars as pl

    from core.datasets import describe, versions
    from core.profiling import summary_frame

    lake = open_lake(args)
    if args.versions:
        frame = versions(args.name, lake=lake).select(
            "version", "created_at", "mode", "rows", "total_rows", "validation_status",
            pl.col("content_hash").str.slice(0, 12).alias("hash"), "created_by", "source",
        )
        emit_frame(frame)
        return
    info = describe(args.name, args.version, lake=lake)
    report = info["report"]
    out = sys.stdout
    out.write(
        f"dataset {args.name} version {info['version']}  ({info['mode']} of {info['rows']:,} rows; "
        f"{info['total_rows']:,} rows in total)\n"
        f"created  {info['created_at']:%Y-%m-%d %H:%M:%S} UTC by {info['created_by'] or '-'} from {info['source'] or '-'}\n"
        f"hash     {info['content_hash']}\n"
        f"validation {info['validation_status']}"
        + (f" (reference version {report.reference_version})" if report.reference_version is not None else "")
        + "\n"
    )
    for r in report.errors + report.warnings:
        out.write(f"  {r.line()}\n")
    out.write("\nprofile\n" + render_table(summary_frame(info["profile"])) + "\n")


def _diff(args: argparse.Namespace) -> None:
    import polars as pl

    from core.datasets import diff

    d = diff(args.name, args.a, args.b, lake=open_lake(args))
    out = sys.stdout
    out.write(
        f"dataset {d.name}: version {d.a} ({d.rows_a:,} rows) -> version {d.b} ({d.rows_b:,} rows)\n"
        f"rows added {d.added:,}, removed {d.removed:,} (by content)\n"
    )
    if d.schema_changes:
        out.write("schema changes\n")
        for c in d.schema_changes:
            out.write(f"  {c['column']}: {c['change']} ({c['a'] or '-'} -> {c['b'] or '-'})\n")
    else:
        out.write("schema unchanged\n")
    cols = d.columns.with_columns(pl.col("psi").round(4)).sort("psi", descending=True, nulls_last=True)
    out.write("\ndistribution change (PSI of b on a's bins)\n" + render_table(cols) + "\n")


def _quarantine(args: argparse.Namespace) -> int:
    import polars as pl

    from core.datasets import quarantined
    from core.errors import NotFoundError
    from core.validation import ValidationReport

    frame = quarantined(args.name, lake=open_lake(args))
    if args.id:
        hit = frame.filter(pl.col("quarantine_id") == args.id)
        if hit.height == 0:
            raise NotFoundError(f"no quarantined batch {args.id!r} (see 'lakeops data quarantine')")
        row = hit.row(0, named=True)
        report = ValidationReport.from_dict(json.loads(row["validation_json"] or "{}"))
        sys.stdout.write(
            f"quarantine {row['quarantine_id']}: dataset {row['dataset']}, {row['rows']:,} rows from "
            f"{row['source'] or '-'} at {row['at']:%Y-%m-%d %H:%M:%S} UTC, kept at {row['path']}\n"
        )
        for r in report.errors + report.warnings:
            sys.stdout.write(f"  {r.line()}\n")
        return 0
    emit_frame(frame.select("quarantine_id", "dataset", "at", "rows", "source", "created_by", "path"))
    return 0
