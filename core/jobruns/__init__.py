"""Job-run records, the job catalog with ``run_job``, and the one-scheduler-per-lake lease.

* ``records``: every execution is two ``job_runs`` rows with one ``job_run_id`` (``running``,
  then ``finished``/``failed``/``interrupted``/``abandoned``); the latest row is its state.
* ``lease``: ``Lease(lake, name="scheduler", holder=..., ttl_s=30)``: epochs decided by a
  compare-and-swap on the Delta log of the ``leases`` table, renewals by a heartbeat object per
  epoch (its docstring gives the design and why it is safe locally and on S3).
* ``catalog``: the jobs as data (name -> ``core`` function + schedule) and ``run_job``, shared by
  ``lakeops jobs run``, the Jobs page and the scheduler process (``jobs/``, APScheduler).
* ``builtin``: drift check, performance check, retrain, maintenance, compaction of hot tables.
"""

from core.jobruns.builtin import maintain_lake, pending_alerts
from core.jobruns.catalog import JobSpec, job_specs, jobs_config, list_jobs, run_job
from core.jobruns.lease import Lease, LeaseState, current_holder
from core.jobruns.records import JobRunResult, abandon_stale, finish_run, history, start_run

__all__ = [
    "JobRunResult",
    "JobSpec",
    "Lease",
    "LeaseState",
    "abandon_stale",
    "current_holder",
    "finish_run",
    "history",
    "job_specs",
    "jobs_config",
    "list_jobs",
    "maintain_lake",
    "pending_alerts",
    "run_job",
    "start_run",
]
