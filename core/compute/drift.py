"""A drift check of a prediction-log window as map-reduce over the log's partitions on a Dask cluster.

Three passes over the window's files, each a task per partition whose result is a small summary:

1. **count**: rows per partition after the window's filters (model version, hours, ``now``), its
   first and last time and, for a ``window_rows`` window, its newest ``window_rows`` (time, id)
   pairs; the client finds the cutoff (newest first, ties by prediction id).
2. **summarise**: per numeric column a ``core.drift.sketch.NumericSketch`` on the reference's grid
   (its sorted values too when the whole window has at most ``exact_values`` rows), per
   categorical column its level counts, the same for the score, and the rows of a seeded sample
   of the window (the domain classifier's and the attribution's rows).
3. the client adds the summaries up and decides each column with ``core.drift`` as the local
   engine does: counts, chi-square, Jensen-Shannon, PSI and the data-quality shares are exact;
   numeric columns of a window of at most ``exact_values`` rows are exact too (the partitions'
   sorted values are merged); larger ones come from the merged grid summaries with the stated
   bounds in their stats (``wasserstein_bound``, ``ks_bound``).

The sample is drawn with the local engine's generator over the window's rows ordered by time
(partitions by their first time, rows by time within): when the log's files do not overlap in
time (one writer appending in order), the domain classifier sees the very rows it would locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from core import drift
from core.catalog import FEATURES_COLUMN
from core.compute import ComputeConfig
from core.compute.frames import LOG_OWN, log_filter, log_parts
from core.errors import ComputeError
from core.lake import Lake

__all__ = ["WindowDrift", "check_window"]

_TOP_MAX = 1_000_000  # a rows-window larger than this needs window_hours on a cluster


@dataclass(frozen=True)
class WindowDrift:
    """What the cluster computed for one window: its size and span, the verdicts and the sample."""

    rows: int
    start: datetime | None
    end: datetime | None
    result: drift.DatasetDrift | None
    score: drift.FeatureDrift | None
    sample: pl.DataFrame
    partitions: int
    exact: bool


# ---------------------------------------------------------------------------- worker side
def _const(value: Any) -> Any:
    return value


def _file(fragment: Any) -> tuple[Any, list[int]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fragment.path, filesystem=fragment.filesystem)
    groups = [rg.id for rg in fragment.row_groups] if fragment.row_groups else list(range(pf.num_row_groups))
    return pf, groups


def _leaf(pf: Any, groups: list[int], path: str, rows: int) -> pl.Series:
    """One leaf column of a partition's file (``features.x`` reads that field's chunks only; a dataset
    projection of a struct field decodes the whole struct). A field the file predates is null."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - pa.compute.struct_field

    name = path.rsplit(".", 1)[-1]
    try:
        table = pf.read_row_groups(groups, columns=[path])
    except (KeyError, IndexError, pa.ArrowInvalid):
        return pl.Series(name, [None] * rows)
    if table.num_columns == 0:
        return pl.Series(name, [None] * rows)
    arr = table.column(0).combine_chunks()
    while pa.types.is_struct(arr.type):  # ``features.x`` comes back as features: struct<x>
        arr = arr.field(0) if arr.null_count == 0 else pa.compute.struct_field(arr, [0])
    out = pl.Series(name, arr)
    del table
    pa.default_memory_pool().release_unused()  # the reader's buffers, back before the next column
    return out


def _keys(fragment: Any, window: Mapping[str, Any], ids: bool) -> tuple[Any, list[int], np.ndarray, pl.DataFrame]:
    """The file, its row groups, the window's row mask and the kept rows' time (and ids)."""
    pf, groups = _file(fragment)
    cols = ["at", "model_version", *(["prediction_id"] if ids else [])]
    frame = pl.DataFrame(pl.from_arrow(pf.read_row_groups(groups, columns=cols)))
    cond = pl.lit(True)
    if window.get("model_version") is not None:
        cond = cond & (pl.col("model_version") == window["model_version"])
    if window.get("since") is not None:
        cond = cond & (pl.col("at") >= window["since"])
    if window.get("until") is not None:
        cond = cond & (pl.col("at") <= window["until"])
    mask = frame.select(cond.fill_null(False).alias("m"))["m"].to_numpy()
    return pf, groups, mask, frame.filter(pl.Series(mask))


def _count(fragment: Any, window: Mapping[str, Any], top: int) -> dict[str, Any]:
    _, _, _, frame = _keys(fragment, window, ids=top > 0)
    out: dict[str, Any] = {"rows": frame.height, "first": frame["at"].min() if frame.height else None,
                           "last": frame["at"].max() if frame.height else None}
    if top and frame.height:
        out["top"] = frame.select("at", "prediction_id").sort(["at", "prediction_id"], descending=True).head(top)
    return out


