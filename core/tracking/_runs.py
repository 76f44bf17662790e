"""Runs: start, log params/metrics/tags/artifacts, end with a status; lineage recorded automatically."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from core.errors import LakeopsError
from core.ids import new_id, utcnow
from core.lake import Lake
from core.tracking._writer import writer

__all__ = ["Run", "Status", "active_run", "start_run"]


Status = Literal["running", "finished", "failed", "killed"]
_KEY = re.compile(r"^[A-Za-z0-9_\-./: ]{1,250}$")
_PACKAGES = ("lakeops", "lightgbm", "polars", "deltalake", "duckdb", "pyarrow", "numpy", "scipy", "pandas")


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


def _who(actor: str | None) -> dict[str, Any]:
    """The run's user: the signed-in principal when auth is on (never the self-declared name), else ``actor``."""
    from core import auth

    who = auth.current_principal()
    return {"user": who.name if who is not None else actor}


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
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "python_version": platform.python_version(),
        "packages_json": json.dumps(packages, sort_keys=True),
        "host": socket.gethostname(),
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
class _Active(threading.local):
    """Each thread's stack of active runs (``__init__`` runs once per thread, on its first use)."""

    def __init__(self) -> None:
        self.runs: list[Run] = []


_active = _Active()


def _stack() -> list[Run]:
    return _active.runs


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
        actor: str | None = None,
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
        self._writer = writer(lake)
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
            **_who(actor),
        }
        self._writer.add_row(
            "runs",
            {
                **self._base,
                "status": "running",
                "started_at": self.started_at,
                "ended_at": None,
                "error": None,
                "at": self.started_at,
            },
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
    lake: Lake,
    actor: str | None = None,
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
        lake: the lake.
        actor: who starts it, recorded as the run's ``user`` (the signed-in principal wins when
            auth is on; None: not recorded).

    Returns:
        The started ``Run``. ``with start_run(...) as run:`` ends it ``finished``, ``failed``
        (an exception, with its message) or ``killed`` (KeyboardInterrupt).

    Raises:
        DatasetNotFoundError: the dataset (version) to resolve does not exist.
    """
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
        actor=actor,
    )
    _stack().append(run)
    if tags:
        run.set_tags(tags)
    return run
