"""Reading runs back: one run, metric histories, artifacts, and MLflow-style search over a cached pivot."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow.compute as pc

from core.catalog import spec_for
from core.errors import ArtifactIntegrityError, RunNotFoundError
from core.lake import Lake
from core.tracking import search as _search
from core.tracking._writer import flush, writer

__all__ = [
    "RunInfo",
    "compare_runs",
    "experiments",
    "get_run",
    "list_artifacts",
    "metric_history",
    "read_artifact",
    "runs_frame",
    "search_runs",
]

SEARCH_CACHE_TTL_S = 2.0
"""How long ``search_runs`` reuses its pivoted runs frame when this process wrote nothing."""


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

    def lineage(self) -> dict[str, str]:
        """The run's state and lineage as display text, in a fixed order (CLI and UI)."""
        dataset = f"{self.dataset_name}@v{self.dataset_version}" if self.dataset_name else "-"
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "name": self.name or "-",
            "status": self.status,
            "error": self.error or "-",
            "parent_run_id": self.parent_run_id or "-",
            "started_at": str(self.started_at or "-"),
            "ended_at": str(self.ended_at or "-"),
            "dataset": dataset,
            "seed": "-" if self.seed is None else str(self.seed),
            "git_sha": (self.git_sha or "-") + (" (dirty)" if self.git_dirty else ""),
            "python": self.python_version or "-",
            "packages": ", ".join(f"{k}={v}" for k, v in sorted(self.packages.items())),
            "host": self.host or "-",
            "user": self.user or "-",
        }


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


def get_run(run_id: str, *, lake: Lake) -> RunInfo:
    """Return run ``run_id`` as recorded (this process's buffered writes are flushed first).

    Raises:
        RunNotFoundError: no run has that id.
    """
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
    run_ids: str | Sequence[str], keys: str | Sequence[str] | None = None, *, lake: Lake
) -> pl.DataFrame:
    """Every logged value of the runs' metrics: ``run_id, key, step, value, at`` by run, key, step.

    Args:
        run_ids: one run id or several.
        keys: one metric name (``"loss"``) or several; None for all.
        lake: the lake.
    """
    flush(lake)
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    frame = _read(lake, "metrics", ids)
    if keys is not None:
        # a bare string is one key, not an iterable of one-letter keys
        frame = frame.filter(pl.col("key").is_in([keys] if isinstance(keys, str) else list(keys)))
    return frame.select("run_id", "key", "step", "value", "at").sort(["run_id", "key", "step", "at"])


def list_artifacts(run_id: str, *, lake: Lake) -> pl.DataFrame:
    """The run's artifacts: ``path, sha256, size_bytes, uri, at`` (latest record per path)."""
    flush(lake)
    frame = _read(lake, "artifacts", [run_id])
    return (
        frame.sort("at")
        .unique("path", keep="last")
        .sort("path")
        .select("path", "sha256", "size_bytes", "uri", "at")
    )


def read_artifact(run_id: str, path: str, *, lake: Lake) -> bytes:
    """Return the bytes of artifact ``path`` of run ``run_id``, checked against its sha256.

    Raises:
        ArtifactIntegrityError: no such artifact, or its bytes do not match the recorded sha256.
    """
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
_cache: dict[str, tuple[int, float, tuple[int, ...], pl.DataFrame]] = {}
_cache_lock = threading.Lock()


def _pivot(frame: pl.DataFrame, prefix: str, order: list[str]) -> pl.DataFrame:
    """One column per key holding the latest value by ``order`` (``aggregate_function="last"``
    after a sort is several times faster than de-duplicating first, and handles re-logged keys)."""
    if frame.height == 0:
        return pl.DataFrame({"run_id": []}, schema={"run_id": pl.String})
    wide = frame.sort(order).pivot(on="key", index="run_id", values="value", aggregate_function="last")
    keys = sorted(c for c in wide.columns if c != "run_id")
    return wide.select("run_id", *[pl.col(k).alias(f"{prefix}.{k}") for k in keys])