def _summarise(fragment: Any, window: Mapping[str, Any], nested: bool, grids: Mapping[str, Any],
               kinds: Mapping[str, str], keep_values: bool, sample_rows: np.ndarray | None,
               cutoff: tuple[Any, str] | None) -> dict[str, Any]:
    """One partition's summaries, read one leaf column at a time straight from its Parquet file: a
    partition may be a whole compacted day of the log, and decoding all its columns at once needs
    many times a column's memory (measured: 335 MB more for one 611k-row file of 25 features,
    against 10-20 MB a column).

    ``sample_rows`` index the partition's window rows in time order.
    """
    pf, groups, mask, keys = _keys(fragment, window, ids=cutoff is not None)
    rows_in_file = mask.size
    if cutoff is not None:  # a rows-window: only rows at or after the cutoff (time, id)
        late = ((keys["at"] > cutoff[0]) | ((keys["at"] == cutoff[0]) & (keys["prediction_id"] >= cutoff[1]))).to_numpy()
        idx = np.flatnonzero(mask)
        mask = np.zeros(rows_in_file, dtype=bool)
        mask[idx[late]] = True
        keys = keys.filter(pl.Series(late))
    picked = None
    if sample_rows is not None and sample_rows.size:
        picked = keys.with_row_index("__pos").sort("at", maintain_order=True)["__pos"].to_numpy()[sample_rows]
    del keys
    sel = pl.Series(mask)
    present = [c for c in kinds if c in window["features"]]
    out: dict[str, Any] = {"present": present, "rows": int(mask.sum())}
    sample: dict[str, pl.Series] = {}
    for name in [*present, "__score__"]:
        path = "score" if name == "__score__" else (f"{FEATURES_COLUMN}.{name}" if nested else name)
        col = _leaf(pf, groups, path, rows_in_file).filter(sel)
        if picked is not None and name != "__score__":
            sample[name] = col[picked]
        if kinds.get(name) == "categorical":
            out[name] = drift.categorical_partial(col)
        else:
            s = col.cast(pl.Float64)
            out[name] = drift.numeric_partial(s.fill_null(np.nan).to_numpy(), s.null_count(), grids.get(name),
                                              keep_values=keep_values)
    if picked is not None:
        out["sample"] = pl.DataFrame(sample)
    return out


