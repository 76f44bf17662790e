"""Dataset versions: each dataset is the Delta table ``data/<name>``; its Delta version is the
dataset version, and the ``datasets`` table records one row per version.

(Foundation version: ingest, load and list. Validation, profiles, diffs and quarantine are
added by the datasets issue.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from core.errors import DatasetNotFoundError, TableNotFoundError
from core.ids import utcnow
from core.lake import Lake, resolve

__all__ = ["DatasetVersion", "ingest", "latest_version", "load", "table_name", "versions"]


@dataclass(frozen=True)
class DatasetVersion:
    """One committed dataset version."""

    name: str
    version: int
    rows: int
    total_rows: int
    content_hash: str


def table_name(name: str) -> str:
    """Return the lake table of dataset ``name``."""
    return f"data/{name}"


def _frame(data: Any) -> pl.DataFrame:
    if isinstance(data, pl.DataFrame):
        return data
    return pl.DataFrame(pl.from_pandas(data) if type(data).__module__.startswith("pandas") else data)


def content_hash(frame: pl.DataFrame) -> str:
    """A hash of the rows that does not depend on their order (sum of per-row hashes)."""
    if frame.height == 0:
        return hashlib.sha256(json.dumps(frame.columns).encode()).hexdigest()
    row_hashes = frame.hash_rows(seed=0)
    total = int(row_hashes.cast(pl.UInt64).sum() or 0) % (1 << 64)
    h = hashlib.sha256(json.dumps([frame.columns, [str(t) for t in frame.dtypes]]).encode())
    h.update(total.to_bytes(8, "little"))
    h.update(frame.height.to_bytes(8, "little"))
    return h.hexdigest()


def ingest(
    name: str,
    data: Any,
    *,
    mode: Literal["append", "replace"] = "append",
    lake: Lake | None = None,
    source: str | None = None,
    actor: str | None = None,
) -> DatasetVersion:
    """Append (or replace) rows of dataset ``name`` as a new version and record it."""
    lake = resolve(lake)
    frame = _frame(data)
    frame = frame.with_columns(
        pl.col(c).cast(pl.String) for c, t in frame.schema.items() if isinstance(t, (pl.Categorical, pl.Enum))
    )
    tname = table_name(name)
    meta = {"actor": actor or "", "source": source or "", "dataset": name}
    if mode == "replace" and lake.exists(tname):
        version = lake.overwrite(tname, frame, metadata=meta)
    else:
        version = lake.append(tname, frame, schema=frame.to_arrow().schema, metadata=meta)
    full = load(name, version=version, lake=lake)
    dv = DatasetVersion(name, version, frame.height, full.height, content_hash(full))
    lake.append(
        "datasets",
        [
            {
                "name": name,
                "version": version,
                "created_at": utcnow(),
                "mode": mode,
                "rows": frame.height,
                "total_rows": full.height,
                "schema_json": json.dumps({c: str(t) for c, t in full.schema.items()}),
                "content_hash": dv.content_hash,
                "validation_status": "passed",
                "created_by": actor,
                "source": source,
            }
        ],
        metadata=meta,
    )
    return dv


def load(name: str, version: int | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """Read dataset ``name`` at ``version`` (latest by default), exactly as it was committed."""
    lake = resolve(lake)
    try:
        return lake.read(table_name(name), version=version)
    except TableNotFoundError as exc:
        if not lake.exists(table_name(name)):
            raise DatasetNotFoundError(f"dataset {name!r} does not exist") from None
        raise DatasetNotFoundError(f"dataset {name!r}: {exc}") from None


def latest_version(name: str, *, lake: Lake | None = None) -> int:
    """Return the latest version of dataset ``name``."""
    lake = resolve(lake)
    if not lake.exists(table_name(name)):
        raise DatasetNotFoundError(f"dataset {name!r} does not exist")
    return lake.version(table_name(name))


def versions(name: str | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """Return the ``datasets`` rows (all datasets, or one), newest version first."""
    lake = resolve(lake)
    frame = lake.read_or_empty("datasets")
    if name is not None:
        frame = frame.filter(pl.col("name") == name)
    return frame.sort(["name", "version"], descending=[False, True])
