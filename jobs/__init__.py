"""The scheduler process (``python -m jobs`` / ``lakeops scheduler``): APScheduler over the job catalog.

One scheduler per lake: the process first takes the ``scheduler`` lease (``core.jobruns.Lease``)
and waits while another process holds it. Once it holds it, APScheduler fires each enabled job
of ``core.jobruns.job_specs`` on its interval/cron triggers (UTC) and polls the alerts table for
``on_alert`` jobs; every execution goes through ``core.jobruns.run_job`` (so it is recorded in
``job_runs``, and a job that raises is recorded as failed while the scheduler keeps going). One
execution of a job at a time (``max_instances=1`` plus a lock per job), missed runs coalesced.
The main thread renews the lease every ``ttl/3``; a job only starts while the lease is held.
If the lease is lost the scheduler stops firing jobs and goes back to waiting. A changed
``lakeops.toml`` is reloaded at the next lease renewal (``ttl/3``): the jobs are rescheduled with
their new triggers (``lease_ttl_s`` and ``workers`` take effect at the next start); an invalid
file is logged and reported in the lease (``lakeops jobs list`` shows it) while the previous jobs
keep running. Each job's changes are recorded under the actor ``scheduler:<job>``. On SIGINT/SIGTERM
it stops firing, lets running jobs finish for up to ``stop_grace_s`` (then records them as
``interrupted``), releases the lease and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from core.config import Settings, load_settings
from core.errors import LakeopsError
from core.flows.manual import scheduler_actor
from core.jobruns import Lease, abandon_stale, job_specs, jobs_config, pending_alerts, run_job
from core.lake import Lake
from jobs.definitions import alert_poll_trigger, triggers

__all__ = ["Scheduler", "main"]

log = logging.getLogger("lakeops.jobs")


class Scheduler:
    """The scheduler of one lake; ``run()`` blocks until ``stop()`` (or a signal in ``main``).

    Args:
        settings: settings (lake, ``[jobs]`` section).
        lake: the lake (default: the one ``settings`` names).
        holder: lease holder id (default ``host:pid:random``).
        reload: builds fresh settings when the config file changes (default: re-read
            ``settings.config_path``, or ``./lakeops.toml``, for the same lake).
    """

    def __init__(
        self, settings: Settings, *, lake: Lake | None = None, holder: str | None = None,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self._config_file = Path(settings.config_path or "lakeops.toml")
        self._config_stamp = self._stamp()
        self._config_error: str | None = None
        self._reload = reload or (lambda: load_settings(config_path=settings.config_path, lake_uri=settings.lake_uri))
        self.lake = lake or Lake.from_settings(settings)
        self.conf = jobs_config(settings)
        self.specs = job_specs(settings)
        for spec in self.specs.values():
            triggers(spec)  # validate every cron line before taking the lease
        self.lease = Lease(self.lake, "scheduler", holder=holder, ttl_s=float(self.conf["lease_ttl_s"]))
        self._stop = threading.Event()
        self._locks = {name: threading.Lock() for name in self.specs}
        self._aps: BackgroundScheduler | None = None

    def stop(self) -> None:
        """Ask ``run()`` to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> int:
        """Wait for the lease, schedule jobs while holding it, and return 0 once stopped."""
        if not self.conf["enabled"]:
            log.info("jobs are disabled ([jobs] enabled = false); idling until stopped")
            self._stop.wait()
            return 0
        step = float(self.conf["lease_ttl_s"]) / 3
        while not self._stop.is_set():
            if not self._try_acquire():
                self._stop.wait(step)
                continue
            log.info("holding the scheduler lease of %s (epoch %s) as %s", self.lake.uri, self.lease.epoch, self.lease.holder_id)
            closed = abandon_stale(lake=self.lake)
            if closed:
                log.info("closed %d execution(s) left running by a scheduler or process that is gone", closed)
            self._start_aps()
            while not self._stop.wait(step):
                self._reload_if_changed()
                if not self._renew():
                    log.warning("lost the scheduler lease; no new jobs start until it is taken again")
                    break
            self._shutdown_aps(stopping=self._stop.is_set())
        self.lease.release()
        log.info("scheduler stopped")
        return 0

    # ------------------------------------------------------------------ config reload
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._config_file.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload_if_changed(self) -> bool:
        """Reschedule the jobs when the config file changed; return True when the jobs changed."""
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return False
        self._config_stamp = stamp
        try:
            settings = self._reload()
            conf, specs = jobs_config(settings), job_specs(settings)
            for spec in specs.values():
                triggers(spec)
        except LakeopsError as exc:
            self._config_error = f"{self._config_file}: {exc}"
            log.warning("cannot reload %s (%s); the previous jobs keep running", self._config_file, exc)
            return False
        self._config_error = None
        if specs == self.specs and conf == self.conf:
            return False
        self.settings, self.conf, self.specs = settings, conf, specs
        for name in specs:
            self._locks.setdefault(name, threading.Lock())
        if self._aps is not None:
            self._aps.shutdown(wait=False)  # running jobs finish; their locks stay held until then
            self._aps = None
            if conf["enabled"]:
                self._start_aps()
        log.info("reloaded %s: %s", self._config_file, ", ".join(f"{s.name} {s.schedule}" for s in specs.values() if s.enabled))
        return True

    # ------------------------------------------------------------------ lease
    def _try_acquire(self) -> bool:
        try:
            if self.lease.acquire(info=self._info()):
                return True
            holder = self.lease.holder()
            if holder is not None:
                log.info("waiting: lease held by %s until %s", holder.holder, holder.expires_at.isoformat())
        except LakeopsError as exc:
            log.warning("cannot read the lease: %s", exc)
        return False

    def _renew(self) -> bool:
        try:
            return self.lease.renew(info=self._info())
        except LakeopsError as exc:  # lake briefly unreachable: keep going while the lease lasts
            log.warning("cannot renew the lease: %s", exc)
            return self.lease.held

    def _info(self) -> dict[str, Any]:
        next_runs: dict[str, str] = {}
        if self._aps is not None:
            for job in self._aps.get_jobs():
                when = job.next_run_time
                if when is not None and job.name in self.specs:
                    iso = when.astimezone(UTC).isoformat()
                    next_runs[job.name] = min(next_runs.get(job.name, iso), iso)
        return {"pid": os.getpid(), "next_runs": next_runs, "config": str(self._config_file.resolve()),
                "config_error": self._config_error}

    # ------------------------------------------------------------------ APScheduler
    def _start_aps(self) -> None:
        aps = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(int(self.conf["workers"]))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(self.conf["misfire_grace_s"])},
        )
        for spec in self.specs.values():
            if not spec.enabled:
                continue
            for i, trig in enumerate(triggers(spec)):
                aps.add_job(self._fire, trig, args=[spec.name, "schedule"], id=f"{spec.name}#{i}", name=spec.name)
        if any(s.enabled and s.on_alert for s in self.specs.values()):
            aps.add_job(self._poll_alerts, alert_poll_trigger(float(self.conf["alert_poll_s"])), id="_alert_poll", name="_alert_poll")
        aps.start()
        self._aps = aps

    def _shutdown_aps(self, *, stopping: bool) -> None:
        """Stop firing jobs; when stopping, give running ones ``stop_grace_s`` then record them interrupted."""
        if self._aps is None:
            return
        self._aps.shutdown(wait=False)
        self._aps = None
        if not stopping:
            return  # lease lost: running jobs finish and record themselves
        deadline = time.monotonic() + float(self.conf["stop_grace_s"])
        while any(lock.locked() for lock in self._locks.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if any(lock.locked() for lock in self._locks.values()):
            n = abandon_stale(lake=self.lake, mine=True)
            log.warning("recorded %d running execution(s) as interrupted", n)

    def _fire(self, name: str, trigger: str) -> None:
        lock = self._locks[name]
        if not lock.acquire(blocking=False):
            return  # this job is already running: coalesce
        try:
            if self._stop.is_set() or not self.lease.held:
                return
            # Changes the job makes are recorded as the scheduler's, not as the OS user's.
            actor = scheduler_actor(name)
            result = run_job(name, trigger=trigger, lake=self.lake, settings=self.settings.with_(actor=actor))
            if result.status == "failed":
                log.warning("job %s failed: %s", name, result.error)
            else:
                log.info("job %s %s", name, result.status)
        except Exception:  # the job_runs record itself could not be written
            log.exception("job %s could not run", name)
        finally:
            lock.release()

    def _poll_alerts(self) -> None:
        for spec in self.specs.values():
            if not (spec.enabled and spec.on_alert) or self._locks[spec.name].locked():
                continue
            try:
                pending = pending_alerts(spec.name, lake=self.lake, settings=self.settings)
            except LakeopsError as exc:
                log.warning("cannot read alerts: %s", exc)
                return
            if pending.height:
                self._fire(spec.name, "alert")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m jobs [--lake URI] [--config PATH]``; exits 0 when stopped."""
    parser = argparse.ArgumentParser(prog="python -m jobs", description="the lakeops scheduler (one per lake)")
    parser.add_argument("--lake", help="lake root URI (default: $LAKEOPS_LAKE or data/lake)")
    parser.add_argument("--config", help="lakeops.toml to read")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    code = 0
    try:
        overrides = {"lake_uri": args.lake} if args.lake else {}
        scheduler = Scheduler(load_settings(config_path=args.config, **overrides))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: scheduler.stop())
        code = scheduler.run()
    except LakeopsError as exc:
        sys.stderr.write(f"lakeops scheduler: error: {exc}\n")
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # deltalake's native threads can abort a normal interpreter exit (LAKE-FACTS)
