"""Experiment tracking: runs with lineage, params, step metrics, tags and artifacts, logged through a buffered group-commit writer.

Usage (MLflow-like)::

    with tracking.start_run(experiment="churn", name="baseline", dataset=("churn", 3), seed=7) as run:
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
latest row per run_id, SQL view ``runs_latest``); ``params``, ``tags``, ``metrics`` (with step)
and ``artifacts`` have one row per value. Artifacts are files under
``artifacts/runs/<run_id>/<path>`` in the lake, recorded with their sha256.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from core import tracking_search
from core.catalog import TS, spec_for
from core.errors import ArtifactIntegrityError, LakeopsError, RunNotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake, resolve

__all__ = [
    "FLUSH_INTERVAL_S",
    "FLUSH_POINTS",
    "Run",
    "RunInfo",
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

FLUSH_INTERVAL_S = 1.0
"""The oldest buffered value is committed at most this many seconds after it was logged."""
FLUSH_POINTS = 50_000
"""A flush starts as soon as this many values are buffered (backpressure at 10x)."""
SEARCH_CACHE_TTL_S = 2.0
"""How long ``search_runs`` reuses its pivoted runs frame when this process wrote nothing."""

Status = Literal["running", "finished", "failed", "killed"]
_KEY = re.compile(r"^[A-Za-z0-9_\-./: ]{1,250}$")
_PACKAGES = ("lakeops", "lightgbm", "polars", "deltalake", "duckdb", "pyarrow", "numpy", "scipy", "pandas")
_IDLE_EXIT_S = 30.0


# ---------------------------------------------------------------------------- writer
class _Writer:
    """The process-wide buffer of one lake and its background committer (group commit)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.generation = 0  # bumped after every successful flush (search cache key)
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._clear()

    def _clear(self) -> None:
        self._rows: dict[str, list[dict[str, Any]]] = {"runs": [], "artifacts": []}
        self._kv: dict[str, tuple[list[str], list[str], list[str], list[int]]] = {
            "params": ([], [], [], []),
            "tags": ([], [], [], []),
        }
        self._metrics: tuple[list[str], list[str], list[float], list[int], list[int]] = ([], [], [], [], [])
        self._points = 0
        self._oldest: float | None = None

    # -- adding (called from logging threads; cheap) --
    def add_metrics(self, run_id: str, items: Iterable[tuple[str, float]], step: int) -> None:
        at = time.time_ns() // 1000
        r, k, v, s, a = self._metrics
        n = 0
        with self._cond:
            for key, value in items:
                r.append(run_id)
                k.append(key)
                v.append(value)
                s.append(step)
                a.append(at)
                n += 1
            self._added(n)

    def add_kv(self, table: str, run_id: str, items: Iterable[tuple[str, str]]) -> None:
        at = time.time_ns() // 1000
        r, k, v, a = self._kv[table]
        n = 0
        with self._cond:
            for key, value in items:
                r.append(run_id)
                k.append(key)
                v.append(value)
                a.append(at)
                n += 1
            self._added(n)

    def add_row(self, table: str, row: dict[str, Any]) -> None:
        with self._cond:
            self._rows[table].append(row)
            self._added(1)

    def _added(self, n: int) -> None:
        self._points += n
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lakeops-tracking-writer", daemon=True)
            self._thread.start()
        if self._points >= FLUSH_POINTS:
            self._cond.notify_all()
        if self._points >= 10 * FLUSH_POINTS:  # the committer fell behind: the logger waits
            self._cond.release()
            try:
                self.flush()
            finally:
                self._cond.acquire()

    # -- committing --
    def _take(self) -> dict[str, pa.Table | list[dict[str, Any]]]:
        with self._cond:
            if not self._points:
                return {}
            taken: dict[str, Any] = {}
            for table, (r, k, v, a) in self._kv.items():
                if r:
                    taken[table] = pa.table(
                        {
                            "run_id": pa.array(r, pa.string()),
                            "key": pa.array(k, pa.string()),
                            "value": pa.array(v, pa.string()),
                            "at": pa.array(a, TS),
                        }
                    )
            r, k, v, s, a = self._metrics
            if r:
                taken["metrics"] = pa.table(
                    {
                        "run_id": pa.array(r, pa.string()),
                        "key": pa.array(k, pa.string()),
                        "value": pa.array(v, pa.float64()),
                        "step": pa.array(s, pa.int64()),
                        "at": pa.array(a, TS),
                    }
                )
            for table in ("artifacts", "runs"):
                if self._rows[table]:
                    taken[table] = self._rows[table]
            self._clear()
            return taken

    def _put_back(self, rest: dict[str, Any]) -> None:
        """Return rows of a failed flush to the front of the buffer (they are retried)."""
        with self._cond:
            for table, data in rest.items():
                if table in self._rows:
                    self._rows[table][:0] = data
                    self._points += len(data)
                    continue
                cols = data.to_pydict()
                cols["at"] = [int(t.timestamp() * 1_000_000) if t else None for t in cols["at"]]
                target = self._metrics if table == "metrics" else self._kv[table]
                names = (
                    ["run_id", "key", "value", "step", "at"]
                    if table == "metrics"
                    else ["run_id", "key", "value", "at"]
                )
                for lst, name in zip(target, names, strict=True):
                    lst[:0] = cols[name]
                self._points += data.num_rows
            if self._points and self._oldest is None:
                self._oldest = time.monotonic()

    def flush(self) -> None:
        """Commit everything buffered: one append per table; raise if a commit fails."""
        with self._flush_lock:
            taken = self._take()
            order = [t for t in ("params", "tags", "metrics", "artifacts", "runs") if t in taken]
            for i, table in enumerate(order):
                try:
                    self.lake.append(table, taken[table], metadata={"component": "tracking"})
                except BaseException as exc:
                    self._put_back({t: taken[t] for t in order[i:]})
                    self._error = exc
                    raise
            if taken:
                self._error = None
                with self._cond:
                    self.generation += 1

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                wait = FLUSH_INTERVAL_S
                if self._oldest is not None:
                    wait = max(0.0, FLUSH_INTERVAL_S - (time.monotonic() - self._oldest))
                if self._points < FLUSH_POINTS:
                    self._cond.wait(timeout=wait)
                due = self._points and (
                    self._points >= FLUSH_POINTS
                    or (self._oldest is not None and time.monotonic() - self._oldest >= FLUSH_INTERVAL_S)
                )
                if not self._points and time.monotonic() - idle_since > _IDLE_EXIT_S:
                    self._thread = None
                    return
            if due:
                idle_since = time.monotonic()
                try:
                    self.flush()
                except Exception as exc:  # noqa: BLE001 - kept, retried, raised by the next flush()
                    sys.stderr.write(f"lakeops: tracking flush failed, will retry: {exc}\n")
                    time.sleep(FLUSH_INTERVAL_S)


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def _writer(lake: Lake) -> _Writer:
    with _writers_lock:
        w = _writers.get(lake.uri)
        if w is None:
            w = _writers[lake.uri] = _Writer(lake)
        return w