# ---------------------------------------------------------------------------- client side
def _gather(client: Any, futures: list[Any], cfg: ComputeConfig, what: str) -> list[Any]:
    try:
        return list(client.gather(futures, errors="raise", direct=False, asynchronous=False)) if futures else []
    except Exception as exc:  # noqa: BLE001 - any task failure (a worker lost past retries) ends the job
        for f in futures:
            f.cancel()
        raise ComputeError(f"the Dask cluster failed the {what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _window_cutoff(counts: list[dict[str, Any]], window_rows: int) -> tuple[tuple[Any, str] | None, list[int]]:
    """The (time, id) of the oldest row of the newest ``window_rows`` rows, and the rows per partition at or after it."""
    tops = [c["top"].with_columns(pl.lit(i).alias("__part")) for i, c in enumerate(counts) if "top" in c]
    newest = pl.concat(tops).sort(["at", "prediction_id"], descending=True).head(window_rows)
    last = newest.row(-1, named=True)
    per = newest.group_by("__part").len()
    rows = dict(zip(per["__part"].to_list(), per["len"].to_list(), strict=True))
    return (last["at"], last["prediction_id"]), [int(rows.get(i, 0)) for i in range(len(counts))]


def check_window(
    client: Any,
    cfg: ComputeConfig,
    *,
    model: str,
    model_version: int,
    features: Mapping[str, drift.Reference],
    score: drift.NumericReference,
    policy: drift.DriftPolicy,
    lake: Lake,
    window_rows: int | None,
    since: datetime | None,
    now: datetime | None,
    min_rows: int,
    sample: int,
    reference_sample_rows: int,
    seed: int = 0,
) -> WindowDrift:
    """Compute the per-feature and score verdicts of one window on the cluster (see the module docstring).

    Args:
        client: a ``distributed.Client``.
        cfg: the compute settings (``exact_values``, ``grid``).
        model: the model; ``model_version`` the champion whose predictions count.
        features: the stored feature references; ``score`` the score reference.
        policy: the drift policy.
        lake: the lake.
        window_rows: the newest N rows (None: all rows the filters keep).
        since: rows at or after this time (a ``window_hours`` window).
        now: rows at or before this time.
        min_rows: below this many rows nothing is decided (the caller records ``insufficient``).
        sample: rows of the window to sample for the domain classifier (the policy's sample).
        reference_sample_rows: rows of the stored reference sample (the classifier draws from it first).
        seed: the sampling seed (the local engine's).

    Raises:
        ComputeError: a partition failed on every retry (a lost worker), or a rows-window over
            1,000,000 rows (use ``window_hours``).
    """
    filt = log_filter(model_version=model_version, since=since, until=now)
    parts = log_parts(model, lake=lake, filter=filt)
    top = int(window_rows) if window_rows else 0
    if top > _TOP_MAX:
        raise ComputeError(f"window_rows = {top} is over {_TOP_MAX:,} on the dask engine; use window_hours instead")
    nested = FEATURES_COLUMN in parts.schema.names
    names = [f.name for f in parts.schema.field(FEATURES_COLUMN).type] if nested else [
        c for c in parts.schema.names if c not in LOG_OWN]
    window = {"model_version": model_version, "since": since, "until": now, "features": names}
    counts = _gather(client, [client.submit(_count, f, window, top, pure=False, retries=2) for f in parts.fragments],
                     cfg, "window count")
    rows_per = [int(c["rows"]) for c in counts]
    cutoff = None
    if top and sum(rows_per) > top:
        cutoff, rows_per = _window_cutoff(counts, top)
    total = sum(rows_per)
    firsts = [c["first"] for c in counts if c["first"] is not None]
    lasts = [c["last"] for c in counts if c["last"] is not None]
    if cutoff is not None:
        firsts = [cutoff[0]]
    start, end = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
    if total < min_rows:
        return WindowDrift(total, start, end, None, None, pl.DataFrame(), len(parts), False)
    # the sample: the local engine's draws over the window's rows in time order
    order = sorted(range(len(parts)), key=lambda i: (counts[i]["first"] is None, counts[i]["first"] or 0, i))
    rng = np.random.default_rng(seed)
    if reference_sample_rows > sample:
        rng.choice(reference_sample_rows, sample, replace=False)  # the classifier's draw of the reference
    picked = np.arange(total) if total <= sample else np.sort(rng.choice(total, sample, replace=False))
    offsets = np.cumsum([0] + [rows_per[i] for i in order])
    local_rows: list[np.ndarray | None] = [None] * len(parts)
    for k, i in enumerate(order):
        lo, hi = offsets[k], offsets[k + 1]
        sel = picked[(picked >= lo) & (picked < hi)] - lo
        local_rows[i] = sel if sel.size else None
    kinds = {c: ("numeric" if isinstance(r, drift.NumericReference) else "categorical") for c, r in features.items()}
    grids = {c: drift.make_grid(r, cfg.grid) for c, r in features.items() if isinstance(r, drift.NumericReference)}
    grids["__score__"] = drift.make_grid(score, cfg.grid)
    exact = total <= cfg.exact_values
    grids_f = client.submit(_const, grids, pure=False)  # recomputable if its worker is lost (a scatter is not)
    futures = [client.submit(_summarise, frag, window, nested, grids_f, kinds, exact, local_rows[i],
                             cutoff if rows_per[i] else None, pure=False, retries=2)
               for i, frag in enumerate(parts.fragments) if rows_per[i]]
    used = [i for i in range(len(parts)) if rows_per[i]]
    summaries = dict(zip(used, _gather(client, futures, cfg, "drift summaries"), strict=True))
    results = []
    for name, ref in features.items():
        got = [s[name] for s in summaries.values() if name in s]
        if not got:  # the window's log lacks the column: no_data, as locally
            results.append(drift.check_column(name, ref, None, policy))
        elif isinstance(ref, drift.CategoricalReference):
            rows, nulls, levels, cnt = drift.merge_categorical(got)
            results.append(drift.check_categorical(name, ref, levels, cnt, rows=rows, nulls=nulls, policy=policy))
        else:
            results.append(_numeric(name, ref, grids[name], drift.merge_numeric(got), policy, exact))
    dataset = drift.dataset_verdict(results, policy)
    sc = _numeric("__score__", score, grids["__score__"], drift.merge_numeric([s["__score__"] for s in summaries.values()]),
                  policy, exact)
    frames = [summaries[i]["sample"] for i in order if i in summaries and "sample" in summaries[i]]
    sample_frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    return WindowDrift(total, start, end, dataset, sc, sample_frame, len(parts), exact)


def _numeric(name: str, ref: drift.NumericReference, grid: Any, merged: Any, policy: drift.DriftPolicy,
             exact: bool) -> drift.FeatureDrift:
    if exact and merged.values is not None:
        values = np.sort(np.concatenate(merged.values)) if merged.values else np.empty(0)
        col = drift.NumericColumn(values, merged.rows, merged.nulls, merged.nonfinite)
        return drift.check_numeric(name, ref, col, policy)
    return drift.check_numeric_sketch(name, ref, grid, merged, policy)