def runs_frame(*, lake: Lake) -> pl.DataFrame:
    """Every run's latest state with ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` columns.

    Cached per lake and keyed by the versions of the four tables it is built from. Within
    ``SEARCH_CACHE_TTL_S`` of the last check, and while this process has committed no tracking
    data, the cached frame is returned as is (other processes' new runs show up after at most
    that long); after it, the table versions are checked (a few ms) and the pivot is rebuilt
    only when one changed.
    """
    w = writer(lake)
    w.flush()
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(lake.uri)
    if hit is not None and hit[0] == w.generation and now - hit[1] < SEARCH_CACHE_TTL_S:
        return hit[3]
    generation = w.generation
    versions = tuple(lake.version(t) if lake.exists(t) else -1 for t in _WIDE_TABLES)
    if hit is not None and hit[2] == versions:
        with _cache_lock:
            _cache[lake.uri] = (generation, time.monotonic(), versions, hit[3])
        return hit[3]
    runs_v, metrics_v, params_v, tags_v = versions
    runs = _full(lake, "runs", runs_v).sort("at").unique("run_id", keep="last").select(_ATTR_COLUMNS)
    metrics = _pivot(_full(lake, "metrics", metrics_v), "metrics", ["step", "at"])
    params = _pivot(_full(lake, "params", params_v), "params", ["at"])
    tags = _pivot(_full(lake, "tags", tags_v), "tags", ["at"])
    wide = runs.join(metrics, on="run_id", how="left").join(params, on="run_id", how="left")
    wide = wide.join(tags, on="run_id", how="left").rechunk()
    with _cache_lock:
        _cache[lake.uri] = (generation, time.monotonic(), versions, wide)
    return wide


_WIDE_TABLES = ("runs", "metrics", "params", "tags")


def _full(lake: Lake, table: str, version: int) -> pl.DataFrame:
    """A whole table at ``version`` through polars' Delta scan (faster than pyarrow here)."""
    if version < 0:
        return _read(lake, table)
    return lake.scan(table, version=version).collect()


def search_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,  # noqa: A002 - MLflow's name
    order_by: Sequence[str] | str | None = None,
    max_results: int | None = 1000,
    *,
    lake: Lake,
    filter_string: str | None = None,
    experiment_names: str | Sequence[str] | None = None,
) -> pl.DataFrame:
    """Search runs with MLflow's grammar; return a polars frame (one row per run).

    Args:
        experiment: an experiment name, several, or None for all.
        filter: e.g. ``"metrics.auc > 0.8 and params.num_leaves = '31'"`` (see
            ``core.tracking.search`` for the grammar: metrics./params./tags./attributes.,
            = != < <= > >= LIKE ILIKE IN, joined by ``and``).
        order_by: e.g. ``["metrics.auc desc", "attributes.started_at"]``; default newest first.
        max_results: at most this many rows (None: all).
        lake: the lake.
        filter_string: MLflow's name for ``filter``.
        experiment_names: MLflow's name for ``experiment``.

    Raises:
        TypeError: both a name and its MLflow alias were given.

    Returns:
        Attribute columns (``run_id``, ``experiment``, ``name``, ``status``, ``started_at`` ...)
        then ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` columns for keys the returned
        runs have.

    Raises:
        SearchSyntaxError: the filter or order-by does not parse (nothing is evaluated).
    """
    if filter_string is not None:
        if filter is not None:
            raise TypeError("pass filter or filter_string (its MLflow name), not both")
        filter = filter_string  # noqa: A001
    if experiment_names is not None:
        if experiment is not None:
            raise TypeError("pass experiment or experiment_names (its MLflow name), not both")
        experiment = experiment_names
    clauses = _search.parse_filter(filter)
    order = _search.parse_order_by(order_by) or [("started_at", True)]
    frame = runs_frame(lake=lake)
    if experiment is not None:
        names = [experiment] if isinstance(experiment, str) else list(experiment)
        frame = frame.filter(pl.col("experiment").is_in(names))
    out = _search.apply(frame, clauses, order, max_results)
    keep = [
        c for c, n in zip(out.columns, out.null_count().row(0), strict=True) if "." not in c or n < out.height
    ]
    return out.select(keep) if out.height else out.select([c for c in out.columns if "." not in c])


def experiments(*, lake: Lake) -> pl.DataFrame:
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


def compare_runs(run_ids: Sequence[str], *, lake: Lake) -> pl.DataFrame:
    """Side by side: one row per attribute/param/metric (``section, key``), one column per run.

    Raises:
        RunNotFoundError: one of the runs does not exist.
    """
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
