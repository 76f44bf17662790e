"""Training and holdout frames of a run, rebuilt from its lineage; the retrain's combination of source data and served traffic.

Two kinds of training run exist:

- **Split of one dataset version** (``lakeops train``): the version is split by
  ``core.training.split`` (by time when there is a time column, else stratified), with the run's
  seed and valid fraction.
- **Retrain** (``core.flows.monitor.retrain``): the model's source dataset version plus a version
  of ``<model>_served``, the labelled traffic recorded as its own dataset: the features, the
  pass-through fields and the ground truth of each labelled prediction, with
  ``__prediction_id``, ``__served_at``, ``__labelled_at`` and ``__model_version``. Nothing is
  invented: a source column the traffic does not carry is null for served rows, and served rows
  are never written into the source dataset. The holdout is the newest labelled traffic (by
  ``__served_at``, ties by prediction id): the last ``valid_fraction`` of the served rows. The
  training rows are the source rows plus the older served rows, de-duplicated by the model's
  key (its feedback key, else its first ``id`` pass-through field, else the content of the
  features and target), the newest row of a key winning; no training row shares a key with a
  holdout row.

Both are rebuilt from what the run recorded (dataset versions and params), so the gate, the
drift reference and ``reproduce`` see exactly the rows training saw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from core import datasets, training
from core.errors import TrainingError
from core.lake import Lake
from core.signature import Signature

__all__ = [
    "SERVED_META",
    "Frames",
    "dedupe_key",
    "retrain_frames",
    "run_frames",
    "served_dataset",
    "served_rows",
]

SERVED_META = ("__prediction_id", "__served_at", "__labelled_at", "__model_version")
"""Columns of a ``<model>_served`` dataset that are lakeops' own (never features)."""


def served_dataset(model: str) -> str:
    """The dataset holding model ``model``'s labelled traffic."""
    return f"{model}_served"


@dataclass(frozen=True)
class Frames:
    """A run's training rows, its holdout, and how they were made (JSON-able ``info``)."""

    train: pl.DataFrame
    holdout: pl.DataFrame
    info: dict[str, Any]


def dedupe_key(signature: Signature) -> str | None:
    """The column that names one entity: the feedback key, else the first ``id`` pass-through field."""
    return signature.entity_key


def _row_keys(frame: pl.DataFrame, key: str | None, content: list[str]) -> pl.Series:
    """Each row's identity: ``k:<key value>`` where the key is known, else ``c:<hash of content>``."""
    present = [c for c in content if c in frame.columns]
    by_content = pl.lit("c:") + frame.select(present).hash_rows(seed=0).cast(pl.String) if present else pl.lit(None)
    if key is None or key not in frame.columns:
        return frame.select(by_content.alias("__key"))["__key"]
    by_key = pl.lit("k:") + pl.col(key).cast(pl.String)
    return frame.select(pl.coalesce(by_key, by_content).alias("__key"))["__key"]


