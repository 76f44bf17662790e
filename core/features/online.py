"""Online values: the latest feature vector per entity, materialised into ``online/<view>_v<N>`` incrementally.

A materialisation computes, for entities at time ``as_of`` (now by default), exactly what a
training set would give a label row of that entity at that time (``core.features.pit``, the same
function), and appends the rows to the view version's online table with ``__as_of``,
``__materialization_id``, ``__source_version`` and ``__full``. The current value of an entity
is its row of the newest materialisation since the last full one. ``feature_materializations``
records each run.

Incremental (the default once a full run exists for the version): with ``H`` = the previous
``as_of`` minus the view's longest window, only entities with a source row after ``H`` can have
changed (new rows, rows leaving a window, rows that were in the future at the last run), so only
those are recomputed, from all their rows. A full run instead when the source was replaced since,
or when rows at or before ``H`` were added (late data: counted between the two source versions),
or with ``full=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from core import datasets
from core.catalog import TS
from core.errors import FeatureViewError, FeatureViewNotFoundError
from core.features.definitions import FeatureView
from core.features.pit import prepare, time_us, values_at
from core.features.store import get_view, load_source, versions, view_schema
from core.ids import new_id, utcnow
from core.lake import Lake

__all__ = [
    "ONLINE_META",
    "Materialization",
    "current_values",
    "entity_vector",
    "freshness",
    "last_materialization",
    "materialize",
    "materialize_all",
    "materializations",
    "online_table",
]

ONLINE_META = ("__as_of", "__materialization_id", "__source_version", "__full")
"""The online table's own columns, after the entity and the features."""
_RUNS = "feature_materializations"
_ARROW: dict[str, pa.DataType] = {"Int64": pa.int64(), "Float64": pa.float64(), "String": pa.string(), "Boolean": pa.bool_()}


def online_table(view: str, version: int) -> str:
    """The lake table holding the online values of view ``view`` version ``version``."""
    return f"online/{view}_v{version}"


@dataclass(frozen=True)
class Materialization:
    """One materialisation run."""

    materialization_id: str
    view: str
    version: int
    mode: str
    as_of: datetime
    entities: int
    source_version: int
    online_version: int
    why: str = ""


def last_materialization(view: str, version: int, *, lake: Lake) -> dict[str, Any] | None:
    """The newest ``feature_materializations`` row of a view version, or None."""
    runs = lake.read_or_empty(_RUNS).filter((pl.col("view") == view) & (pl.col("view_version") == version))
    if runs.height == 0:
        return None
    return runs.sort(["as_of", "materialization_id"]).row(-1, named=True)


def _schema(view: FeatureView, entity_dtype: pl.DataType, lake: Lake) -> pa.Schema:
    assert view.version is not None
    dtypes = view_schema(view.name, view.version, lake=lake)
    fields = [pa.field(view.entity, pa.int64() if entity_dtype.is_integer() else pa.string(), nullable=False)]
    fields += [pa.field(n, _ARROW[str(dtypes[n])]) for n in view.feature_names]
    fields += [pa.field("__as_of", TS, nullable=False), pa.field("__materialization_id", pa.string(), nullable=False),
               pa.field("__source_version", pa.int64()), pa.field("__full", pa.bool_())]
    return pa.schema(fields)


def _full_reason(view: FeatureView, prev: dict[str, Any] | None, source_version: int, *, lake: Lake) -> str:
    """Why this run must be full ("" when an incremental run is exact)."""
    if prev is None:
        return "first materialisation of this version"
    if int(prev["source_version"]) == source_version:
        return ""
    replaced = datasets.versions(view.source, lake=lake).filter(
        (pl.col("version") > int(prev["source_version"])) & (pl.col("version") <= source_version) & (pl.col("mode") == "replace")
    )
    if replaced.height:
        return f"dataset {view.source!r} was replaced (v{min(replaced['version'].to_list())})"
    horizon = int(prev["as_of"].timestamp() * 1_000_000) - view.max_window_us
    table = datasets.table_name(view.source)

    def upto(v: int) -> int:
        return int(lake.scan(table, version=v).select((time_us(view.event_time) <= horizon).sum()).collect().item() or 0)

    late = upto(source_version) - upto(int(prev["source_version"]))
    return f"{late} late row(s) at or before the incremental horizon" if late else ""


