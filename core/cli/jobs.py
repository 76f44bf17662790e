"""``lakeops scheduler`` and ``lakeops jobs list|run NAME|history``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any, NoReturn

from core.cli._common import emit_frame, open_lake, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the scheduler and jobs subcommands to ``sub``."""
    p = sub.add_parser("scheduler", help="run the job scheduler for the lake (one per lake; waits for the lease)")
    p.set_defaults(handler=_scheduler)

    jobs = sub.add_parser("jobs", help="list, run and inspect scheduled jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    jobs.set_defaults(handler=lambda _args: jobs.print_help() or 2)

    p = jsub.add_parser("list", help="jobs with their schedule, next run and last status")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_list)

    p = jsub.add_parser("run", help="run one job now in this process (recorded with trigger 'manual')")
    p.add_argument("name", help="job name, e.g. maintenance (see 'lakeops jobs list')")
    p.add_argument("--reason", help="why; required for jobs that can move an alias (retrain)")
    p.set_defaults(handler=_run)

    p = jsub.add_parser("history", help="past executions, newest first")
    p.add_argument("--job", help="only this job")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_history)


def _scheduler(args: argparse.Namespace) -> NoReturn:
    # Processes, not imports, cross the top: core never imports jobs, so become `python -m jobs`.
    settings = settings_from(args)
    argv = [sys.executable, "-m", "jobs", "--lake", settings.lake_uri]
    if settings.config_path:
        argv += ["--config", settings.config_path]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and module


def _list(args: argparse.Namespace) -> None:
    from core.flows.manual import scheduler_notes
    from core.jobruns import current_holder, list_jobs

    lake, settings = open_lake(args), settings_from(args)
    emit_frame(list_jobs(lake=lake, settings=settings).drop("description"), args.format)
    for line in scheduler_notes(current_holder(lake=lake), settings):
        sys.stderr.write(f"note: {line}\n")


def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace) -> int:
    from core.flows.manual import run_by_hand

    # SIGTERM ends the job like Ctrl-C does (its record is closed as interrupted), exit 143
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        result = run_by_hand(args.name, reason=args.reason, lake=open_lake(args, create=True), settings=settings_from(args))
    except SystemExit as exc:
        sys.stderr.write(f"lakeops: job {args.name} interrupted by SIGTERM (recorded as interrupted)\n")
        return int(exc.code or 143)
    finally:
        signal.signal(signal.SIGTERM, previous)
    took = (result.ended_at - result.started_at).total_seconds() if result.ended_at else 0.0
    sys.stdout.write(f"job {result.job} {result.status} in {took:.2f}s (run {result.job_run_id})\n")
    if result.outputs:
        sys.stdout.write(json.dumps(result.outputs, indent=2, default=str) + "\n")
    if result.status != "finished":
        sys.stderr.write(f"lakeops: job {result.job} failed: {result.error}\n")
        return 1
    return 0


def _history(args: argparse.Namespace) -> None:
    from core.jobruns import history

    frame = history(args.job, lake=open_lake(args), limit=args.limit)
    emit_frame(frame.drop("outputs_json") if args.format == "table" else frame, args.format)
