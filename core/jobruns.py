"""Job-run records, the job catalog, and the one-scheduler-per-lake lease.

Records: every job execution is two ``job_runs`` rows with one ``job_run_id`` (``running``, then
``finished``/``failed``/``interrupted``/``abandoned``); the latest row per id is its state.

Catalog: the jobs are data here (name -> dotted path of a ``core`` function + schedule), so the
CLI, the Jobs page and the scheduler run the very same code through :func:`run_job`, and ``core``
never imports ``jobs/`` (which only wires APScheduler to this catalog). Built-in targets live
below (they call ``core.flows.monitor`` and ``Lake.maintain``); ``[jobs.extra.NAME] func =
"pkg.mod:fn"`` adds more. A target is called with the keywords it accepts among ``lake``,
``settings``, ``trigger`` and its ``args`` table, and returns a JSON-able dict (the outputs).

Lease (a compare-and-swap on the Delta log, correct on a local folder and on S3): the ``leases``
table holds events (acquire, renew, release), each appended with the table version its writer
read first (``base_version``) and the whole event copied into the commit metadata. Delta
commits are atomic and totally ordered (a put-if-absent of ``_delta_log/N.json``), and
``Lake.append`` returns the version the commit landed at. An event *counts* only if it landed
at exactly ``base_version + 1``: then nothing committed between its writer's read and its own
commit, so the writer decided on the true current state. Each counting event carries the full
state (holder, epoch, expiry), so the lease state is simply the newest counting event, found
by reading the last few commits of the log (``Lake.history``), no replay of the table needed.
Two claimants that both saw a free lease both append, but only the first commit counts; the
other sees, on re-reading, that it lost, and waits. A holder renews every ``ttl/3`` (one commit
each) and trusts its lease only until ``expires_at - margin`` of its last counting event, so a
paused or dead holder is taken over once its expiry has passed. ``epoch`` grows by one per
acquisition (a fencing token). Clocks of hosts sharing a lake must agree to well under ``ttl``.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

import polars as pl

import core.lake
from core.catalog import TABLES
from core.config import Settings, load_settings
from core.errors import CommitConflictError, ConfigError, LakeopsError, NotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake

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

_TABLE = "job_runs"
_LEASES = "leases"
_META_KEY = "lakeops_lease"
_FINAL = ("finished", "failed", "interrupted", "abandoned")
_HOST = socket.gethostname()

# ---------------------------------------------------------------------------- records


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


def start_run(job: str, trigger: str, *, lake: Lake | None = None) -> JobRunResult:
    """Append the ``running`` row of a new execution of ``job`` and return it."""
    lake = core.lake.resolve(lake)
    run = JobRunResult(new_id(), job, trigger, "running", utcnow())
    lake.append(_TABLE, [_row(run)], metadata={"job": job, "trigger": trigger, "status": "running"})
    return run


def finish_run(
    run: JobRunResult,
    status: str,
    *,
    error: str | None = None,
    outputs: Mapping[str, Any] | None = None,
    lake: Lake | None = None,
) -> JobRunResult:
    """Append the final row (``finished``, ``failed``, ``interrupted``, ``abandoned``) of ``run``."""
    if status not in _FINAL:
        raise LakeopsError(f"job run status {status!r} is not final: use one of {', '.join(_FINAL)}")
    lake = core.lake.resolve(lake)
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


def history(job: str | None = None, *, lake: Lake | None = None, limit: int | None = None) -> pl.DataFrame:
    """Return one row per execution (its latest state), newest first, with ``duration_s``.

    Args:
        job: only this job's executions.
        lake: the lake (default: the current settings' lake).
        limit: at most this many rows.
    """
    lake = core.lake.resolve(lake)
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


def abandon_stale(*, lake: Lake | None = None, mine: bool = False, reason: str | None = None) -> int:
    """Close scheduler-started executions still ``running``.

    Args:
        lake: the lake.
        mine: False (a scheduler that just took the lease): close other processes' executions
            as ``abandoned``; True (a scheduler stopping before its jobs finished): close this
            process's executions as ``interrupted``. Manual runs are never touched.
        reason: the error text recorded.

    Returns:
        How many executions were closed.
    """
    lake = core.lake.resolve(lake)
    me = (pl.col("pid") == os.getpid()) & (pl.col("host") == _HOST)
    runs = history(lake=lake).filter(
        (pl.col("status") == "running") & pl.col("trigger").is_in(["schedule", "alert"]) & (me if mine else ~me)
    )
    status = "interrupted" if mine else "abandoned"
    why = reason or ("the scheduler stopped before the job finished" if mine else "the scheduler running it died")
    now = utcnow()
    rows = [
        _row(JobRunResult(r["job_run_id"], r["job"], r["trigger"], status, r["started_at"], now, why))
        for r in runs.iter_rows(named=True)
    ]
    if rows:
        lake.append(_TABLE, rows, metadata={"status": status, "count": len(rows)})
    return len(rows)


# ---------------------------------------------------------------------------- lease


@dataclass(frozen=True)
class LeaseState:
    """The newest counting event of a lease: who holds it, since when, until when."""

    lease: str
    holder: str
    epoch: int
    event: str
    acquired_at: datetime | None
    expires_at: datetime
    at: datetime
    version: int
    info: dict[str, Any] = field(default_factory=dict)

    def active(self, now: datetime | None = None) -> bool:
        """True while the lease is held (not released and not expired)."""
        return self.event != "release" and (now or utcnow()) < self.expires_at


def _read_state(lake: Lake, name: str) -> tuple[int, LeaseState | None]:
    """Return (the table version read, the newest counting event of lease ``name`` or None)."""
    if not lake.exists(_LEASES):
        return -1, None
    limit = 32
    while True:
        commits = lake.history(_LEASES, limit)
        base = int(commits[0]["version"])
        for c in commits:
            raw = c.get(_META_KEY)
            if not raw:
                continue
            ev = json.loads(raw)
            if ev["lease"] == name and int(c["version"]) == int(ev["base_version"]) + 1:
                return base, LeaseState(
                    name,
                    ev["holder"],
                    int(ev["epoch"]),
                    ev["event"],
                    datetime.fromisoformat(ev["acquired_at"]) if ev.get("acquired_at") else None,
                    datetime.fromisoformat(ev["expires_at"]),
                    datetime.fromisoformat(ev["at"]),
                    int(c["version"]),
                    ev.get("info") or {},
                )
        # Nothing counting in the last `limit` commits: look further back; a lease with no
        # counting event in 4,096 commits has certainly expired (renewals come every ttl/3).
        if len(commits) < limit or limit >= 4096:
            return base, None
        limit *= 4


def current_holder(name: str = "scheduler", *, lake: Lake | None = None) -> LeaseState | None:
    """Return the state of lease ``name`` while someone holds it, else None."""
    lake = core.lake.resolve(lake)
    _, state = _read_state(lake, name)
    return state if state is not None and state.active() else None


class Lease:
    """A named lease in the lake: at most one holder at a time (see the module docstring).

    Args:
        lake: the lake holding the ``leases`` table.
        name: lease name (``"scheduler"``: one scheduler per lake).
        holder: this holder's id (default ``host:pid:random``).
        ttl_s: the lease expires this long after the last acquire or renew.

    Example:
        >>> lease = Lease(lake, ttl_s=30)                      # doctest: +SKIP
        >>> if lease.acquire(): ...  # then lease.renew() every ttl/3 and check lease.held
    """

    def __init__(self, lake: Lake | None = None, name: str = "scheduler", holder: str | None = None, ttl_s: float = 30) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"lease ttl_s must be > 0, got {ttl_s}")
        self.lake = core.lake.resolve(lake)
        self.name = name
        self.holder_id = holder or f"{_HOST}:{os.getpid()}:{new_id()[-6:]}"
        self.ttl = timedelta(seconds=ttl_s)
        self.margin = timedelta(seconds=min(2.0, ttl_s / 10))
        self.epoch: int | None = None
        self.acquired_at: datetime | None = None
        self.expires_at: datetime | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this holder may act: its last counting event has not (nearly) expired."""
        return self.expires_at is not None and utcnow() < self.expires_at - self.margin

    def holder(self) -> LeaseState | None:
        """Return the current holder's state (None when the lease is free)."""
        return current_holder(self.name, lake=self.lake)

    def acquire(self, info: Mapping[str, Any] | None = None) -> bool:
        """Take the lease if it is free, expired, released or already ours; True when we hold it."""
        with self._lock:
            for _ in range(5):
                base, state = _read_state(self.lake, self.name)
                now = utcnow()
                mine = state is not None and state.holder == self.holder_id and state.epoch == self.epoch
                if state is not None and state.active(now) and not mine:
                    self._drop()
                    return False
                if mine and state is not None and state.active(now):
                    ok = self._commit("renew", base, state.epoch, state.acquired_at, info)
                else:
                    ok = self._commit("acquire", base, (state.epoch if state else 0) + 1, now, info)
                if ok:
                    return True
            self._drop()
            return False

    def renew(self, info: Mapping[str, Any] | None = None) -> bool:
        """Extend our lease by ``ttl``; False when it was lost (someone else holds or held it)."""
        with self._lock:
            if self.epoch is None:
                return False
            for _ in range(5):
                base, state = _read_state(self.lake, self.name)
                if state is None or state.holder != self.holder_id or state.epoch != self.epoch or state.event == "release":
                    self._drop()
                    return False
                if self._commit("renew", base, self.epoch, state.acquired_at, info):
                    return True
            return self.held  # only lost CAS races (e.g. to compaction): keep the current expiry

    def release(self) -> None:
        """Give the lease up now (a waiting holder may take it at once)."""
        with self._lock:
            if self.epoch is None:
                return
            for _ in range(5):
                base, state = _read_state(self.lake, self.name)
                if state is None or state.holder != self.holder_id or state.epoch != self.epoch:
                    break
                if self._commit("release", base, self.epoch, state.acquired_at, None):
                    break
            self._drop()

    def _drop(self) -> None:
        self.epoch = self.acquired_at = self.expires_at = None

    def _commit(self, event: str, base: int, epoch: int, acquired_at: datetime | None, info: Mapping[str, Any] | None) -> bool:
        """Append one event read at ``base``; True when it counts (landed at ``base + 1``)."""
        if base < 0:
            self.lake.create(_LEASES, TABLES[_LEASES].schema)
            base, state = _read_state(self.lake, self.name)
            if state is not None:  # someone else started the table and wrote first: decide again
                return False
        now = utcnow()
        expires = now if event == "release" else now + self.ttl
        ev = {
            "lease": self.name,
            "event": event,
            "holder": self.holder_id,
            "epoch": epoch,
            "base_version": base,
            "acquired_at": acquired_at.isoformat() if acquired_at else None,
            "expires_at": expires.isoformat(),
            "at": now.isoformat(),
            "info": dict(info or {}),
        }
        row = {**ev, "acquired_at": acquired_at, "expires_at": expires, "at": now, "info_json": json.dumps(ev["info"], default=str)}
        row.pop("info")
        try:
            version = self.lake.append(_LEASES, [row], metadata={_META_KEY: json.dumps(ev, default=str), "actor": self.holder_id})
        except CommitConflictError:
            return False
        if version != base + 1:
            return False
        if event == "release":
            self._drop()
        else:
            self.epoch, self.acquired_at, self.expires_at = epoch, acquired_at, expires
        return True


# ---------------------------------------------------------------------------- catalog


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
    "drift_check": {"func": "core.jobruns:_drift_check", "interval_s": 3600.0,
                    "description": "drift of each champion's recent predictions vs its training data"},
    "performance_check": {"func": "core.jobruns:_performance_check", "interval_s": 3600.0,
                          "description": "each champion's metrics on labelled predictions vs its gate"},
    "retrain": {"func": "core.jobruns:_retrain", "on_alert": True,
                "description": "retrain, gate and maybe promote (on a drift/performance alert)"},
    "maintenance": {"func": "core.jobruns:maintain_lake", "cron": "30 2 * * *",
                    "description": "compact, checkpoint and vacuum every table (keeps training snapshots)"},
}
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "enabled": True, "lease_ttl_s": 30.0, "alert_poll_s": 60.0, "misfire_grace_s": 600.0,
    "stop_grace_s": 20.0, "workers": 2, "alert_kinds": ["drift", "performance"],
}
_JOB_KEYS = {"func", "enabled", "interval_s", "cron", "on_alert", "args", "description"}