def materialize(
    view: str,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    full: bool = False,
    lake: Lake,
    actor: str | None = None,
) -> Materialization:
    """Materialise a view version's feature values at ``as_of`` into its online table (incrementally when exact).

    Args:
        view: the view name.
        version: its version (latest by default).
        as_of: the time the values are computed at (now by default; never before the last run's).
        full: recompute every entity even when an incremental run would be exact.
        lake: the lake.
        actor: who runs it (commit metadata).

    Raises:
        FeatureViewNotFoundError: no such view or version.
        FeatureViewError: ``as_of`` before the last run's, or a source that does not fit.
    """
    fv = get_view(view, version, lake=lake)
    assert fv.version is not None
    started = utcnow()
    as_of = as_of or started
    prev = last_materialization(fv.name, fv.version, lake=lake)
    if prev is not None and as_of < prev["as_of"]:
        raise FeatureViewError(
            f"as_of {as_of.isoformat()} is before the last materialisation of {fv.name} v{fv.version} "
            f"({prev['as_of'].isoformat()}); online values only move forward"
        )
    events, sv = load_source(fv, lake=lake)
    why = "requested" if full else _full_reason(fv, prev, sv, lake=lake)
    e = fv.entity
    as_of_us = int(as_of.timestamp() * 1_000_000)
    if why:
        mode = "full"
        entities = events.select(pl.col(e).drop_nulls().unique()).to_series()
    else:
        assert prev is not None
        mode = "incremental"
        horizon = int(prev["as_of"].timestamp() * 1_000_000) - fv.max_window_us
        entities = events.filter(time_us(fv.event_time) > horizon).select(pl.col(e).drop_nulls().unique()).to_series()
        events = events.filter(pl.col(e).is_in(entities.implode()))
    mid = new_id()
    table = online_table(fv.name, fv.version)
    online_version = lake.version(table) if lake.exists(table) else -1
    if entities.len():
        prepared = prepare(fv, events)
        values = values_at(prepared, entities, _repeat(as_of_us, entities.len()))
        frame = pl.concat([entities.to_frame(e), values], how="horizontal").with_columns(
            pl.lit(as_of).cast(pl.Datetime("us", "UTC")).alias("__as_of"), pl.lit(mid).alias("__materialization_id"),
            pl.lit(sv, dtype=pl.Int64).alias("__source_version"), pl.lit(mode == "full").alias("__full"),
        )
        online_version = lake.append(
            table, frame, schema=_schema(fv, events.schema[e], lake),
            metadata={"actor": actor or "", "feature_view": fv.name, "version": fv.version, "materialization_id": mid},
        )
    lake.append(_RUNS, [{
        "materialization_id": mid, "view": fv.name, "view_version": fv.version, "source_dataset": fv.source,
        "source_version": sv, "as_of": as_of, "mode": mode, "entities": int(entities.len()), "online_table": table,
        "online_version": online_version, "started_at": started, "at": utcnow(), "created_by": actor,
    }], metadata={"actor": actor or "", "feature_view": fv.name, "action": "materialize"})
    return Materialization(mid, fv.name, fv.version, mode, as_of, int(entities.len()), sv, online_version, why)


def _repeat(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int64)


def materialize_all(*, lake: Lake, actor: str | None = None) -> dict[str, Any]:
    """Materialise every view version that is the latest of its view or used by a champion model.

    The scheduler's ``features_materialize`` job. A view that fails is reported, not raised, so
    one broken view does not hold the others back.

    Returns:
        ``{"views": {"<view>@v<N>": {"mode", "entities", "as_of"} or {"error"}}}``.
    """
    wanted = {(r["name"], int(r["version"])) for r in versions(lake=lake).group_by("name").agg(pl.col("version").max()).iter_rows(named=True)}
    wanted |= _champion_views(lake)
    out: dict[str, Any] = {}
    for name, version in sorted(wanted):
        try:
            m = materialize(name, version=version, lake=lake, actor=actor)
            out[f"{name}@v{version}"] = {"mode": m.mode, "entities": m.entities, "as_of": m.as_of.isoformat(), "why": m.why}
        except (FeatureViewError, FeatureViewNotFoundError) as exc:
            out[f"{name}@v{version}"] = {"error": str(exc)}
    return {"views": out}