def flush(lake: Lake | None = None) -> None:
    """Commit every buffered run row, param, tag, metric and artifact record now.

    Args:
        lake: flush only this lake's buffer; None flushes every lake this process logged to.

    Raises:
        LakeError: a commit failed (its rows stay buffered and are retried on the next flush).
    """
    with _writers_lock:
        targets = [w for w in _writers.values() if lake is None or w.lake.uri == lake.uri]
    for w in targets:
        w.flush()


@atexit.register
def _flush_at_exit() -> None:
    try:
        flush()
    except Exception as exc:  # noqa: BLE001 - nothing to raise to at exit
        sys.stderr.write(f"lakeops: tracking data not saved at exit: {exc}\n")


# ---------------------------------------------------------------------------- lineage
def _git(cwd: Path) -> tuple[str | None, bool | None]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None, None
        st = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() or None, bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.cache
def _lineage() -> dict[str, Any]:
    """Process-wide lineage, computed once (git is asked once per process, not per run)."""
    from importlib import metadata

    sha, dirty = _git(Path.cwd())
    if sha is None:
        sha, dirty = _git(Path(__file__).resolve().parent)
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        from core.config import load_settings

        user = load_settings().actor
    except LakeopsError:
        user = None
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "python_version": platform.python_version(),
        "packages_json": json.dumps(packages, sort_keys=True),
        "host": socket.gethostname(),
        "user": user,
    }


