"""The ``lakeops`` command: one subcommand module per area, each with a ``register`` function.

Every handler reads its input, calls ``core`` once, and renders. A ``LakeopsError`` (or bad
arguments) prints one line on stderr and exits 2. The process ends with ``os._exit`` after
flushing, because deltalake's native threads sometimes abort the interpreter at exit (code 134,
LAKE-FACTS) after all work is done, which would turn a success into a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from core.cli._common import CliParser, run_handler

__all__ = ["main"]

# Each module registers its subcommands; order is the order in ``lakeops --help``.
_MODULES = (
    "core.cli.stack",
    "core.cli.lake_cmds",
    "core.cli.data",
    "core.cli.runs",
    "core.cli.models",
    "core.cli.serve",
    "core.cli.jobs",
    "core.cli.monitor",
    "core.cli.demo",
    "core.cli.auth_cmds",
    "core.cli.features",
    "core.cli.score",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lakeops")
    except PackageNotFoundError:  # running from a checkout that was not pip-installed
        return "(not installed)"


def build_parser() -> CliParser:
    """Return the full ``lakeops`` argument parser."""
    import importlib

    parser = CliParser(
        prog="lakeops",
        description="lakeops: datasets, experiments, registry, serving and monitoring on a Delta lake.",
    )
    parser.add_argument("--version", action="version", version=f"lakeops {_version()}")
    parser.add_argument("--lake", help="lake root URI (default: $LAKEOPS_LAKE or data/lake)")
    parser.add_argument("--config", help="lakeops.toml to read (default: ./lakeops.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # an area not built yet
        module.register(sub)
    _add_common(sub)
    return parser


def _add_common(sub: argparse._SubParsersAction[CliParser]) -> None:
    """Let ``--lake``/``--config`` also follow the subcommand (``lakeops sql --lake X ...``)."""
    for child in set(sub.choices.values()):
        if "--lake" not in child._option_string_actions:
            child.add_argument("--lake", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            child.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in child._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_common(action)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``lakeops`` and end the process with its exit code."""
    code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return the exit code (no process exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return run_handler(args)
