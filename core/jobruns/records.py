"""Job-run records: each execution is a ``running`` row, then a final row, in ``job_runs``."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from core.errors import LakeopsError
from core.ids import new_id, utcnow
from core.lake import Lake

__all__ = ["FINAL_STATUSES", "JobRunResult", "abandon_stale", "finish_run", "history", "start_run"]

_TABLE = "job_runs"
_FINAL = ("finished", "failed", "interrupted", "abandoned")
FINAL_STATUSES = _FINAL
_HOST = socket.gethostname()


@dataclass(frozen=True)
class JobRunResult:
    """One job execution: its id, status, error and outputs."""

    job_run_id: str
    job: str
    trigger: str
    status: str
    started_at: datetime
    ended_at: datetime | None = None
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def start_run(job: str, trigger: str, *, lake: Lake) -> JobRunResult:
    """Append the ``running`` row of a new execution of ``job`` and return it."""
    run = JobRunResult(new_id(), job, trigger, "running", utcnow())
    lake.append(_TABLE, [_row(run)], metadata={"job": job, "trigger": trigger, "status": "running"})
    return run


def finish_run(
    run: JobRunResult,
    status: str,
    *,
    error: str | None = None,
    outputs: Mapping[str, Any] | None = None,
    lake: Lake,
) -> JobRunResult:
    """Append the final row (``finished``, ``failed``, ``interrupted``, ``abandoned``) of ``run``."""
    if status not in _FINAL:
        raise LakeopsError(f"job run status {status!r} is not final: use one of {', '.join(_FINAL)}")
    done = JobRunResult(run.job_run_id, run.job, run.trigger, status, run.started_at, utcnow(), error, dict(outputs or {}))
    lake.append(_TABLE, [_row(done)], metadata={"job": run.job, "trigger": run.trigger, "status": status})
    return done


def _row(run: JobRunResult) -> dict[str, Any]:
    return {
        "job_run_id": run.job_run_id,
        "job": run.job,
        "trigger": run.trigger,
        "status": run.status,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "error": run.error,
        "outputs_json": json.dumps(run.outputs, default=str) if run.outputs else None,
        "host": _HOST,
        "pid": os.getpid(),
        "at": utcnow(),
    }


def history(job: str | None = None, *, lake: Lake, limit: int | None = None) -> pl.DataFrame:
    """Return one row per execution (its latest state), newest first, with ``duration_s``.

    Args:
        job: only this job's executions.
        lake: the lake.
        limit: at most this many rows.
    """
    frame = lake.read_or_empty(_TABLE)
    if job is not None:
        frame = frame.filter(pl.col("job") == job)
    out = (
        frame.sort("at")
        .group_by("job_run_id", maintain_order=True)
        .last()
        .with_columns(((pl.col("ended_at") - pl.col("started_at")).dt.total_microseconds() / 1e6).alias("duration_s"))
        .sort("started_at", descending=True, nulls_last=True)
        .select("job_run_id", "job", "trigger", "status", "started_at", "ended_at", "duration_s", "error", "outputs_json", "host", "pid")
    )
    return out.head(limit) if limit is not None else out


def abandon_stale(*, lake: Lake, mine: bool = False, reason: str | None = None) -> int:
    """Close executions still ``running`` whose process will never close them.

    Args:
        lake: the lake.
        mine: False (a scheduler that just took the lease): close other processes' scheduled
            executions (trigger ``schedule``/``alert``) as ``abandoned``, and any execution
            (manual ones too) whose process on this host is gone; True (a scheduler stopping
            before its jobs finished): close this process's scheduled executions as
            ``interrupted``.
        reason: the error text recorded.

    Returns:
        How many executions were closed.

    A manual execution started on another host is left alone: whether its process still runs
    cannot be known from here.
    """
    me = (pl.col("pid") == os.getpid()) & (pl.col("host") == _HOST)
    running = history(lake=lake).filter(pl.col("status") == "running")
    scheduled = pl.col("trigger").is_in(["schedule", "alert"])
    if mine:
        runs = running.filter(scheduled & me)
    else:
        others = running.filter(~me)
        dead = [
            r["job_run_id"]
            for r in others.filter(~scheduled & (pl.col("host") == _HOST)).iter_rows(named=True)
            if r["pid"] is not None and not _process_alive(int(r["pid"]), r["started_at"])
        ]
        runs = others.filter(scheduled | pl.col("job_run_id").is_in(dead))
    status = "interrupted" if mine else "abandoned"
    now = utcnow()
    rows = []
    for r in runs.iter_rows(named=True):
        why = reason or (
            "the scheduler stopped before the job finished"
            if mine
            else "the scheduler running it died"
            if r["trigger"] in ("schedule", "alert")
            else f"the process running it (pid {r['pid']} on {r['host']}) ended without recording an outcome"
        )
        rows.append(_row(JobRunResult(r["job_run_id"], r["job"], r["trigger"], status, r["started_at"], now, why)))
    if rows:
        lake.append(_TABLE, rows, metadata={"status": status, "count": len(rows)})
    return len(rows)


def _process_alive(pid: int, started_at: datetime | None) -> bool:
    """Is process ``pid`` of this host still the one that started a run at ``started_at``?

    A pid is reused after its process ends: a process with that pid that started after the run
    did is another one. Where ``/proc`` cannot tell, a running pid counts as alive.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if started_at is None:
        return True
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    began = boot + ticks / os.sysconf("SC_CLK_TCK")
    return began <= started_at.timestamp() + 1.0  # btime has one-second resolution
