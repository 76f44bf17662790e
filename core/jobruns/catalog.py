"""The job catalog (name -> dotted path of a ``core`` function + schedule) and ``run_job``.

The jobs are data here, so the CLI, the Jobs page and the scheduler process run the very same
code through :func:`run_job`, and ``core`` never imports ``jobs/`` (which only wires APScheduler
to this catalog). Built-in targets are in ``core.jobruns.builtin``; ``[jobs.extra.NAME] func =
"pkg.mod:fn"`` adds more. A target is called with the keywords it accepts among ``lake``,
``settings``, ``trigger`` and its ``args`` table, and returns a JSON-able dict (the outputs).

``lakeops.toml``::

    [jobs]                      # scheduler-wide (all optional)
    enabled = true              # false: the scheduler idles
    lease_ttl_s = 30            # lease expiry; renewed every ttl/3
    alert_poll_s = 30           # how often on_alert jobs look for new alerts
    misfire_grace_s = 600       # a run missed by less than this still runs (once: coalesced)
    stop_grace_s = 20           # on SIGTERM, running jobs get this long before "interrupted"
    workers = 2                 # jobs that may run at once (each job: one at a time)
    alert_kinds = ["drift", "performance"]
    alert_recheck_s = 600       # an alert still open re-triggers its on_alert jobs this often

    [jobs.drift_check]          # per job: enabled, interval_s and/or cron (UTC), on_alert, args
    interval_s = 900            # default 300 (drift and performance checks cost well under a second)
    args = { window_hours = 24 }

    [jobs.compact]              # default every 300 s: tables with >= 50 files under 8 MB
    args = { min_small_files = 50 }

    [jobs.extra.myjob]
    func = "mypkg.jobs:myjob"
    cron = "0 * * * *"
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from importlib import import_module
from typing import Any

import polars as pl

from core.config import Settings
from core.errors import ConfigError, NotFoundError
from core.jobruns.lease import current_holder
from core.jobruns.records import JobRunResult, finish_run, history, start_run
from core.lake import Lake

__all__ = ["JobSpec", "job_specs", "jobs_config", "jsonable", "list_jobs", "run_job"]


@dataclass(frozen=True)
class JobSpec:
    """A job: what it calls and when.

    Attributes:
        name: job name (``drift_check``...).
        func: dotted path ``"package.module:function"`` of the target.
        enabled: scheduled by the scheduler (a disabled job still runs with ``jobs run``).
        interval_s: run every this many seconds (or None).
        cron: run on this 5-field crontab line, UTC (or None).
        on_alert: also run (trigger ``alert``) when a new drift/performance alert appears.
        args: keyword arguments for the target.
        description: one line for ``jobs list``.
    """

    name: str
    func: str
    enabled: bool = True
    interval_s: float | None = None
    cron: str | None = None
    on_alert: bool = False
    args: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def schedule(self) -> str:
        """The schedule in words: ``every 3600s``, ``cron 30 2 * * *``, ``on alert``, ``manual``."""
        parts = []
        if self.interval_s:
            parts.append(f"every {self.interval_s:g}s")
        if self.cron:
            parts.append(f"cron {self.cron}")
        if self.on_alert:
            parts.append("on alert")
        return " + ".join(parts) or "manual"


_BUILTIN: dict[str, dict[str, Any]] = {
    "drift_check": {"func": "core.jobruns.builtin:drift_check", "interval_s": 300.0,
                    "description": "drift of each champion's recent predictions vs its training data"},
    "performance_check": {"func": "core.jobruns.builtin:performance_check", "interval_s": 300.0,
                          "description": "each champion's metrics on labelled predictions vs its gate"},
    "retrain": {"func": "core.jobruns.builtin:retrain", "on_alert": True,
                "description": "retrain, gate and maybe promote (on a drift/performance alert)"},
    "rollout": {"func": "core.jobruns.builtin:rollout", "interval_s": 120.0,
                "description": "live gate of each staged challenger: promote, withdraw or wait"},
    "features_materialize": {"func": "core.features.online:materialize_all", "interval_s": 300.0,
                             "description": "online feature values of each view version in use (incremental)"},
    "maintenance": {"func": "core.jobruns.builtin:maintain_lake", "cron": "30 2 * * *",
                    "description": "compact, checkpoint and vacuum every table (keeps training snapshots)"},
    "compact": {"func": "core.jobruns.builtin:compact_hot", "interval_s": 300.0,
                "description": "merge the small files of tables written in many commits (no vacuum)"},
}
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "enabled": True, "lease_ttl_s": 30.0, "alert_poll_s": 30.0, "misfire_grace_s": 600.0,
    "stop_grace_s": 20.0, "workers": 2, "alert_kinds": ["drift", "performance"], "alert_recheck_s": 600.0,
}
_JOB_KEYS = {"func", "enabled", "interval_s", "cron", "on_alert", "args", "description"}


def jobs_config(settings: Settings) -> dict[str, Any]:
    """Return the scheduler-wide ``[jobs]`` settings (lease_ttl_s, alert_poll_s, ...) with defaults."""
    section = settings.section("jobs")
    out = dict(_GLOBAL_DEFAULTS)
    for key, value in section.items():
        if isinstance(value, Mapping):
            continue
        if key not in _GLOBAL_DEFAULTS:
            raise ConfigError(f"[jobs] {key} is not a setting; known: {', '.join(sorted(_GLOBAL_DEFAULTS))}")
        out[key] = value
    for key in ("lease_ttl_s", "alert_poll_s", "alert_recheck_s", "misfire_grace_s", "stop_grace_s", "workers"):
        if not isinstance(out[key], int | float) or out[key] <= 0:
            raise ConfigError(f"[jobs] {key} must be a positive number, got {out[key]!r}")
    return out


def job_specs(settings: Settings) -> dict[str, JobSpec]:
    """Return every job (built-ins with their ``[jobs.NAME]`` overrides, then ``[jobs.extra.NAME]``).

    Raises:
        ConfigError: a key or value in the ``[jobs]`` section is invalid (the message names it).
    """
    section = settings.section("jobs")
    extra = section.get("extra", {})
    if not isinstance(extra, Mapping):
        raise ConfigError("[jobs.extra] must be a table of jobs: [jobs.extra.NAME] func = \"pkg.mod:fn\"")
    specs: dict[str, JobSpec] = {}
    for name, base in _BUILTIN.items():
        specs[name] = _spec(f"jobs.{name}", name, {**base, **_table(section.get(name, {}), f"jobs.{name}")})
    for name, conf in extra.items():
        conf = _table(conf, f"jobs.extra.{name}")
        if name in specs:
            raise ConfigError(f"[jobs.extra.{name}]: {name!r} is a built-in job; configure it in [jobs.{name}]")
        if "func" not in conf:
            raise ConfigError(f"[jobs.extra.{name}] needs func = \"package.module:function\"")
        specs[name] = _spec(f"jobs.extra.{name}", name, conf)
    return specs


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(value).__name__}")
    unknown = set(value) - _JOB_KEYS
    if unknown:
        raise ConfigError(f"[{where}] has unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_JOB_KEYS))}")
    return dict(value)


def _spec(where: str, name: str, conf: dict[str, Any]) -> JobSpec:
    func = conf["func"]
    if not isinstance(func, str) or ":" not in func:
        raise ConfigError(f"[{where}] func must be \"package.module:function\", got {func!r}")
    interval = conf.get("interval_s")
    if interval is not None and (not isinstance(interval, int | float) or interval <= 0):
        raise ConfigError(f"[{where}] interval_s must be a positive number of seconds, got {interval!r}")
    cron = conf.get("cron")
    if cron is not None and (not isinstance(cron, str) or len(cron.split()) != 5):
        raise ConfigError(f"[{where}] cron must be a 5-field crontab line such as \"30 2 * * *\", got {cron!r}")
    args = conf.get("args", {})
    if not isinstance(args, Mapping):
        raise ConfigError(f"[{where}] args must be a table of keyword arguments")
    return JobSpec(
        name, func, bool(conf.get("enabled", True)), float(interval) if interval is not None else None,
        cron, bool(conf.get("on_alert", False)), dict(args), str(conf.get("description", "")),
    )


def _resolve_func(spec: JobSpec) -> Callable[..., Any]:
    module, _, attr = spec.func.partition(":")
    try:
        func = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"job {spec.name!r}: cannot load {spec.func!r} ({exc}); fix func in [jobs]") from exc
    if not callable(func):
        raise ConfigError(f"job {spec.name!r}: {spec.func!r} is not a function; fix func in [jobs]")
    return func


def run_job(
    name: str, *, trigger: str = "manual", lake: Lake, settings: Settings
) -> JobRunResult:
    """Run job ``name`` now in this process, recorded in ``job_runs``; a failure is recorded, not raised.

    Args:
        name: a job from :func:`job_specs`.
        trigger: ``manual``, ``schedule`` or ``alert``.
        lake: the lake.
        settings: the settings (config sections and the actor).

    Returns:
        The final state of the execution (``finished`` with outputs, or ``failed`` with the error).
        An interrupt (``KeyboardInterrupt``, ``SystemExit``) is recorded as ``interrupted`` and
        raised again.

    Raises:
        NotFoundError: no job of that name (the message lists the jobs).
    """
    specs = job_specs(settings)
    if name not in specs:
        raise NotFoundError(f"no job named {name!r}; jobs: {', '.join(specs)}")
    spec = specs[name]
    run = start_run(name, trigger, lake=lake)
    try:
        func = _resolve_func(spec)
        offered = {"lake": lake, "settings": settings, "trigger": trigger, **spec.args}
        params = inspect.signature(func).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            offered = {k: v for k, v in offered.items() if k in params}
        outputs = jsonable(func(**offered))
    except Exception as exc:  # noqa: BLE001 - a failing job is recorded, never fatal
        return finish_run(run, "failed", error=f"{type(exc).__name__}: {exc}"[:2000], lake=lake)
    except BaseException as exc:  # Ctrl-C, SIGTERM: close the record, then let the process stop
        why = "Ctrl-C (SIGINT)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__} {exc}".strip()
        finish_run(run, "interrupted", error=f"interrupted by {why} before the job finished", lake=lake)
        raise
    return finish_run(run, "finished", outputs=outputs if isinstance(outputs, dict) else {"result": outputs}, lake=lake)


def list_jobs(*, lake: Lake, settings: Settings) -> pl.DataFrame:
    """Return one row per job: schedule, next run (from the running scheduler) and last status."""
    holder = current_holder("scheduler", lake=lake)
    next_runs = (holder.info.get("next_runs") or {}) if holder else {}
    last = history(lake=lake).group_by("job", maintain_order=True).first()
    last_by = {r["job"]: r for r in last.iter_rows(named=True)}
    rows = []
    for spec in job_specs(settings).values():
        prev = last_by.get(spec.name, {})
        nxt = next_runs.get(spec.name)
        rows.append({
            "job": spec.name, "enabled": spec.enabled, "schedule": spec.schedule,
            "next_run": datetime.fromisoformat(nxt) if nxt else None,
            "last_status": prev.get("status"), "last_started_at": prev.get("started_at"),
            "last_error": prev.get("error"), "description": spec.description,
        })
    ts = pl.Datetime("us", "UTC")
    return pl.DataFrame(rows, schema={
        "job": pl.String, "enabled": pl.Boolean, "schedule": pl.String, "next_run": ts, "last_status": pl.String,
        "last_started_at": ts, "last_error": pl.String, "description": pl.String,
    })


def jsonable(value: Any, _depth: int = 0) -> Any:
    """Turn a flow's result (dataclass, frame, dict ...) into small JSON-able outputs.

    Scalars stay, datetimes become ISO text, dataclasses and mappings become dicts down to three
    levels (deeper values become short text), lists keep 20 items, frames become their row count.
    """
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, str):
        return value if len(value) <= 500 else value[:499] + "…"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, pl.DataFrame):
        return {"rows": value.height}
    if _depth >= 3:
        return str(value)[:200]
    if is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items() if _small(v)}
    if isinstance(value, list | tuple):
        return [jsonable(v, _depth + 1) for v in value[:20]]
    return str(value)[:200]


def _small(value: Any) -> bool:
    return not isinstance(value, bytes | bytearray) and (isinstance(value, pl.DataFrame) or not hasattr(value, "__array__"))


