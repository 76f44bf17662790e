"""APScheduler definitions of the jobs: the triggers for each job of the ``core.jobruns`` catalog.

The job bodies are not here: each job is a ``core`` function named in the catalog
(``core.jobruns.job_specs``), so ``lakeops jobs run NAME``, the Jobs page's "run now" and this
scheduler all run the same code through ``core.jobruns.run_job`` (and ``core`` never imports
``jobs``). This module only turns a job's schedule into APScheduler triggers.
"""

from __future__ import annotations

from datetime import UTC

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.errors import ConfigError
from core.jobruns import JobSpec

__all__ = ["alert_poll_trigger", "triggers"]


def triggers(spec: JobSpec) -> list[BaseTrigger]:
    """Return the triggers of ``spec``: an interval trigger and/or a cron trigger (UTC).

    Raises:
        ConfigError: the crontab line is not valid for APScheduler (the message names the job).
    """
    out: list[BaseTrigger] = []
    if spec.interval_s:
        out.append(IntervalTrigger(seconds=spec.interval_s, timezone=UTC))
    if spec.cron:
        try:
            out.append(CronTrigger.from_crontab(spec.cron, timezone=UTC))
        except ValueError as exc:
            raise ConfigError(f"[jobs.{spec.name}] cron {spec.cron!r} is invalid: {exc}") from None
    return out


def alert_poll_trigger(seconds: float) -> BaseTrigger:
    """The trigger of the alert poll that starts ``on_alert`` jobs."""
    return IntervalTrigger(seconds=seconds, timezone=UTC)
