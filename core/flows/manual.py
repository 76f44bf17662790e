"""Running a job by hand: who ran it and why, and which jobs need that said before they run.

The scheduler records itself as ``scheduler:<job>``; a person running a job (``lakeops jobs run``,
the Jobs page's "Run now") is recorded under their own name, so the audit trail tells people
and automation apart. A job that can move a model alias (``retrain`` promotes a version that
passes the gate when the policy allows) runs by hand only with a reason, which the retrain
records in place of the job's generic one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import RegistryError
from core.jobruns import JobRunResult, LeaseState, run_job
from core.lake import Lake

__all__ = ["ALIAS_MOVING_JOBS", "moves_aliases", "outcome", "run_by_hand", "scheduler_actor", "scheduler_notes"]

ALIAS_MOVING_JOBS = frozenset({"retrain"})
"""Built-in jobs whose run can move a model alias (a promotion through the gate)."""


def moves_aliases(job: str) -> bool:
    """Whether running ``job`` can move a model alias (and so needs a reason and a confirmation)."""
    return job in ALIAS_MOVING_JOBS


def scheduler_actor(job: str) -> str:
    """The actor the scheduler records for ``job``'s runs: ``scheduler:<job>``."""
    return f"scheduler:{job}"


def run_by_hand(
    job: str,
    *,
    actor: str | None = None,
    reason: str | None = None,
    lake: Lake,
    settings: Settings,
) -> JobRunResult:
    """Run ``job`` now (trigger ``manual``) on behalf of ``actor``, recorded in ``job_runs``.

    Args:
        job: a job of the catalog (``lakeops jobs list``).
        actor: who runs it (default: the settings' actor); recorded by every change the job makes.
        reason: why; required when the job can move an alias (``moves_aliases``).
        lake: the lake.
        settings: the settings (config sections and the actor).

    Returns:
        The final state of the execution (a failing job is recorded, not raised).

    Raises:
        RegistryError: no reason for a job that can move an alias.
        NotFoundError: no such job.
    """
    why = (reason or "").strip() or None
    if moves_aliases(job) and why is None:
        raise RegistryError(
            f"running {job!r} by hand can promote a new champion: give a reason (it goes into the audit trail)"
        )
    from core.flows import monitor  # imported when used: the scheduler imports this module at start

    who = (actor or "").strip() or settings.actor
    with monitor.stated_reason(why):
        return run_job(job, trigger="manual", lake=lake, settings=settings.with_(actor=who))


def scheduler_notes(holder: LeaseState | None, settings: Settings) -> list[str]:
    """What a list of jobs must add about the running scheduler and its config (one line each).

    Args:
        holder: the scheduler lease's holder (``core.jobruns.current_holder``), None when free.
        settings: this process's settings (its config file is compared with the scheduler's).
    """
    if holder is None:
        return ["no scheduler holds this lake's lease: 'next_run' is empty until one runs ('lakeops scheduler')"]
    info = holder.info or {}
    notes = []
    if info.get("config_error"):
        notes.append(f"the running scheduler could not reload its config ({info['config_error']}); "
                     "it keeps the previous schedule until the file is fixed")
    mine = str(Path(settings.config_path or "lakeops.toml").resolve())
    if info.get("config") and info["config"] != mine:
        notes.append(f"the running scheduler reads {info['config']}, not {mine}: edit that file, or restart it here")
    return notes


def outcome(job: str, outputs_json: str | None, error: str | None = None) -> str:
    """One line saying what a job run did, from its recorded outputs (for tables of runs)."""
    if error:
        return error.splitlines()[0][:200]
    outputs: dict[str, Any] = json.loads(outputs_json) if outputs_json else {}
    models = outputs.get("models")
    if isinstance(models, dict):
        return "; ".join(f"{m}: {_model_outcome(job, o)}" for m, o in models.items()) or "no model with a champion"
    parts = [f"{k} {v}" for k, v in outputs.items() if isinstance(v, int | float | str | bool)]
    return ", ".join(parts)[:200] or "-"


def _model_outcome(job: str, o: Any) -> str:
    if not isinstance(o, dict):
        return str(o)[:80]
    if "promoted" in o or "retrained" in o:
        if o.get("retrained") is False:
            return f"not retrained ({o.get('why', 'not needed')})"
        gate = "gate passed" if o.get("gate_passed") else "gate FAILED"
        return f"v{o.get('version')} trained, {gate}, " + ("promoted" if o.get("promoted") else "not promoted")
    if "drifted" in o:
        if o.get("status") != "ok":
            return f"no verdict ({o.get('window_rows', 0)} predictions)"
        alert = f", alert {o['alert']}" if o.get("alert") else ""
        return ("DRIFT" if o.get("drifted") else "no drift") + alert
    if "degraded" in o:
        if o.get("degraded") is None:
            return f"no verdict ({o.get('labelled', 0)} labels)"
        value = o.get("value")
        shown = f"{value:.4g}" if isinstance(value, int | float) else value
        return f"{o.get('metric')} {shown} " + ("DEGRADED" if o.get("degraded") else "ok") + (
            f", alert {o['alert']}" if o.get("alert") else "")
    return ", ".join(f"{k} {v}" for k, v in o.items() if isinstance(v, int | float | str | bool))[:120]