def retrain_frames(
    base: pl.DataFrame,
    served: pl.DataFrame,
    *,
    target: str,
    key: str | None,
    content: list[str],
    valid_fraction: float = 0.2,
) -> Frames:
    """Combine source rows and labelled traffic into (training rows, holdout of the newest traffic).

    Args:
        base: the source dataset version the model is trained on.
        served: a version of ``<model>_served``.
        target: the target column.
        key: the column naming one entity (``dedupe_key``), or None to compare ``content``.
        content: the columns whose values make a row's identity when there is no key.
        valid_fraction: the share of served rows (the newest) held out.

    Raises:
        TrainingError: no labelled traffic, or too little to hold out.
    """
    if served.height == 0:
        raise TrainingError("there is no labelled traffic to retrain on")
    served = (served.filter(pl.col(target).is_not_null())
              .sort(["__labelled_at", "__prediction_id"])
              .unique("__prediction_id", keep="last")  # a later label for a prediction wins
              .sort(["__served_at", "__prediction_id"]))
    n_hold = max(1, math.ceil(served.height * valid_fraction))
    if served.height - n_hold < 0 or n_hold < 1:
        raise TrainingError(f"{served.height} labelled predictions are too few to hold out {valid_fraction:.0%}")
    holdout = served.tail(n_hold)
    older = served.head(served.height - n_hold)
    combined = pl.concat([base.with_columns(pl.lit(0).alias("__src")), older.with_columns(pl.lit(1).alias("__src"))],
                         how="diagonal_relaxed")
    k_train = _row_keys(combined, key, content)
    k_hold = _row_keys(holdout, key, content)
    combined = combined.with_columns(k_train, pl.int_range(pl.len()).alias("__order"))
    # newest wins within a key: served rows after source rows, later traffic after earlier
    keyed = combined.filter(pl.col("__key").is_not_null())
    deduped = pl.concat([
        keyed.sort(["__src", "__order"]).unique("__key", keep="last", maintain_order=True),
        combined.filter(pl.col("__key").is_null()),
    ]).sort("__order")
    disjoint = deduped.filter(~pl.col("__key").is_in(k_hold.drop_nulls().implode()))
    train = disjoint.drop("__key", "__order", "__src")
    info = {
        "split_method": "served_holdout",
        "dedupe_key": key or "content",
        "base_rows": base.height,
        "served_rows": served.height,
        "holdout_rows": holdout.height,
        "train_rows": train.height,
        "dropped_duplicates": combined.height - deduped.height,
        "dropped_overlapping_holdout": deduped.height - disjoint.height,
        "holdout_served_from": str(holdout["__served_at"].min()),
        "holdout_served_to": str(holdout["__served_at"].max()),
    }
    return Frames(train, holdout, info)


def run_frames(
    *,
    dataset: str,
    version: int,
    params: Mapping[str, str],
    signature: Signature,
    seed: int,
    lake: Lake,
) -> Frames:
    """Rebuild the training rows and the holdout a run used, from its recorded lineage and params.

    Args:
        dataset: the run's (source) dataset name; ``version`` its version.
        params: the run's params (``split_method``, ``valid_fraction``, ``time_column``, and for a
            retrain ``served_dataset``/``served_version``).
        signature: the model's signature.
        seed: the run's seed.
        lake: the lake.
    """
    frame = datasets.load(dataset, version, lake=lake)
    target = signature.target
    fraction = float(params.get("valid_fraction", 0.2))
    if params.get("split_method") == "served_holdout":
        served = datasets.load(params["served_dataset"], int(params["served_version"]), lake=lake)
        return retrain_frames(
            frame, served, target=target, key=params.get("dedupe_key") or None,
            content=json.loads(params.get("dedupe_content") or "[]"), valid_fraction=fraction,
        )
    frame = frame.filter(pl.col(target).is_not_null())
    time_column = params.get("time_column", signature.time_column) or None
    train, holdout = training.split(frame, target, time_column=time_column, seed=seed, valid_fraction=fraction)
    info = {"split_method": params.get("split_method") or ("time" if time_column else "stratified"),
            "train_rows": train.height, "holdout_rows": holdout.height}
    return Frames(train, holdout, info)


def served_rows(
    log: pl.DataFrame, truth: pl.DataFrame, signature: Signature
) -> pl.DataFrame:
    """Labelled predictions shaped as ``<model>_served`` rows (features, pass-through, target, meta).

    Args:
        log: prediction-log rows (``core.monitoring.window`` layout: ``features`` struct, optional
            ``passthrough`` struct).
        truth: ``prediction_id, truth, labelled_at`` (``core.monitoring.ground_truth``).
        signature: the champion's signature (its target's name and task).
    """
    target = signature.target
    joined = log.join(truth, on="prediction_id", how="inner")
    if signature.binary:
        joined = joined.filter(pl.col("truth").is_in([0.0, 1.0]))  # the API refuses others; be sure
    else:
        joined = joined.filter(pl.col("truth").is_finite())
    cols: list[Any] = [pl.col("features").struct.unnest()]
    if "passthrough" in joined.columns:
        cols.append(pl.col("passthrough").struct.unnest())
    frame = joined.select(
        *cols,
        (pl.col("truth").cast(pl.Int64) if signature.binary else pl.col("truth")).alias(target),
        pl.col("prediction_id").alias("__prediction_id"),
        pl.col("at").alias("__served_at"),
        pl.col("labelled_at").alias("__labelled_at"),
        pl.col("model_version").alias("__model_version"),
    )
    return frame

