"""Running a job by hand: who ran it and why, and which jobs need that said before they run.

The scheduler records itself as ``scheduler:<job>``; a person running a job (``lakeops jobs run``,
the Jobs page's "Run now") is recorded under their own name, so the audit trail tells people
and automation apart. A job that can move a model alias (``retrain`` promotes a version that
passes the gate when the policy allows) runs by hand only with a reason, which the retrain
records in place of the job's generic one.
"""

from __future__ import annotations

from core.config import Settings, load_settings
from core.errors import RegistryError
from core.jobruns import JobRunResult, run_job
from core.lake import Lake

__all__ = ["ALIAS_MOVING_JOBS", "moves_aliases", "run_by_hand", "scheduler_actor"]

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
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> JobRunResult:
    """Run ``job`` now (trigger ``manual``) on behalf of ``actor``, recorded in ``job_runs``.

    Args:
        job: a job of the catalog (``lakeops jobs list``).
        actor: who runs it (default: the settings' actor); recorded by every change the job makes.
        reason: why; required when the job can move an alias (``moves_aliases``).
        lake: the lake (default: from settings).
        settings: settings (default: from the environment).

    Returns:
        The final state of the execution (a failing job is recorded, not raised).

    Raises:
        RegistryError: no reason for a job that can move an alias.
        NotFoundError: no such job.
    """
    settings = settings or load_settings()
    why = (reason or "").strip() or None
    if moves_aliases(job) and why is None:
        raise RegistryError(
            f"running {job!r} by hand can promote a new champion: give a reason (it goes into the audit trail)"
        )
    from core.flows import monitor  # imported when used: the scheduler imports this module at start

    who = (actor or "").strip() or settings.actor
    with monitor.stated_reason(why):
        return run_job(job, trigger="manual", lake=lake, settings=settings.with_(actor=who))