def jobs_config(settings: Settings | None = None) -> dict[str, Any]:
    """Return the scheduler-wide ``[jobs]`` settings (lease_ttl_s, alert_poll_s, ...) with defaults."""
    section = (settings or load_settings()).section("jobs")
    out = dict(_GLOBAL_DEFAULTS)
    for key, value in section.items():
        if isinstance(value, Mapping):
            continue
        if key not in _GLOBAL_DEFAULTS:
            raise ConfigError(f"[jobs] {key} is not a setting; known: {', '.join(sorted(_GLOBAL_DEFAULTS))}")
        out[key] = value
    for key in ("lease_ttl_s", "alert_poll_s", "misfire_grace_s", "stop_grace_s", "workers"):
        if not isinstance(out[key], int | float) or out[key] <= 0:
            raise ConfigError(f"[jobs] {key} must be a positive number, got {out[key]!r}")
    return out


def job_specs(settings: Settings | None = None) -> dict[str, JobSpec]:
    """Return every job (built-ins with their ``[jobs.NAME]`` overrides, then ``[jobs.extra.NAME]``).

    Raises:
        ConfigError: a key or value in the ``[jobs]`` section is invalid (the message names it).
    """
    settings = settings or load_settings()
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
        return getattr(import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"job {spec.name!r}: cannot load {spec.func!r} ({exc}); fix func in [jobs]") from exc