def _champion_views(lake: Lake) -> set[tuple[str, int]]:
    """(view, version) pairs named in the signatures of the champion models."""
    from core import registry

    found: set[tuple[str, int]] = set()
    models = registry.list_models(lake=lake)
    for row in models.filter(pl.col("champion").is_not_null()).iter_rows(named=True):
        try:
            sig = registry.get_version(row["model"], int(row["champion"]), lake=lake).signature
        except Exception:  # noqa: BLE001, S112 - a model that cannot be read does not stop the job
            continue
        for v in sig.get("feature_views") or ():
            found.add((v["view"], int(v["version"])))
    return found


def current_values(view: str, version: int, *, lake: Lake) -> tuple[pl.DataFrame, int]:
    """The current online values of a view version: one row per entity, and the table version read.

    Raises:
        FeatureViewError: the version was never materialised (the message says how).
    """
    table = online_table(view, version)
    if not lake.exists(table):
        raise FeatureViewError(
            f"feature view {view} v{version} has no online values yet; run: lakeops features materialize {view} --version {version}"
        )
    tv = lake.version(table)
    scan = lake.scan(table, version=tv)
    base = scan.filter(pl.col("__full")).select(pl.col("__materialization_id").max()).collect().item()
    schema = scan.collect_schema()
    entity = next(iter(schema))
    frame = (scan.filter(pl.col("__materialization_id") >= (base or "")).collect()
             .sort("__materialization_id").unique(entity, keep="last", maintain_order=True).sort(entity))
    return frame, tv


def entity_vector(view: str, entity: Any, *, version: int | None = None, lake: Lake) -> dict[str, Any]:
    """One entity's current online feature vector with its ``__as_of`` (for people: the Features page, the CLI).

    Raises:
        FeatureViewError: no online values, or no row for that entity.
    """
    fv = get_view(view, version, lake=lake)
    assert fv.version is not None
    frame, _ = current_values(fv.name, fv.version, lake=lake)
    key = frame.schema[fv.entity]
    try:
        value = int(entity) if key.is_integer() else str(entity)
    except ValueError:
        raise FeatureViewError(f"{fv.entity} is an integer key; got {entity!r}") from None
    row = frame.filter(pl.col(fv.entity) == value)
    if row.height == 0:
        raise FeatureViewError(f"{fv.entity}={entity!r} has no online values in {fv.name} v{fv.version} (missing = {fv.missing!r})")
    return row.row(0, named=True)


def materializations(view: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """The ``feature_materializations`` rows (all views, or one), newest first."""
    runs = lake.read_or_empty(_RUNS)
    if view is not None:
        runs = runs.filter(pl.col("view") == view)
    return runs.sort(["as_of", "materialization_id"], descending=True)


def freshness(*, lake: Lake) -> pl.DataFrame:
    """Per view version that has been materialised: the last run, its ``as_of``, age and source lag.

    Columns: ``view, version, as_of, age_s, mode, entities, source, source_version,
    latest_source_version, runs``.
    """
    runs = lake.read_or_empty(_RUNS)
    schema: dict[str, pl.DataType] = {
        "view": pl.String(), "version": pl.Int64(), "as_of": pl.Datetime("us", "UTC"), "age_s": pl.Float64(),
        "mode": pl.String(), "entities": pl.Int64(), "source": pl.String(), "source_version": pl.Int64(),
        "latest_source_version": pl.Int64(), "runs": pl.Int64(),
    }
    if runs.height == 0:
        return pl.DataFrame(schema=schema)
    now = utcnow()
    last = runs.sort(["as_of", "materialization_id"]).group_by(["view", "view_version"]).agg(
        pl.col("as_of").last(), pl.col("mode").last(), pl.col("entities").last(), pl.col("source_dataset").last(),
        pl.col("source_version").last(), pl.len().cast(pl.Int64).alias("runs"))
    rows = []
    for r in last.sort(["view", "view_version"]).iter_rows(named=True):
        try:
            latest = datasets.latest_version(r["source_dataset"], lake=lake)
        except Exception:  # noqa: BLE001 - a dropped source shows as unknown
            latest = None
        rows.append({"view": r["view"], "version": r["view_version"], "as_of": r["as_of"],
                     "age_s": (now - r["as_of"]).total_seconds(), "mode": r["mode"], "entities": r["entities"],
                     "source": r["source_dataset"], "source_version": r["source_version"],
                     "latest_source_version": latest, "runs": r["runs"]})
    return pl.DataFrame(rows, schema=schema)
