"""The compute engine: ``[compute]`` settings and the Dask client that heavy steps run on.

``local`` (the default) runs everything in this process, unchanged. ``dask`` runs training
(``lightgbm.dask``), batch scoring and drift checks on a Dask cluster over the same lake::

    [compute]
    engine = "dask"               # "local" (default) or "dask"
    scheduler = "local:2"         # "tcp://host:8786", or "local:N": a LocalCluster of N
                                  # worker processes on 127.0.0.1, started for the work and closed after
    memory_limit = "4GB"          # per worker of a local:N cluster ("auto": RAM / N)
    threads_per_worker = 1
    timeout_s = 1800              # one distributed job (a drift check, a training) at most this long
    exact_values = 1000000        # numeric drift columns with at most this many usable values are
                                  # gathered and computed exactly; larger ones from merged histograms
    grid = 4096                   # histogram cells of a numeric column (reference quantiles)

This package owns ``dask`` and ``distributed`` (``lightgbm.dask`` lives in ``core.training``, the
owner of LightGBM). Dask is an optional dependency (``pip install 'lakeops[dask]'``): nothing
here imports it until a Dask engine is asked for.

A ``LocalCluster`` takes seconds to start, so a long-lived process (or a test) can start one and
``use`` it: every ``session`` inside shares it instead of starting its own.
"""

from __future__ import annotations

import contextlib
import copy
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.config import Settings
from core.errors import ComputeError, ConfigError

__all__ = ["ENGINES", "WORKER_ENV", "ComputeConfig", "compute_config", "engine_info", "local_cluster",
           "session", "use"]

ENGINES = ("local", "dask")
_LOCAL = re.compile(r"^local:(\d+)$")
_KEYS = {"engine", "scheduler", "memory_limit", "threads_per_worker", "timeout_s", "exact_values", "grid"}


@dataclass(frozen=True)
class ComputeConfig:
    """The ``[compute]`` section, validated (see the module docstring for each key)."""

    engine: str = "local"
    scheduler: str = "local:2"
    memory_limit: str = "auto"
    threads_per_worker: int = 1
    timeout_s: float = 1800.0
    exact_values: int = 1_000_000
    grid: int = 4096

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"[compute] engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not (_LOCAL.match(self.scheduler) or self.scheduler.startswith(("tcp://", "tls://"))):
            raise ConfigError(
                f"[compute] scheduler must be 'tcp://host:port' or 'local:N' (N workers on 127.0.0.1), "
                f"got {self.scheduler!r}"
            )
        m = _LOCAL.match(self.scheduler)
        if m and not 1 <= int(m.group(1)) <= 64:
            raise ConfigError(f"[compute] scheduler {self.scheduler!r}: N must be 1-64 workers")
        if self.threads_per_worker < 1 or self.timeout_s <= 0 or self.exact_values < 0 or self.grid < 16:
            raise ConfigError(
                "[compute] threads_per_worker must be >= 1, timeout_s > 0, exact_values >= 0 and grid >= 16"
            )

    @property
    def local_workers(self) -> int | None:
        """N of a ``local:N`` scheduler, else None."""
        m = _LOCAL.match(self.scheduler)
        return int(m.group(1)) if m else None

    def with_engine(self, engine: str | None) -> ComputeConfig:
        """This config with ``engine`` instead (None: unchanged)."""
        if engine is None or engine == self.engine:
            return self
        return ComputeConfig(engine, self.scheduler, self.memory_limit, self.threads_per_worker, self.timeout_s,
                             self.exact_values, self.grid)


def compute_config(settings: Settings, *, engine: str | None = None) -> ComputeConfig:
    """Read ``[compute]`` of ``settings`` (``engine`` overrides the configured engine, e.g. ``--engine dask``).

    Raises:
        ConfigError: an unknown key or a bad value, named.
    """
    sec: Mapping[str, Any] = settings.section("compute")
    bad = set(sec) - _KEYS
    if bad:
        raise ConfigError(f"[compute] unknown key(s) {sorted(bad)}; known: {', '.join(sorted(_KEYS))}")
    try:
        cfg = ComputeConfig(
            engine=str(sec.get("engine", "local")),
            scheduler=str(sec.get("scheduler", "local:2")),
            memory_limit=str(sec.get("memory_limit", "auto")),
            threads_per_worker=int(sec.get("threads_per_worker", 1)),
            timeout_s=float(sec.get("timeout_s", 1800.0)),
            exact_values=int(sec.get("exact_values", 1_000_000)),
            grid=int(sec.get("grid", 4096)),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"[compute] invalid value: {exc}") from None
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return cfg.with_engine(engine)


