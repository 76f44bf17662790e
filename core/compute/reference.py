"""A champion's drift reference built on the Dask cluster: per-partition summaries merged on the client.

``core.monitoring.references`` builds a reference from the rows a run trained and validated on.
Locally it loads the training dataset version and re-splits it (``core.trainsets``); with
``[compute] engine = "dask"`` the same rows are found and summarised where the partitions are:

1. **keys**: each partition is read once on a worker; its rows with a target keep their target,
   split time, split row hash (``hash_rows(seed)``, as ``core.training.split``) and a second,
   independent sample hash (``hash_rows(seed + 1)``, ``SAMPLE_SEED_OFFSET``).
2. **the split** of ``core.training.split``, exactly (``core.compute.train.split_marks``): which rows
   are the holdout.
3. **the samples**: the reference rows (every row with a target, or the holdout with ``reference =
   "holdout"``) above ``reference_rows``, the domain classifier's ``multivariate_sample`` rows and
   the attribution's ``attribution_sample`` holdout rows are each the rows with the smallest sample
   hash: a seeded uniform sample, found by a histogram of the hash then the keys of one bin (no sort
   of the data). The local engine draws the very same rows (``hash_sample``).
4. **summaries**, a task per partition: per numeric column the row, null and NaN/inf counts and the
   distinct finite values with their counts; per categorical column its level counts; the sample's
   rows; the holdout's scores, labels and split keys; the attribution rows' contributions.
5. the client adds them up. Counts and level counts add exactly; the distinct values and their
   counts merge exactly into the sorted values the reference stores (at most ``reference_rows`` of
   them, as locally), so every part of the reference (values, quantile edges, bin counts, mean,
   standard deviation, quality counts) is the local engine's, bit for bit. The holdout's scores are
   put back in the local holdout's order (by time then row hash, or by row hash) before the CBPE
   calibration is fitted, so it is the local one too.

A retrain's reference (source rows plus de-duplicated served traffic) is still built locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from core import drift, training
from core.compute.frames import Parts, read_part
from core.compute.train import _const, _cutoff, _mark, _prepare, _run, split_marks
from core.errors import TrainingError

__all__ = ["SAMPLE_SEED_OFFSET", "ClusterReference", "build_on_cluster", "hash_sample"]

SAMPLE_SEED_OFFSET = 1
"""The reference's samples order rows by ``hash_rows(seed + SAMPLE_SEED_OFFSET)``: independent of
the split's hash (``hash_rows(seed)``), so a sample is not the holdout's rows first."""


def hash_sample(frame: pl.DataFrame, k: int | None, seed: int) -> pl.DataFrame:
    """The ``k`` rows of ``frame`` with the smallest ``hash_rows(seed + SAMPLE_SEED_OFFSET)`` (all rows
    when ``k`` is None or at least the height), ordered by that hash.

    A seeded uniform sample that a cluster draws identically without gathering the rows (a hash
    depends on the row's content only). Rows with equal hashes are identical rows, so ties never
    change the sample's content.
    """
    h = frame.hash_rows(seed=seed + SAMPLE_SEED_OFFSET)
    order = h.arg_sort()  # stable
    if k is not None and k < frame.height:
        order = order.head(k)
    return frame[order.to_numpy()]


@dataclass(frozen=True)
class ClusterReference:
    """What the cluster computed for a champion's reference (``core.monitoring.references``).

    ``rows``: rows behind ``features``; ``sample``: the domain classifier's rows (sample-hash order);
    ``scores``/``labels``: the holdout's scores and targets in the local holdout's order;
    ``contrib_mean`` over ``contrib_rows`` holdout rows (None when ``attribution_sample`` is 0).
    """

    rows: int
    features: dict[str, drift.Reference]
    sample: pl.DataFrame
    scores: np.ndarray
    labels: np.ndarray
    contrib_mean: np.ndarray | None
    contrib_rows: int
    partitions: int


# ---------------------------------------------------------------------------- worker side
def _sizes(p: Mapping[str, np.ndarray]) -> tuple[int, list[float]]:
    """Rows with a target and the target's distinct values."""
    return int(p["y"].size), np.unique(p["y"]).tolist()


def _n_valid(p: Mapping[str, np.ndarray]) -> int:
    return int(p["valid"].sum())


def _view(p: Mapping[str, np.ndarray], holdout: bool) -> dict[str, np.ndarray]:
    """The sampling keys of the reference's candidate rows (all, or the holdout's): ordered by sample hash only."""
    sel = p["valid"] if holdout else slice(None)
    h = p["hs"][sel]
    return {"t": np.zeros(h.size, np.int64), "h": h, "y": p["y"][sel]}


def _members(view: Mapping[str, np.ndarray], rule: Mapping[str, Any] | None, part: int) -> np.ndarray:
    if rule is None:
        return np.ones(view["h"].size, dtype=bool)
    return _mark(dict(view), [{**rule, "part": part}])["valid"]


def _numeric_partial(col: pl.Series) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """``(rows, nulls, NaN/inf, distinct finite values, their counts)`` of one partition's column."""
    s = col if col.dtype == pl.Float64 else col.cast(pl.Float64)
    nulls = s.null_count()
    arr = (s.fill_null(np.nan) if nulls else s).to_numpy()
    finite = np.isfinite(arr)
    u, c = np.unique(arr[finite], return_counts=True)
    return int(arr.size), int(nulls), int(arr.size - int(finite.sum()) - nulls), u, c.astype(np.int64)


def _summarise(fragment: Any, schema: Any, p: Mapping[str, np.ndarray], ref_view: Mapping[str, np.ndarray],
               attr_view: Mapping[str, np.ndarray], rules: Mapping[str, Any], part: int, holdout_mode: bool,
               kinds: Mapping[str, str], text: str | None, signature: training.Signature) -> dict[str, Any]:
    """One partition's share of the reference (see the module docstring, step 4)."""
    import pyarrow as pa

    model = training.Model.from_text(text, signature) if text is not None else None
    feats = signature.names
    cols = list(dict.fromkeys([*kinds, *(feats if model is not None else [])]))
    frame = read_part(fragment, schema, [c for c in cols if c in schema.names])
    keep = p.get("keep")
    if keep is not None:
        frame = frame.filter(pl.Series(keep))
    valid_idx = np.flatnonzero(p["valid"])
    cand = valid_idx if holdout_mode else np.arange(frame.height)
    ref_rows = cand[_members(ref_view, rules.get("ref"), part)]
    ref = frame[ref_rows]
    out: dict[str, Any] = {"rows": int(ref_rows.size), "features": {}}
    for name, kind in kinds.items():
        if kind == "categorical":
            out["features"][name] = drift.categorical_partial(ref[name])
        else:
            out["features"][name] = _numeric_partial(ref[name])
    del ref
    sample_rows = cand[_members(ref_view, rules.get("sample"), part)]
    out["sample"] = frame[sample_rows].select(list(kinds)).with_columns(pl.Series("__hs", p["hs"][sample_rows]))
    if model is not None:
        hold = frame[valid_idx]
        out["holdout"] = {"scores": model.predict(hold) if hold.height else np.empty(0),
                          "labels": p["y"][valid_idx], "t": p["t"][valid_idx], "h": p["h"][valid_idx]}
        if rules.get("attr", False) is not False:
            attr = valid_idx[_members(attr_view, rules.get("attr"), part)]
            out["contrib"] = (model.contributions(frame[attr]) if attr.size else None, p["hs"][attr])
    del frame
    pa.default_memory_pool().release_unused()
    return out


# ---------------------------------------------------------------------------- client side
def _merge_numeric(parts: list[tuple[int, int, int, np.ndarray, np.ndarray]], bins: int) -> drift.NumericReference:
    """The reference of merged partials: exactly ``NumericReference.from_values`` over all the rows."""
    us = [p[3] for p in parts if p[3].size]
    if us:
        uniq, inv = np.unique(np.concatenate(us), return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate([p[4] for p in parts if p[3].size]).astype(np.float64))
        values = np.repeat(uniq, counts.astype(np.int64))
    else:
        values = np.empty(0)
    ref = drift.NumericReference.from_values(values, bins=bins)
    return replace(ref, rows=sum(p[0] for p in parts), nulls=sum(p[1] for p in parts), nonfinite=sum(p[2] for p in parts))


def build_on_cluster(
    client: Any,
    *,
    parts: Parts,
    signature: training.Signature,
    time_column: str | None,
    seed: int,
    valid_fraction: float,
    holdout_mode: bool,
    max_rows: int,
    kinds: Mapping[str, str],
    bins: int,
    sample_rows: int,
    attribution_rows: int,
    model: training.Model | None,
) -> ClusterReference:
    """Build a reference's parts on the cluster (see the module docstring).

    Args:
        client: a ``distributed.Client``.
        parts: the training dataset version's partitions.
        signature: the model's signature (its target).
        time_column, seed, valid_fraction: the run's split.
        holdout_mode: the feature distributions describe the holdout (``reference = "holdout"``)
            instead of every row with a target.
        max_rows: ``reference_rows``: above it, a seeded sample of the reference rows.
        kinds: ``{column: "numeric" | "categorical"}`` of the feature distributions.
        bins: PSI bins.
        sample_rows: the domain classifier's rows (``multivariate_sample``).
        attribution_rows: holdout rows for the mean contributions (0: none).
        model: the champion (None: no scores, calibration or contributions).

    Raises:
        TrainingError: the target is missing, or fewer than 2 rows.
        ComputeError: a partition failed on every retry (a lost worker).
    """
    target = signature.target
    if target not in parts.schema.names:
        raise TrainingError(f"target {target!r} is not a column of dataset {parts.table}")
    prepared = [client.submit(_prepare, f, parts.schema, signature, time_column, seed, seed + SAMPLE_SEED_OFFSET,
                              pure=False, retries=2) for f in parts.fragments]
    sizes = _run(client, [client.submit(_sizes, p, pure=False) for p in prepared], "counting the reference rows")
    rows = sum(s[0] for s in sizes)
    classes = sorted({v for s in sizes for v in s[1]})
    marked, _ = split_marks(client, prepared, time_column=time_column, classes=classes, rows=rows,
                            valid_fraction=valid_fraction)
    del prepared
    n_valid = sum(_run(client, [client.submit(_n_valid, m, pure=False) for m in marked],
                       "counting the holdout"))
    ref_views = [client.submit(_view, m, holdout_mode, pure=False, retries=2) for m in marked]
    attr_views = [client.submit(_view, m, True, pure=False, retries=2) for m in marked]
    n_cand = n_valid if holdout_mode else rows
    n_ref = min(n_cand, max_rows)
    rules: dict[str, Any] = {
        "ref": _cutoff(client, ref_views, None, None, max_rows, False) if n_cand > max_rows else None,
        "sample": _cutoff(client, ref_views, None, None, sample_rows, False) if n_ref > sample_rows else None,
    }
    if model is not None and attribution_rows > 0:
        rules["attr"] = _cutoff(client, attr_views, None, None, attribution_rows, False) if n_valid > attribution_rows else None
    else:
        rules["attr"] = False
    text = client.submit(_const, model.text, pure=False) if model is not None else None
    futures = [client.submit(_summarise, f, parts.schema, m, rv, av, rules, i, holdout_mode, dict(kinds), text,
                             signature, pure=False, retries=2)
               for i, (f, m, rv, av) in enumerate(zip(parts.fragments, marked, ref_views, attr_views, strict=True))]
    got = _run(client, futures, "summarising the reference")
    features: dict[str, drift.Reference] = {}
    for name, kind in kinds.items():
        partials = [g["features"][name] for g in got]
        if kind == "categorical":
            n, nulls, levels, counts = drift.merge_categorical(partials)
            features[name] = drift.CategoricalReference(tuple(levels), counts, n, nulls)
        else:
            features[name] = _merge_numeric(partials, bins)
    sample = pl.concat([g["sample"] for g in got], how="diagonal_relaxed") if got else pl.DataFrame()
    sample = sample.sort("__hs", maintain_order=True).drop("__hs") if sample.height else sample.drop("__hs", strict=False)
    scores = labels = np.empty(0)
    contrib, contrib_rows = None, 0
    if model is not None:
        hold = [g["holdout"] for g in got]
        t = np.concatenate([x["t"] for x in hold])
        h = np.concatenate([x["h"] for x in hold]).view(np.uint64)
        order = np.lexsort((h, t))  # the local holdout's order: by (time, hash), or by hash
        scores = np.concatenate([x["scores"] for x in hold])[order]
        labels = np.concatenate([x["labels"] for x in hold])[order]
        pieces = [g["contrib"] for g in got if g.get("contrib") is not None and g["contrib"][0] is not None]
        if pieces:
            mat = np.concatenate([c[0] for c in pieces])
            hs = np.concatenate([c[1] for c in pieces])
            mat = mat[np.argsort(hs, kind="stable")]
            contrib, contrib_rows = mat.mean(axis=0), int(mat.shape[0])
    return ClusterReference(sum(g["rows"] for g in got), features, sample, scores, labels, contrib, contrib_rows,
                            len(parts))

