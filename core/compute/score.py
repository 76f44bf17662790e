"""Batch scoring on a Dask cluster: each worker reads its partitions of a dataset version and scores them.

The model text and signature are sent to the workers once; a worker rebuilds the model (the same
``core.training.Model`` and encoder serving uses) and returns only the kept columns and the
scores of its partitions, so the client never holds the input rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from core import training
from core.compute.frames import Parts, read_part
from core.errors import ComputeError

__all__ = ["score_parts", "score_frame"]


def _const(value: Any) -> Any:
    """A task holding ``value``: unlike a scatter, recomputed when the worker holding it is lost."""
    return value


def score_frame(frame: pl.DataFrame, model: training.Model, keep: Sequence[str]) -> pl.DataFrame:
    """The kept columns of ``frame``, then ``score`` and, for a binary model, ``predicted_label``."""
    scores = model.predict(frame) if frame.height else np.empty(0)
    out = frame.select([c for c in keep if c in frame.columns]).with_columns(pl.Series("score", scores, dtype=pl.Float64))
    if model.signature.get("task", "binary") == "binary":
        threshold = float(model.signature.get("threshold", 0.5))
        out = out.with_columns((pl.col("score") >= threshold).cast(pl.Int64).alias("predicted_label"))
    return out


def _score_part(fragment: Any, schema: Any, text: str, signature: Mapping[str, Any], keep: Sequence[str],
                transform: Callable[[pl.DataFrame, Any], pl.DataFrame] | None = None, data: Any = None) -> pl.DataFrame:
    model = training.Model.from_text(text, signature)
    frame = read_part(fragment, schema)
    return score_frame(transform(frame, data) if transform is not None else frame, model, keep)


def score_parts(client: Any, parts: Parts, model: training.Model, keep: Sequence[str], *,
                transform: Callable[[pl.DataFrame, Any], pl.DataFrame] | None = None, data: Any = None) -> pl.DataFrame:
    """Score every partition on the cluster; the kept columns and scores, in partition order.

    Args:
        client, parts, model, keep: the cluster, the partitions, the model, the columns to keep.
        transform: applied to each partition's rows before scoring, with ``data`` (sent to the
            workers once): e.g. ``core.features.apply_view_features`` with the prepared view
            sources, so a feature-view model's features are computed beside each partition.

    Raises:
        ComputeError: a partition failed on every retry (a lost worker).
    """
    text = client.submit(_const, model.text, pure=False)  # recomputable if its worker is lost
    shared = client.submit(_const, data, pure=False) if transform is not None else None
    futures = [client.submit(_score_part, f, parts.schema, text, model.signature, list(keep), transform, shared,
                             pure=False, retries=2)
               for f in parts.fragments]
    try:
        frames = client.gather(futures)
    except Exception as exc:  # noqa: BLE001 - any task failure (a worker lost past retries) ends the job
        raise ComputeError(f"the Dask cluster failed while scoring: {type(exc).__name__}: {exc}") from exc
    if not frames:
        empty = pl.DataFrame(pl.from_arrow(parts.schema.empty_table()))
        return score_frame(transform(empty, data) if transform is not None else empty, model, keep)
    return pl.concat(frames, how="vertical_relaxed")
