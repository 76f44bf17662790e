"""``lakeops demo export``: the demo scenario's data as a file, for the README walkthrough."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``lakeops demo ...`` to ``sub``."""
    demo = sub.add_parser("demo", help="the demo scenario's data as files")
    dsub = demo.add_subparsers(dest="demo_command", metavar="ACTION")
    p = dsub.add_parser(
        "export", help="write a month of new churn customers (after the marketing campaign) as CSV or Parquet"
    )
    p.add_argument("path", help="file to write: .csv or .parquet")
    p.add_argument("--rows", type=int, default=5000, help="customers (default 5000)")
    p.add_argument("--days", type=int, default=30, help="signup period in days, ending now (default 30)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    p.set_defaults(handler=_export)
    demo.set_defaults(handler=lambda _args: (demo.print_help(), 2)[1])


def _export(args: argparse.Namespace) -> int:
    from core import demo

    path = Path(args.path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{path}: the file name must end in .csv or .parquet")
    if path.exists() and not args.overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it")
    if args.rows < 1 or args.days < 1:
        raise ConfigError(f"--rows and --days must be >= 1, got {args.rows} and {args.days}")
    frame = demo.new_customers(args.rows, seed=args.seed, days=args.days)
    if path.suffix.lower() == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    first, last = frame[demo.TIME_COLUMN].min(), frame[demo.TIME_COLUMN].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)  # signup times of >= 1 customer
    sys.stdout.write(
        f"wrote {frame.height:,} customers who signed up {first:%Y-%m-%d} to {last:%Y-%m-%d} (UTC), during the "
        f"marketing campaign, with their churn label, to {path}\n"
    )
    return 0