def run_job(
    name: str, *, trigger: str = "manual", lake: Lake | None = None, settings: Settings | None = None
) -> JobRunResult:
    """Run job ``name`` now in this process, recorded in ``job_runs``; a failure is recorded, not raised.

    Args:
        name: a job from :func:`job_specs`.
        trigger: ``manual``, ``schedule`` or ``alert``.
        lake: the lake (default: the settings' lake).
        settings: settings (default: from the environment).

    Returns:
        The final state of the execution (``finished`` with outputs, or ``failed`` with the error).

    Raises:
        NotFoundError: no job of that name (the message lists the jobs).
    """
    settings = settings or load_settings()
    lake = core.lake.resolve(lake)
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
        outputs = _jsonable(func(**offered))
    except Exception as exc:  # noqa: BLE001 - a failing job is recorded, never fatal
        return finish_run(run, "failed", error=f"{type(exc).__name__}: {exc}"[:2000], lake=lake)
    return finish_run(run, "finished", outputs=outputs if isinstance(outputs, dict) else {"result": outputs}, lake=lake)


def list_jobs(*, lake: Lake | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """Return one row per job: schedule, next run (from the running scheduler) and last status."""
    settings = settings or load_settings()
    lake = core.lake.resolve(lake)
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


def _jsonable(value: Any) -> Any:
    """Turn a flow's result (dataclass, frame, dict ...) into small JSON-able outputs."""
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, str):
        return value if len(value) <= 500 else value[:499] + "…"
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        items = {f.name: getattr(value, f.name) for f in fields(value)}
        return {k: _jsonable(v) for k, v in items.items() if _small(v)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if _small(v)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value[:50]]
    if isinstance(value, pl.DataFrame):
        return {"rows": value.height}
    return str(value)[:200]


