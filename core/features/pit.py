"""Point-in-time feature values: each (entity, time) gets every feature as it was known at that time, never later.

Pure: frames in, frames out. The same function computes training sets (one query row per label
row) and online values (one query row per entity at the materialisation time), so the two
cannot disagree.

How (vectorised, no per-row Python):

1. The source rows are reduced to the entity, the event time (int64 microseconds) and one value
   column per distinct expression, and sorted by (entity, time).
2. ``join_asof`` (backward, by entity, exact matches allowed) finds for each query row the last
   source row at or before its time: ``hi``. A latest-value feature is that row's value.
3. For a window ``W`` a second ``join_asof`` at ``time - W`` finds ``lo``; the window's rows are
   ``(lo, hi]``, a contiguous run of the sorted source. Sums, counts, minima and maxima of all
   windows come from one ``numpy.ufunc.reduceat`` per feature over interleaved
   ``[start, hi + 1]`` bounds: the work is the source size plus the total window length, and each
   window is summed from its own rows in time order, so its value does not depend on which other
   query rows were asked for.

Boundaries: a source row at exactly the query time counts as known (``<=``), like Feast; a row at
exactly ``time - W`` is outside the window. Rows without an entity or an event time are left out
(counted in ``PreparedEvents.dropped``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from core.errors import FeatureViewError
from core.features.definitions import Feature, FeatureView, window_text

__all__ = ["PreparedEvents", "check_label_times", "check_windows", "point_in_time", "prepare", "time_us", "values_at"]

_T = "__t"
_I = "__i"
_R = "__r"


def time_us(column: pl.Expr | str) -> pl.Expr:
    """An event-time column as int64 microseconds since the epoch (UTC; a date is its midnight)."""
    c = pl.col(column) if isinstance(column, str) else column
    return c.cast(pl.Datetime("us", "UTC")).dt.epoch("us")


@dataclass(frozen=True)
class PreparedEvents:
    """A view's source rows, reduced and sorted for point-in-time lookups (see ``prepare``).

    Attributes:
        view: the definition.
        schema: each feature's output dtype.
        by_time: ``entity, __t, __i`` sorted by time (``__i``: the row in ``latest``'s order),
            for latest values.
        by_entity: ``entity, __t, __i`` sorted by (entity, time) (``__i``: the position), for
            windows; None when the view has no window.
        latest: per latest-value feature, its values (source order, nulls left out).
        agg_values: per aggregate feature, ``(values, valid)`` numpy arrays in ``by_entity`` order.
        group_start: for each ``by_entity`` row, the position of its entity's first row.
        dropped: source rows left out (null entity or event time).
        span_us: last minus first event time (0 without rows).
    """

    view: FeatureView
    schema: dict[str, pl.DataType]
    by_time: pl.DataFrame
    by_entity: pl.DataFrame | None
    latest: dict[str, pl.Series]
    agg_values: dict[str, tuple[np.ndarray, np.ndarray]]
    group_start: np.ndarray
    dropped: int
    span_us: int

    @property
    def rows(self) -> int:
        """Source rows used."""
        return self.by_time.height


def prepare(view: FeatureView, events: pl.DataFrame, *, schema: dict[str, pl.DataType] | None = None) -> PreparedEvents:
    """Evaluate the view's row-level expressions on the source rows and sort them for lookups.

    Only narrow keys are sorted (entity, time, row number): latest values are gathered from the
    unsorted columns by row number, and only aggregated columns are put in (entity, time) order.

    Args:
        view: the feature view.
        events: the source rows (at least the entity, the event time and the referenced columns).
        schema: the features' output dtypes (``view.output_schema(events.schema)`` when None).

    Raises:
        FeatureViewError: a definition that does not fit the source (named), or two rows of one
            entity at one time when the view has a latest-value feature (which would be ambiguous).
    """
    schema = schema or view.output_schema(events.schema)
    e = view.entity
    edtype = events.schema[e]
    if not (edtype.is_integer() or edtype == pl.String):
        raise FeatureViewError(f"feature view {view.name!r}: entity column {e!r} has type {edtype}; use a string or integer key")
    try:
        frame = events.select(
            pl.col(e).cast(pl.Int64 if edtype.is_integer() else pl.String), time_us(view.event_time).alias(_T),
            *[f.compiled().alias(f.name) for f in view.features],
        )
        # latest values in their output type; aggregated values as int64 (exact sums) or float64
        frame = frame.with_columns(
            (pl.col(f.name).cast(schema[f.name]) if f.agg is None
             else pl.col(f.name) if f.agg == "count"
             else pl.col(f.name).cast(pl.Float64 if frame.schema[f.name].is_float() else pl.Int64))
            for f in view.features
        )
    except pl.exceptions.PolarsError as exc:
        raise FeatureViewError(f"feature view {view.name!r}: cannot compute its features: {str(exc).splitlines()[0]}") from None
    n_all = frame.height
    ok = frame.select((pl.col(e).is_not_null() & pl.col(_T).is_not_null()).all()).item() if n_all else True
    if not ok:
        frame = frame.filter(pl.col(e).is_not_null() & pl.col(_T).is_not_null())
    n = frame.height
    narrow = frame.select(e, _T).with_row_index(_I)
    by_time = narrow.sort(_T)
    t_sorted = by_time[_T].to_numpy()
    span = int(t_sorted[-1] - t_sorted[0]) if n else 0
    windowed = [f for f in view.features if f.agg is not None]
    by_entity = None
    group_start = np.zeros(0, dtype=np.int64)
    aggs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if windowed:
        # a stable sort of the time-sorted key by entity code (ints, not strings): contiguity per
        # entity is all the windows need, and one integer key sorts ~2.5x faster than (entity, time)
        codes = pl.col(e) if edtype.is_integer() else pl.col(e).cast(pl.Categorical).to_physical()
        perm = by_time.select(pl.arg_sort_by(codes, maintain_order=True)).to_series()
        by_entity = by_time[perm]
        src = by_entity[_I]
        by_entity = by_entity.drop(_I).with_row_index(_I)
        ent = by_entity[e]
        first = ent.ne_missing(ent.shift(1)).fill_null(True).to_numpy() if n else np.zeros(0, dtype=bool)
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0)).astype(np.int64)
        cols = frame.select([f.name for f in windowed])[src]  # one multi-threaded gather
        for f in windowed:
            col = cols[f.name]
            valid = col.is_not_null().to_numpy()
            if f.agg == "count":
                aggs[f.name] = (valid.astype(np.int64), valid)
            else:
                aggs[f.name] = (col.fill_null(0.0 if col.dtype == pl.Float64 else 0).to_numpy(), valid)
    if view.has_latest and n > 1:
        _refuse_duplicates(view, by_time, t_sorted)
    latest = {f.name: frame[f.name] for f in view.features if f.agg is None}
    return PreparedEvents(view, schema, by_time, by_entity, latest, aggs, group_start, n_all - n, span)


def _refuse_duplicates(view: FeatureView, by_time: pl.DataFrame, t: np.ndarray) -> None:
    """Two rows of one entity at one time make a latest value ambiguous: refuse them (named)."""
    same = t[1:] == t[:-1]
    if not same.any():
        return
    near = np.zeros(t.size, dtype=bool)  # rows sharing their time with a neighbour: the only suspects
    near[1:] |= same
    near[:-1] |= same
    e = view.entity
    suspects = by_time.filter(pl.Series(near)).select(e, _T)
    dup = suspects.filter(pl.struct(e, _T).is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        when = pl.select(pl.lit(first[_T]).cast(pl.Datetime("us", "UTC"))).item()
        raise FeatureViewError(
            f"feature view {view.name!r}: dataset {view.source!r} has {dup.unique().height} ({e}, {view.event_time}) "
            f"pair(s) with more than one row, first {e}={first[e]!r} at {when}; a latest value would be "
            "ambiguous: de-duplicate the source, or aggregate over a window"
        )


def check_windows(prepared: PreparedEvents) -> None:
    """Refuse a window longer than the source's whole span of event times.

    Such a window makes every aggregate an all-time aggregate (and usually means a typo: ``300d``
    for ``30d``).

    Raises:
        FeatureViewError: naming the feature, its window and the span.
    """
    view = prepared.view
    if prepared.rows == 0:
        raise FeatureViewError(f"feature view {view.name!r}: dataset {view.source!r} has no rows with an entity and an event time")
    for f in view.features:
        if f.window_us and f.window_us > prepared.span_us:
            raise FeatureViewError(
                f"feature view {view.name!r}, feature {f.name!r}: window {f.window} is longer than the data: the events of "
                f"{view.source!r} span {window_text(prepared.span_us)}"
            )


def values_at(prepared: PreparedEvents, entities: pl.Series, times: pl.Series | np.ndarray) -> pl.DataFrame:
    """Each feature's value for each (entity, time), as known at that time.

    Args:
        prepared: the view's source rows (``prepare``).
        entities: the entity of each query row (nulls get each feature's fill).
        times: each query row's time (a datetime Series or int64 microseconds), not null.

    Returns:
        One row per query row, in the given order, one column per feature (``prepared.schema``).

    Raises:
        FeatureViewError: an entity column of another type than the source's.
    """
    view = prepared.view
    e = view.entity
    src = prepared.by_time.schema[e]
    if entities.dtype != src:
        if src == pl.Int64 and entities.dtype.is_integer():
            entities = entities.cast(pl.Int64)
        elif entities.dtype == pl.Null:
            entities = entities.cast(src)
        else:
            raise FeatureViewError(
                f"entity column {e!r} has type {entities.dtype} but the source of feature view {view.name!r} has {src}"
            )
    t_us = times if isinstance(times, np.ndarray) else pl.select(time_us(pl.lit(times))).to_series().to_numpy()
    n = entities.len()
    query = pl.DataFrame({e: entities.alias(e), _T: np.asarray(t_us, dtype=np.int64)}).with_row_index(_R)
    out: dict[str, pl.Series] = {}
    latest = [f for f in view.features if f.agg is None]
    if latest:
        query = query.sort(_T)
        order = query[_R].to_numpy()  # sorted query row k is caller row order[k]
        hi = np.empty(n, dtype=np.int64)
        hi[order] = _asof(query, prepared.by_time, e)  # a row of ``latest`` (source order), -1: none yet
        found = hi >= 0
        idx = pl.Series(hi, dtype=pl.Int64)
        if not found.all():
            idx = pl.select(pl.when(pl.lit(pl.Series(found))).then(pl.lit(idx))).to_series()  # null: no row yet
        for f in latest:
            if prepared.rows:
                vals = prepared.latest[f.name].gather(idx)
            else:
                vals = pl.repeat(None, n, dtype=prepared.schema[f.name], eager=True)
            if f.fill is not None and not found.all():
                vals = pl.select(pl.when(pl.lit(pl.Series(found))).then(pl.lit(vals))
                                 .otherwise(pl.lit(f.fill, dtype=vals.dtype))).to_series()
            out[f.name] = vals.alias(f.name)
    if prepared.by_entity is not None:
        key = prepared.by_entity
        by_e = query.sort([e, _T])  # time order within each entity, as join_asof needs
        order_e = by_e[_R].to_numpy()
        hi_s = _asof(by_e, key, e)  # positions in (entity, time) order
        for w in sorted({f.window_us for f in view.features if f.window_us}):
            lo_s = _asof(by_e.with_columns(pl.col(_T) - w), key, e)
            ok = hi_s >= 0
            start = np.where(lo_s >= 0, lo_s + 1, prepared.group_start[np.where(ok, hi_s, 0)] if key.height else 0)
            rows = np.flatnonzero(ok & (start <= hi_s))
            # ascending starts, so reduceat walks the source once (the key is in entity-code order,
            # which is not the query's string order)
            rows = rows[np.argsort(start[rows], kind="stable")]
            bounds = np.empty(2 * rows.size, dtype=np.int64)
            bounds[0::2] = start[rows]
            bounds[1::2] = hi_s[rows] + 1
            caller = order_e[rows]  # the caller's row of each window
            for f in view.features:
                if f.window_us == w:
                    out[f.name] = _aggregate(f, prepared, caller, bounds, n, prepared.schema[f.name])
    return pl.DataFrame([out[name] for name in view.feature_names])


def _asof(query: pl.DataFrame, key: pl.DataFrame, entity: str) -> np.ndarray:
    """For each query row: ``__i`` of the last key row of its entity at or before its time, -1 if none.

    Both frames must be sorted by time within each entity (``join_asof`` with ``by``).
    """
    if key.height == 0:
        return np.full(query.height, -1, dtype=np.int64)
    j = query.join_asof(key, on=_T, by=entity, strategy="backward", check_sortedness=False, allow_parallel=True)
    return j[_I].cast(pl.Int64).fill_null(-1).to_numpy()


def _aggregate(f: Feature, prepared: PreparedEvents, rows: np.ndarray, bounds: np.ndarray, n: int,
               dtype: pl.DataType) -> pl.Series:
    """One aggregate feature over the non-empty windows ``rows`` with interleaved ``bounds``."""
    values, valid = prepared.agg_values[f.name]
    count = np.zeros(n, dtype=np.int64)
    if rows.size:
        count[rows] = _reduce(np.add, valid.astype(np.int64), bounds)
    has = count > 0
    if f.agg == "count":
        result: np.ndarray = count
    elif f.agg in ("sum", "mean"):
        total = np.zeros(n, dtype=values.dtype)
        if rows.size:
            total[rows] = _reduce(np.add, values, bounds)  # nulls were filled with 0
        result = total if f.agg == "sum" else np.divide(total, np.where(has, count, 1), dtype=np.float64)
    else:
        big = np.inf if values.dtype.kind == "f" else np.iinfo(np.int64).max
        if f.agg == "min":
            masked = np.where(valid, values, big)
            ufunc: np.ufunc = np.minimum
        else:
            masked = np.where(valid, values, -big)
            ufunc = np.maximum
        result = np.zeros(n, dtype=values.dtype)
        if rows.size:
            result[rows] = _reduce(ufunc, masked, bounds)
    series = pl.Series(f.name, result).cast(dtype)
    fill = f.fill
    if has.all():
        return series
    return pl.select(
        pl.when(pl.lit(pl.Series(has))).then(pl.lit(series)).otherwise(pl.lit(fill, dtype=dtype) if fill is not None else None)
    ).to_series().alias(f.name)


def _reduce(ufunc: Any, values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``ufunc`` over each ``[bounds[2k], bounds[2k+1])`` (all non-empty, starts ascending)."""
    padded = np.append(values, values[:1] if values.size else np.zeros(1, values.dtype))
    return ufunc.reduceat(padded, bounds)[0::2]


def point_in_time(
    view: FeatureView, events: pl.DataFrame, labels: pl.DataFrame, *, time_column: str, prepared: PreparedEvents | None = None
) -> pl.DataFrame:
    """The label rows with the view's features as known at each row's time (an as-of join).

    Args:
        view: the feature view.
        events: its source rows.
        labels: the label rows: at least the entity column and ``time_column``.
        time_column: the label rows' event time.
        prepared: the source already prepared (``prepare``), e.g. for several label sets.

    Raises:
        FeatureViewError: a label dataset without the entity column or without event times, or
            a feature named like a label column.
    """
    e = view.entity
    if e not in labels.columns:
        raise FeatureViewError(
            f"the label rows have no entity column {e!r} (feature view {view.name!r}); columns: {', '.join(labels.columns)}"
        )
    check_label_times(labels, time_column)
    clash = [n for n in view.feature_names if n in labels.columns]
    if clash:
        raise FeatureViewError(f"feature {clash[0]!r} of view {view.name!r} is also a column of the label rows; rename one")
    prepared = prepared or prepare(view, events)
    feats = values_at(prepared, labels[e], labels[time_column])
    return pl.concat([labels, feats], how="horizontal")


def check_label_times(labels: pl.DataFrame, time_column: str | None) -> None:
    """Refuse label rows without event times (a point-in-time join needs one per row).

    Raises:
        FeatureViewError: the column is missing, not a datetime, or has nulls.
    """
    if time_column is None or time_column not in labels.columns:
        have = [c for c, t in labels.schema.items() if isinstance(t, (pl.Datetime, pl.Date))]
        raise FeatureViewError(
            f"the label rows have no event-time column {time_column!r}: a point-in-time join needs each label's time"
            + (f"; datetime columns: {', '.join(have)}" if have else "; they have no datetime column")
        )
    dtype = labels.schema[time_column]
    if not isinstance(dtype, (pl.Datetime, pl.Date)):
        raise FeatureViewError(f"label event-time column {time_column!r} has type {dtype}; it must be a datetime")
    nulls = labels[time_column].null_count()
    if nulls:
        raise FeatureViewError(f"label event-time column {time_column!r} has {nulls} null value(s); every label row needs a time")