WORKER_ENV = {
    # polars' jemalloc keeps freed pages for seconds and Arrow's pool keeps them until asked: a
    # worker that just read a partition then counts hundreds of MB it no longer uses against its
    # memory limit, and the nanny restarts it (measured: a 1.12 GiB worker building a 500 MB
    # training block was killed at 95 %). Returned at once, the limit means what it says.
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}
"""Environment of ``local:N`` worker processes (set before they import polars and pyarrow)."""


def local_cluster(workers: int, *, memory_limit: str = "auto", threads_per_worker: int = 1) -> Any:
    """A ``LocalCluster`` of worker processes on 127.0.0.1, no dashboard, with ``WORKER_ENV``.

    Raises:
        ComputeError: Dask is not installed.
    """
    distributed = _import_distributed()
    import dask

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENV}
    # A worker holds what it computes (a training block, a partition's keys): spilling it to disk
    # and reading it back would copy it, and pausing at 80 % stalls a worker whose block is most of
    # its limit; the nanny still restarts one that passes 95 %.
    # The nannies get a deep copy of the whole config: a nanny keeps a *shallow* copy of the global
    # one for the workers it (re)starts, so a ``dask.config.set`` block around the cluster's start is
    # undone in it when the block ends, and a worker restarted later came back with the defaults
    # (measured: target 0.6, spill 0.7, pause 0.8; it paused at 83 % of its limit).
    memory = {"target": False, "spill": False, "pause": 0.92}
    config = dask.config.merge(copy.deepcopy(dask.config.config),
                               {"distributed": {"worker": {"memory": memory}, "nanny": {"pre-spawn-environ": environ}}})
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return distributed.LocalCluster(
            n_workers=workers, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
            dashboard_address=None, memory_limit=memory_limit, config=config,
        )


_CURRENT: list[Any] = []  # clients handed to ``use``, innermost last
_LOCK = threading.Lock()


@contextlib.contextmanager
def use(client: Any) -> Iterator[Any]:
    """Make ``client`` the one every ``session`` in this process uses until the block ends.

    The caller owns the client (and its cluster) and closes it; sessions never do.
    """
    with _LOCK:
        _CURRENT.append(client)
    try:
        yield client
    finally:
        with _LOCK:
            _CURRENT.remove(client)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # the optional extra is missing
        raise ComputeError(
            "the dask engine needs Dask: pip install 'lakeops[dask]' (dask, distributed, scikit-learn)"
        ) from exc
    return distributed


@contextlib.contextmanager
def session(cfg: ComputeConfig) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cfg``: the one given to ``use``, else a new one closed on exit.

    ``local:N`` starts a ``LocalCluster`` of N worker processes on 127.0.0.1 (no dashboard) and
    shuts it down with the block, so no worker outlives the work; ``tcp://...`` connects to a
    running scheduler (and leaves it running).

    Raises:
        ComputeError: Dask is not installed or the scheduler cannot be reached.
    """
    with _LOCK:
        shared = _CURRENT[-1] if _CURRENT else None
    if shared is not None:
        yield shared
        return
    distributed = _import_distributed()
    cluster = None
    try:
        if cfg.local_workers is not None:
            cluster = local_cluster(cfg.local_workers, memory_limit=cfg.memory_limit,
                                    threads_per_worker=cfg.threads_per_worker)
            client = distributed.Client(cluster, timeout=60)
        else:
            client = distributed.Client(cfg.scheduler, timeout=30)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ComputeError(f"cannot reach the Dask scheduler {cfg.scheduler}: {exc}") from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def engine_info(client: Any) -> dict[str, Any]:
    """What a run records about the engine: ``engine``, ``workers``, ``threads``, ``scheduler``."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "engine": "dask",
        "workers": len(workers),
        "threads": int(sum(int(w.get("nthreads", 1)) for w in workers.values())),
        "scheduler": str(info.get("address", "")),
    }
