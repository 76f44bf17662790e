"""Experiment tracking: runs with lineage, params, step metrics, tags and artifacts, logged through a buffered group-commit writer.

Usage (MLflow-like)::

    with tracking.start_run(experiment="churn", name="baseline", dataset=("churn", 3), seed=7, lake=lake) as run:
        run.log_params({"num_leaves": 31})
        for step in range(100):
            run.log_metrics({"train_loss": ..., "valid_loss": ...}, step=step)
        run.log_artifact("model/model.txt", data=text.encode())

Durability (read this): a Delta commit costs ~12-30 ms and the machine manages ~13-19 commits/s,
so lakeops never commits per call nor per run. Every log call (and each run's start and end
row) goes into one in-memory buffer per lake, shared by all runs of the process. A background
writer commits that buffer as ONE append per table (params, tags, metrics, artifacts, then
runs) whenever it holds ``FLUSH_POINTS`` values or its oldest value is ``FLUSH_INTERVAL_S`` old.
So a finished ``with`` block is durable at the latest ``FLUSH_INTERVAL_S`` later, and right
away after ``run.flush()`` / ``tracking.flush()`` (or ``start_run(..., sync=True)``). Runs that
fail or are killed flush before the exception propagates; the process flushes at exit (atexit).
Reads in this process (``get_run``, ``search_runs`` ...) flush first, so they always see the
process's own writes. A crash (SIGKILL) loses at most the unflushed buffer, never a committed
row; a failed commit keeps its rows buffered and is retried. This is MLflow's asynchronous
logging model (``log_*(..., synchronous=False)`` + ``flush_async_logging()``), made the default
because it is what makes hundreds of runs per second possible.

Tables (append-only): ``runs`` has one row when a run starts and one when it ends (state = the
latest row per run_id: the SQL view ``runs``; the raw rows are ``runs_history``); ``params``,
``tags``, ``metrics`` (with step) and ``artifacts`` have one row per value. Artifacts are files
under ``artifacts/runs/<run_id>/<path>`` in the lake, recorded with their sha256. SQL also has
``metrics_latest``, ``runs_wide`` (``metrics['auc']``, ``params['num_leaves']`` maps) and
``artifacts``. ``search_runs`` also takes MLflow's keyword names ``filter_string`` and
``experiment_names``.
Note: ``os._exit`` (as the ``lakeops`` CLI uses) skips atexit: call ``tracking.flush()`` first.

Package layout: ``_writer`` (buffer + group commit; ``FLUSH_INTERVAL_S``/``FLUSH_POINTS``
live there), ``_runs`` (``start_run``, ``Run``, lineage), ``_reads`` (``get_run``,
``search_runs`` over a cached pivot ...), ``search`` (the MLflow filter grammar).
"""

from core.tracking._reads import (
    RunInfo,
    compare_runs,
    experiments,
    get_run,
    list_artifacts,
    metric_history,
    read_artifact,
    runs_frame,
    search_runs,
)
from core.tracking._runs import Run, active_run, start_run
from core.tracking._writer import flush
from core.tracking.search import SearchSyntaxError

__all__ = [
    "Run",
    "RunInfo",
    "SearchSyntaxError",
    "active_run",
    "compare_runs",
    "experiments",
    "flush",
    "get_run",
    "list_artifacts",
    "metric_history",
    "read_artifact",
    "runs_frame",
    "search_runs",
    "start_run",
]
