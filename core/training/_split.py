"""The deterministic train/valid split (by time, stratified or by a seeded hash)."""

from __future__ import annotations

import math

import polars as pl

from core.errors import TrainingError

__all__ = ["split"]


def split(
    frame: pl.DataFrame,
    target: str,
    *,
    time_column: str | None = None,
    seed: int = 0,
    valid_fraction: float = 0.2,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into (train, valid) deterministically, independent of the row order.

    With a time column the latest ``valid_fraction`` of rows (by time, ties broken by a content
    hash) is the validation set. Otherwise the split is stratified by the target when it has
    few distinct values (classification), else a seeded hash split; each part is ordered by
    the content hash, so the same rows give the same frames whatever order they were read in.
    """
    if not 0 < valid_fraction < 1:
        raise TrainingError(f"valid_fraction must be between 0 and 1 (exclusive), got {valid_fraction}")
    if frame.height < 2:
        raise TrainingError(f"cannot split {frame.height} row(s) into train and valid sets")
    h = frame.hash_rows(seed=seed).alias("__h")
    work = frame.with_columns(h)
    n = frame.height
    if time_column:
        work = work.sort([time_column, "__h"])
        n_valid = min(n - 1, max(1, math.ceil(n * valid_fraction)))
        train, valid = work.head(n - n_valid), work.tail(n_valid)
    else:
        group = target if frame[target].n_unique() <= 20 else None
        if group is None:
            rank = pl.col("__h").rank("ordinal")
            size = pl.len()
        else:
            rank = pl.col("__h").rank("ordinal").over(group)
            size = pl.len().over(group)
        work = work.with_columns(
            (rank <= (size.cast(pl.Float64) * valid_fraction).round(0).clip(lower_bound=1)).alias("__valid")
        ).sort("__h")
        train = work.filter(~pl.col("__valid")).drop("__valid")
        valid = work.filter(pl.col("__valid")).drop("__valid")
        if train.height == 0:
            raise TrainingError(f"too few rows ({n}) to keep a training set")
    return train.drop("__h"), valid.drop("__h")