def _small(value: Any) -> bool:
    return not isinstance(value, bytes | bytearray) and (isinstance(value, pl.DataFrame) or not hasattr(value, "__array__"))


# ---------------------------------------------------------------------------- built-in jobs


def _champions(lake: Lake) -> list[str]:
    from core.registry import list_models

    models = list_models(lake=lake)
    return sorted(models.filter(pl.col("champion").is_not_null())["model"].to_list())


def _drift_check(*, lake: Lake, settings: Settings, **args: Any) -> dict[str, Any]:
    from core.flows.monitor import check_drift

    return {"models": {m: _jsonable(check_drift(m, lake=lake, settings=settings, **args)) for m in _champions(lake)}}


def _performance_check(*, lake: Lake, settings: Settings, **args: Any) -> dict[str, Any]:
    from core.flows.monitor import check_performance

    return {"models": {m: _jsonable(check_performance(m, lake=lake, settings=settings, **args)) for m in _champions(lake)}}


def pending_alerts(job: str = "retrain", *, lake: Lake | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """Return the newest open drift/performance alert per model not yet answered by ``job``.

    An alert is pending when it is newer than the start of the last execution of ``job`` (or,
    before any, than a day ago) and its kind contains one of ``[jobs] alert_kinds``.
    """
    lake = core.lake.resolve(lake)
    kinds = list(jobs_config(settings)["alert_kinds"])
    last = history(job, lake=lake, limit=1)
    since = last["started_at"][0] if last.height and last["started_at"][0] else utcnow() - timedelta(days=1)
    alerts = lake.read_or_empty("alerts")
    kind_ok = pl.any_horizontal(*[pl.col("kind").str.contains(k, literal=True) for k in kinds]) if kinds else pl.lit(False)
    return (
        alerts.filter(kind_ok & (pl.col("at") > since) & pl.col("model").is_not_null()
                      & ~pl.col("status").fill_null("open").is_in(["resolved", "closed"]))
        .sort("at")
        .group_by("model", maintain_order=True)
        .last()
    )


def _retrain(*, lake: Lake, settings: Settings, trigger: str, **args: Any) -> dict[str, Any]:
    from core.flows.monitor import retrain

    if trigger == "alert":
        todo = {r["model"]: f"alert {r['kind']} {r['alert_id']}: {r['message'] or ''}"[:300]
                for r in pending_alerts("retrain", lake=lake, settings=settings).iter_rows(named=True)}
    else:
        todo = {m: f"{trigger} retrain" for m in _champions(lake)}
    return {"models": {m: _jsonable(retrain(m, reason=why, lake=lake, settings=settings, **args)) for m, why in todo.items()}}


def maintain_lake(*, lake: Lake | None = None, retention_hours: int = 168) -> dict[str, Any]:
    """Maintain every table, keeping the dataset versions registered models were trained on.

    Returns:
        Outputs: tables maintained, files before/after, files vacuumed, versions kept.
    """
    lake = core.lake.resolve(lake)
    used = lake.read_or_empty("model_versions", columns=["dataset_name", "dataset_version"]).drop_nulls().unique()
    keep: dict[str, list[int]] = {}
    for r in used.iter_rows(named=True):
        keep.setdefault(f"data/{r['dataset_name']}", []).append(int(r["dataset_version"]))
    reports = lake.maintain(retention_hours=retention_hours, keep_versions=keep)
    return {
        "tables": len(reports),
        "files_before": sum(r.files_before for r in reports),
        "files_after": sum(r.files_after for r in reports),
        "vacuumed": sum(r.vacuumed for r in reports),
        "kept_versions": {k: sorted(v) for k, v in keep.items()},
    }