def _dataset(dataset: tuple[str, int | None] | str | None, lake: Lake) -> tuple[str | None, int | None]:
    if dataset is None:
        return None, None
    if isinstance(dataset, str):
        name, _, ver = dataset.partition("@")
        version: int | None = int(ver) if ver else None
    else:
        name, version = dataset[0], dataset[1]
    if version is None:
        from core.datasets import latest_version

        version = latest_version(name, lake=lake)
    return name, int(version)


# ---------------------------------------------------------------------------- runs
_active = threading.local()


def _stack() -> list[Run]:
    if not hasattr(_active, "runs"):
        _active.runs = []
    return _active.runs  # type: ignore[no-any-return]


def active_run() -> Run | None:
    """Return the innermost run started (and not ended) by this thread, if any."""
    stack = _stack()
    return stack[-1] if stack else None


class Run:
    """A running run: log to it, then end it (or use it as a context manager).

    Attributes:
        run_id: the run's UUIDv7.
        experiment, name, parent_run_id, dataset_name, dataset_version, seed: as started.
        status: ``running`` until ended, then ``finished``, ``failed`` or ``killed``.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        experiment: str,
        name: str | None,
        dataset: tuple[str | None, int | None],
        seed: int | None,
        parent_run_id: str | None,
        sync: bool,
    ) -> None:
        self.lake = lake
        self.run_id = new_id()
        self.experiment = experiment
        self.name = name
        self.parent_run_id = parent_run_id
        self.dataset_name, self.dataset_version = dataset
        self.seed = seed
        self.status: Status = "running"
        self.error: str | None = None
        self.started_at = utcnow()
        self.ended_at: datetime | None = None
        self._sync = sync
        self._writer = _writer(lake)
        self._keys: set[str] = set()
        self._base = {
            "run_id": self.run_id,
            "experiment": experiment,
            "name": name,
            "parent_run_id": parent_run_id,
            "dataset_name": self.dataset_name,
            "dataset_version": self.dataset_version,
            "seed": seed,
            **_lineage(),
        }
        self._writer.add_row(
            "runs", {**self._base, "status": "running", "started_at": self.started_at, "ended_at": None, "error": None, "at": self.started_at}
        )

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, experiment={self.experiment!r}, status={self.status!r})"

    # -- logging --
    def _check(self, key: str) -> str:
        if key not in self._keys:
            if not isinstance(key, str) or not _KEY.match(key):
                raise LakeopsError(f"key {key!r} is invalid: use 1-250 letters, digits, spaces and _ - . / :")
            self._keys.add(key)
        if self.status != "running":
            raise LakeopsError(f"run {self.run_id} has ended ({self.status}); start a new run to log more")
        return key

    def log_param(self, key: str, value: Any) -> None:
        """Record one parameter (stored as text)."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters; values are stored as text (``str(value)``, JSON for lists/dicts)."""
        self._writer.add_kv("params", self.run_id, [(self._check(k), _text(v)) for k, v in params.items()])

    def set_tag(self, key: str, value: Any) -> None:
        """Set one tag."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (text); the latest value of a key wins."""
        self._writer.add_kv("tags", self.run_id, [(self._check(k), _text(v)) for k, v in tags.items()])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Record one metric value at ``step`` (default 0)."""
        self._writer.add_metrics(self.run_id, [(self._check(key), float(value))], int(step or 0))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record several metric values at one ``step`` (default 0): one step is never split by a flush."""
        self._writer.add_metrics(
            self.run_id, [(self._check(k), float(v)) for k, v in metrics.items()], int(step or 0)
        )

    def log_artifact(
        self, path: str | Path, data: bytes | None = None, *, artifact_path: str | None = None
    ) -> str:
        """Store a file as an artifact of this run and return its path within the run.

        Args:
            path: a local file to copy (stored under its base name), or, with ``data``, the
                artifact's path within the run (``"model/model.txt"``).
            data: the artifact's bytes, instead of reading a local file.
            artifact_path: a folder within the run to put a local file in.

        Raises:
            LakeopsError: the local file cannot be read or the path is unsafe.
        """
        if data is None:
            src = Path(path)
            try:
                data = src.read_bytes()
            except OSError as exc:
                raise LakeopsError(f"cannot read artifact file {src}: {exc.strerror}") from None
            rel = f"{artifact_path.strip('/')}/{src.name}" if artifact_path else src.name
        else:
            rel = str(path).strip("/")
        if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
            raise LakeopsError(
                f"artifact path {rel!r} is invalid: use a relative path like 'model/model.txt'"
            )
        if self.status != "running":
            raise LakeopsError(f"run {self.run_id} has ended ({self.status}); start a new run to log more")
        uri = self.lake.put_bytes(f"artifacts/runs/{self.run_id}/{rel}", data)
        self._writer.add_row(
            "artifacts",
            {
                "run_id": self.run_id,
                "path": rel,
                "uri": uri,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_bytes": len(data),
                "at": utcnow(),
            },
        )
        return rel

    def log_text(self, path: str, text: str) -> str:
        """Store ``text`` (UTF-8) as the artifact ``path``."""
        return self.log_artifact(path, text.encode("utf-8"))

    def log_dict(self, path: str, obj: Any) -> str:
        """Store ``obj`` as a JSON artifact at ``path``."""
        return self.log_artifact(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))

    def flush(self) -> None:
        """Commit everything buffered (this run's and the process's other runs') now."""
        self._writer.flush()

    # -- ending --
    def end(self, status: Status = "finished", error: str | None = None) -> None:
        """End the run with ``status`` (idempotent: a second call does nothing)."""
        if self.status != "running":
            return
        now = utcnow()
        self.ended_at = max(now, self.started_at + timedelta(microseconds=1))
        self.status, self.error = status, error
        self._writer.add_row(
            "runs",
            {
                **self._base,
                "status": status,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "error": error,
                "at": self.ended_at,
            },
        )
        stack = _stack()
        if self in stack:
            stack.remove(self)
        if self._sync or status != "finished":
            self._writer.flush()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.end("finished")
            return
        status: Status = "failed" if isinstance(exc, Exception) else "killed"
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        try:
            self.end(status, message[:4000])
        except Exception as flush_exc:  # noqa: BLE001 - never mask the run's own exception
            sys.stderr.write(f"lakeops: could not record the end of run {self.run_id}: {flush_exc}\n")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def start_run(
    experiment: str = "default",
    name: str | None = None,
    *,
    dataset: tuple[str, int | None] | str | None = None,
    seed: int | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    sync: bool = False,
    lake: Lake | None = None,
) -> Run:
    """Start a run; use it as a context manager so its status is set on exit.

    Args:
        experiment: the experiment the run belongs to.
        name: a human name for the run.
        dataset: ``(name, version)``, ``"name@version"`` or ``"name"`` (latest version).
        seed: the seed the run uses (lineage).
        parent_run_id: the parent of a nested run; default: the run active in this thread.
        tags: tags to set right away.
        sync: commit the run's data when it ends (see the module docstring on durability).
        lake: the lake (default: the settings' lake).

    Returns:
        The started ``Run``. ``with start_run(...) as run:`` ends it ``finished``, ``failed``
        (an exception, with its message) or ``killed`` (KeyboardInterrupt).

    Raises:
        DatasetNotFoundError: the dataset (version) to resolve does not exist.
    """
    lake = resolve(lake)
    if not experiment or not _KEY.match(experiment):
        raise LakeopsError(f"experiment name {experiment!r} is invalid: use letters, digits, _ - . /")
    parent = parent_run_id or (r.run_id if (r := active_run()) is not None else None)
    run = Run(
        lake,
        experiment=experiment,
        name=name,
        dataset=_dataset(dataset, lake),
        seed=seed,
        parent_run_id=parent,
        sync=sync,
    )
    _stack().append(run)
    if tags:
        run.set_tags(tags)
    return run


# ---------------------------------------------------------------------------- reads
@dataclass(frozen=True)
class RunInfo:
    """A run as recorded: its latest state row, its params, last metric values, tags and lineage."""

    run_id: str
    experiment: str
    name: str | None
    status: str
    dataset_name: str | None
    dataset_version: int | None
    seed: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    parent_run_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    git_sha: str | None = None
    git_dirty: bool | None = None
    python_version: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    user: str | None = None
    artifacts: list[str] = field(default_factory=list)


def _read(
    lake: Lake, table: str, run_ids: Sequence[str] | None = None, columns: Sequence[str] | None = None
) -> pl.DataFrame:
    if not lake.exists(table):
        spec = spec_for(table)
        assert spec is not None
        empty = pl.from_arrow(spec.schema.empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.select(columns) if columns else empty
    flt = pc.field("run_id").isin(list(run_ids)) if run_ids is not None else None
    return lake.read(table, filter=flt, columns=columns)


def _latest_kv(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("at").unique(["run_id", "key"], keep="last", maintain_order=True)


def _latest_metrics(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(["run_id", "key"]).agg(
        pl.col("value").sort_by(["step", "at"]).last(), pl.col("step").max()
    )


def get_run(run_id: str, *, lake: Lake | None = None) -> RunInfo:
    """Return run ``run_id`` as recorded (this process's buffered writes are flushed first).

    Raises:
        RunNotFoundError: no run has that id.
    """
    lake = resolve(lake)
    flush(lake)
    rows = _read(lake, "runs", [run_id])
    if rows.height == 0:
        raise RunNotFoundError(f"run {run_id!r} does not exist in lake {lake.uri}; see 'lakeops runs list'")
    row = rows.sort("at").row(-1, named=True)
    params = _latest_kv(_read(lake, "params", [run_id]))
    tags = _latest_kv(_read(lake, "tags", [run_id]))
    metrics = _latest_metrics(_read(lake, "metrics", [run_id]))
    arts = _read(lake, "artifacts", [run_id], ["path"])["path"].unique().sort().to_list()
    return RunInfo(
        run_id=row["run_id"],
        experiment=row["experiment"],
        name=row["name"],
        status=row["status"],
        dataset_name=row["dataset_name"],
        dataset_version=row["dataset_version"],
        seed=row["seed"],
        params=dict(zip(params["key"].to_list(), params["value"].to_list(), strict=True)),
        metrics=dict(zip(metrics["key"].to_list(), metrics["value"].to_list(), strict=True)),
        tags=dict(zip(tags["key"].to_list(), tags["value"].to_list(), strict=True)),
        parent_run_id=row["parent_run_id"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        error=row["error"],
        git_sha=row["git_sha"],
        git_dirty=row["git_dirty"],
        python_version=row["python_version"],
        packages=json.loads(row["packages_json"]) if row["packages_json"] else {},
        host=row["host"],
        user=row["user"],
        artifacts=arts,
    )


def metric_history(
    run_ids: str | Sequence[str], keys: Sequence[str] | None = None, *, lake: Lake | None = None
) -> pl.DataFrame:
    """Every logged value of the runs' metrics: ``run_id, key, step, value, at`` by run, key, step."""
    lake = resolve(lake)
    flush(lake)
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    frame = _read(lake, "metrics", ids)
    if keys is not None:
        frame = frame.filter(pl.col("key").is_in(list(keys)))
    return frame.select("run_id", "key", "step", "value", "at").sort(["run_id", "key", "step", "at"])


def list_artifacts(run_id: str, *, lake: Lake | None = None) -> pl.DataFrame:
    """The run's artifacts: ``path, sha256, size_bytes, uri, at`` (latest record per path)."""
    lake = resolve(lake)
    flush(lake)
    frame = _read(lake, "artifacts", [run_id])
    return (
        frame.sort("at")
        .unique("path", keep="last")
        .sort("path")
        .select("path", "sha256", "size_bytes", "uri", "at")
    )


def read_artifact(run_id: str, path: str, *, lake: Lake | None = None) -> bytes:
    """Return the bytes of artifact ``path`` of run ``run_id``, checked against its sha256.

    Raises:
        ArtifactIntegrityError: no such artifact, or its bytes do not match the recorded sha256.
    """
    lake = resolve(lake)
    arts = list_artifacts(run_id, lake=lake)
    match = arts.filter(pl.col("path") == path)
    if match.height == 0:
        known = ", ".join(arts["path"].to_list()) or "none"
        raise ArtifactIntegrityError(f"run {run_id} has no artifact {path!r} (artifacts: {known})")
    try:
        data = lake.get_bytes(f"artifacts/runs/{run_id}/{path}")
    except FileNotFoundError:
        raise ArtifactIntegrityError(
            f"artifact {path!r} of run {run_id} is recorded but its file is missing"
        ) from None
    if hashlib.sha256(data).hexdigest() != match["sha256"][0]:
        raise ArtifactIntegrityError(f"artifact {path!r} of run {run_id} does not match its recorded sha256")
    return data


_ATTR_COLUMNS = [
    "run_id", "experiment", "name", "status", "started_at", "ended_at", "parent_run_id", "dataset_name",
    "dataset_version", "seed", "git_sha", "git_dirty", "user", "host", "error",
]  # fmt: skip
_cache: dict[str, tuple[int, float, pl.DataFrame]] = {}
_cache_lock = threading.Lock()


def _pivot(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
    if frame.height == 0:
        return pl.DataFrame({"run_id": []}, schema={"run_id": pl.String})
    wide = frame.pivot(on="key", index="run_id", values="value", aggregate_function=None)
    keys = sorted(c for c in wide.columns if c != "run_id")
    return wide.select("run_id", *[pl.col(k).alias(f"{prefix}.{k}") for k in keys])


def runs_frame(*, lake: Lake | None = None) -> pl.DataFrame:
    """Every run's latest state with ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` columns.

    Cached per lake: rebuilt when this process has committed tracking data since, or after
    ``SEARCH_CACHE_TTL_S`` (to see other processes' runs).
    """
    lake = resolve(lake)
    w = _writer(lake)
    w.flush()
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(lake.uri)
        if hit is not None and hit[0] == w.generation and now - hit[1] < SEARCH_CACHE_TTL_S:
            return hit[2]
    generation = w.generation
    runs = _read(lake, "runs").sort("at").unique("run_id", keep="last").select(_ATTR_COLUMNS)
    metrics = _pivot(
        _latest_metrics(_read(lake, "metrics", columns=["run_id", "key", "value", "step", "at"])), "metrics"
    )
    params = _pivot(_latest_kv(_read(lake, "params")).select("run_id", "key", "value"), "params")
    tags = _pivot(_latest_kv(_read(lake, "tags")).select("run_id", "key", "value"), "tags")
    wide = runs.join(metrics, on="run_id", how="left").join(params, on="run_id", how="left")
    wide = wide.join(tags, on="run_id", how="left").rechunk()
    with _cache_lock:
        _cache[lake.uri] = (generation, now, wide)
    return wide


def search_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,  # noqa: A002 - MLflow's name
    order_by: Sequence[str] | str | None = None,
    max_results: int | None = 1000,
    *,
    lake: Lake | None = None,
) -> pl.DataFrame:
    """Search runs with MLflow's grammar; return a polars frame (one row per run).

    Args:
        experiment: an experiment name, several, or None for all.
        filter: e.g. ``"metrics.auc > 0.8 and params.num_leaves = '31'"`` (see
            ``core.tracking_search`` for the grammar: metrics./params./tags./attributes.,
            = != < <= > >= LIKE ILIKE IN, joined by ``and``).
        order_by: e.g. ``["metrics.auc desc", "attributes.started_at"]``; default newest first.
        max_results: at most this many rows (None: all).
        lake: the lake.

    Returns:
        Attribute columns (``run_id``, ``experiment``, ``name``, ``status``, ``started_at`` ...)
        then ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` columns for keys the returned
        runs have.

    Raises:
        SearchSyntaxError: the filter or order-by does not parse (nothing is evaluated).
    """
    clauses = tracking_search.parse_filter(filter)
    order = tracking_search.parse_order_by(order_by) or [("started_at", True)]
    frame = runs_frame(lake=lake)
    if experiment is not None:
        names = [experiment] if isinstance(experiment, str) else list(experiment)
        frame = frame.filter(pl.col("experiment").is_in(names))
    out = tracking_search.apply(frame, clauses, order, max_results)
    keep = [
        c for c, n in zip(out.columns, out.null_count().row(0), strict=True) if "." not in c or n < out.height
    ]
    return out.select(keep) if out.height else out.select([c for c in out.columns if "." not in c])


def experiments(*, lake: Lake | None = None) -> pl.DataFrame:
    """Experiments with their run counts by status and last start time, newest first."""
    frame = runs_frame(lake=lake)
    return (
        frame.group_by("experiment")
        .agg(
            pl.len().alias("runs"),
            (pl.col("status") == "finished").sum().alias("finished"),
            (pl.col("status") == "failed").sum().alias("failed"),
            (pl.col("status") == "running").sum().alias("running"),
            pl.col("started_at").max().alias("last_started_at"),
        )
        .sort("last_started_at", descending=True, nulls_last=True)
    )


def compare_runs(run_ids: Sequence[str], *, lake: Lake | None = None) -> pl.DataFrame:
    """Side by side: one row per attribute/param/metric (``section, key``), one column per run.

    Raises:
        RunNotFoundError: one of the runs does not exist.
    """
    lake = resolve(lake)
    infos = [get_run(r, lake=lake) for r in run_ids]
    labels = [i.name and f"{i.name} ({i.run_id[-8:]})" or i.run_id for i in infos]
    sections: list[tuple[str, str, list[str | None]]] = []
    for attr in ("experiment", "status", "dataset_name", "dataset_version", "seed", "git_sha", "started_at"):
        sections.append(("run", attr, [_cell(getattr(i, attr)) for i in infos]))
    for sec in ("params", "metrics"):
        keys = sorted({k for i in infos for k in getattr(i, sec)})
        sections += [(sec, k, [_cell(getattr(i, sec).get(k)) for i in infos]) for k in keys]
    data: dict[str, list[Any]] = {"section": [s[0] for s in sections], "key": [s[1] for s in sections]}
    for j, label in enumerate(dict.fromkeys(labels)):
        data[label] = [s[2][j] for s in sections]
    return pl.DataFrame(data, schema={c: pl.String for c in data})


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)
