"""Dataset versions: each dataset is the Delta table ``data/<name>``, whose Delta version is the
dataset version; the ``datasets`` table records one row per version (rows, schema, content hash,
profile, validation report, creator, source file) and ``quarantine`` the batches refused.

Ingest = read (frame, pandas, CSV or Parquet) -> normalise types -> validate (rules inferred from
the latest version's stored profile + rules declared in ``[datasets.<name>]`` or a spec file) ->
on an error rule: park the batch in ``quarantine/<name>/<id>.parquet`` and raise
``DataValidationError``; else one Delta commit, then profile and hash the new version.

Content hash (``lakeops-content-v1``): every row gets a stable 64-bit hash built with numpy from a
canonical encoding of its values (integers and timestamps as int64, floats as float64 bits with
-0.0 and NaN made canonical, text as a polynomial hash of its UTF-8 bytes plus its length, nulls as
a sentinel), mixed over the columns in name order. The version hash is the sha256 of the canonical
schema, the row count and two sums (mod 2^64) of differently mixed row hashes: a multiset hash,
so the same rows in any order give the same hash, on any polars/pyarrow version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from core import profiling, validation
from core.config import Settings, read_toml
from core.datasets.files import _MAX_FILE_BYTES, _as_frame, _normalise, read_file
from core.datasets.hashing import content_hash, row_hashes
from core.errors import (
    ConfigError,
    DatasetNotFoundError,
    DataValidationError,
    SchemaMismatchError,
    TableNotFoundError,
)
from core.ids import new_id, utcnow
from core.lake import Lake, conform

__all__ = [
    "DatasetDiff",
    "DatasetVersion",
    "content_hash",
    "describe",
    "diff",
    "ingest",
    "latest_version",
    "list_datasets",
    "load",
    "profile_of",
    "quarantined",
    "read_file",
    "row_hashes",
    "table_name",
    "versions",
]


@dataclass(frozen=True)
class DatasetVersion:
    """One committed dataset version."""

    name: str
    version: int
    rows: int
    total_rows: int
    content_hash: str
    validation_status: str = "passed"
    warnings: tuple[str, ...] = ()
    source: str | None = None


@dataclass(frozen=True)
class DatasetDiff:
    """What changed between versions ``a`` and ``b`` of a dataset."""

    name: str
    a: int
    b: int
    rows_a: int
    rows_b: int
    added: int
    removed: int
    schema_changes: list[dict[str, Any]] = field(default_factory=list)
    columns: pl.DataFrame = field(default_factory=pl.DataFrame)


def table_name(name: str) -> str:
    """Return the lake table of dataset ``name``."""
    return f"data/{name}"


def _spec(name: str, spec: Mapping[str, Any] | str | Path | None, settings: Settings) -> validation.Spec:
    """Declared rules: an explicit mapping or TOML file, else ``[datasets.<name>]`` in lakeops.toml."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        doc = read_toml(path, what="spec file")
        table = doc.get("datasets", {}).get(name, doc) if "datasets" in doc else doc
        return validation.parse_spec(table, where=f"spec file {path.name}")
    if spec is not None:
        return validation.parse_spec(spec)
    return validation.parse_spec(settings.section(f"datasets.{name}"), where=f"[datasets.{name}] in lakeops.toml")


def _max_bytes(settings: Settings) -> int:
    raw = settings.sections.get("datasets", {})
    value = raw.get("max_file_mb") if isinstance(raw, Mapping) else None
    if value is None:
        return _MAX_FILE_BYTES
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"[datasets] max_file_mb must be a positive number, got {value!r}")
    return int(value * 2**20)


# ---------------------------------------------------------------------------- ingest
def _latest_row(name: str, lake: Lake) -> dict[str, Any] | None:
    rows = versions(name, lake=lake)
    return rows.row(0, named=True) if rows.height else None


def _quarantine(name: str, frame: pl.DataFrame, report: validation.ValidationReport, *, lake: Lake,
                source: str | None, actor: str | None) -> str:
    import io

    qid = new_id()
    buf = io.BytesIO()
    frame.write_parquet(buf)
    rel = f"quarantine/{name}/{qid}.parquet"
    lake.put_bytes(rel, buf.getvalue())
    lake.append(
        "quarantine",
        [{"quarantine_id": qid, "dataset": name, "at": utcnow(), "rows": frame.height, "source": source,
          "path": rel, "validation_json": report.to_json(), "created_by": actor}],
        metadata={"actor": actor or "", "dataset": name, "action": "quarantine"},
    )
    return qid


def ingest(
    name: str,
    data: Any,
    *,
    mode: Literal["append", "replace"] = "append",
    lake: Lake,
    source: str | None = None,
    actor: str | None = None,
    spec: Mapping[str, Any] | str | Path | None = None,
    settings: Settings,
    separator: str | None = None,
    validate: bool = True,
) -> DatasetVersion:
    """Validate rows and commit them as a new version of dataset ``name``; profile and hash it.

    Args:
        name: dataset name (letters, digits, ``_``, ``-``).
        data: a polars/pandas frame, or the path of a CSV/TSV/Parquet file.
        mode: ``append`` adds the rows; ``replace`` makes them the whole dataset.
        lake: the lake.
        source: where the rows came from (default: the file name).
        actor: who ingests (commit metadata and the ``datasets`` row); default ``settings.actor``.
        spec: declared rules: a mapping or TOML file; default ``[datasets.<name>]`` in lakeops.toml.
        settings: settings to read the spec section and file limit from.
        separator: CSV separator (default by file suffix).
        validate: False skips validation (profiles and hashes are still recorded).

    Returns:
        The new version; ``validation_status`` is ``passed`` or ``warned`` (with ``warnings``).

    Raises:
        DataValidationError: a bad file, or a batch that broke an error rule (the batch is then
            in quarantine; ``exc.report`` is the ``ValidationReport``). Nothing is appended.
        SchemaMismatchError: rows that cannot be stored in the dataset's table.

    Example:
        >>> ingest("churn", core.demo.generate(1000), lake=lake, settings=settings).version  # doctest: +SKIP
        1
    """
    if mode not in ("append", "replace"):
        raise DataValidationError(f"mode {mode!r} is not supported: use 'append' or 'replace'")
    tname = table_name(name)
    lake.table_uri(tname)  # validates the name before any work
    actor = actor or settings.actor
    frame, file_name = _as_frame(data, name, lake, separator, _max_bytes(settings))
    source = source or file_name
    frame = _normalise(frame, name)
    if frame.width == 0 or frame.height == 0:
        raise DataValidationError(f"dataset {name!r}: the batch has no rows ({frame.width} columns); nothing was written")

    latest = _latest_row(name, lake)
    report = validation.ValidationReport((), frame.height)
    if validate:
        spec_ = _spec(name, spec, settings)
        rules = list(spec_.rules)
        ref_version = None
        if spec_.infer and latest is not None and latest.get("profile_json"):
            rules = validation.infer_rules(json.loads(latest["profile_json"]), spec_) + rules
            ref_version = int(latest["version"])
        existing = None
        unique_cols = [c for r in rules if r.kind == "unique" for c in r.params["columns"]]
        if unique_cols and mode == "append" and lake.exists(tname):
            have = set(lake.scan(tname).collect_schema().names())
            existing = lake.scan(tname).select([c for c in unique_cols if c in have]).collect()
        report = validation.validate(frame, rules, existing=existing, reference_version=ref_version)
        if not report.ok:
            qid = _quarantine(name, frame, report, lake=lake, source=source, actor=actor)
            lines = "\n".join("  " + r.line() for r in report.errors)
            raise DataValidationError(
                f"dataset {name!r}: batch of {frame.height} rows{f' from {source}' if source else ''} broke "
                f"{len(report.errors)} rule(s); not written, kept as quarantine {qid}:\n{lines}",
                report,
            )

    meta = {"actor": actor or "", "source": source or "", "dataset": name, "mode": mode}
    if lake.exists(tname):
        try:
            table = conform(frame.to_arrow(), lake.schema(tname), table_name=tname)
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"dataset {name!r}: {exc}") from None
        if mode == "replace":
            version = lake.overwrite(tname, table, metadata=meta)
            full = pl.DataFrame(pl.from_arrow(table))
        else:
            version = lake.append(tname, table, metadata=meta)
            full = load(name, version, lake=lake)
    else:
        version = lake.append(tname, frame, schema=frame.head(0).to_arrow().schema, metadata=meta)
        full = frame
    digest = content_hash(full)
    prof = profiling.profile(full)
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
                "content_hash": digest,
                "profile_json": json.dumps(prof),
                "validation_status": report.status if validate else "skipped",
                "validation_json": report.to_json(),
                "created_by": actor,
                "source": source,
            }
        ],
        metadata=meta,
    )
    return DatasetVersion(
        name, version, frame.height, full.height, digest, report.status if validate else "skipped",
        tuple(r.line() for r in report.warnings), source,
    )


# ---------------------------------------------------------------------------- reading back
def load(name: str, version: int | None = None, *, lake: Lake) -> pl.DataFrame:
    """Read dataset ``name`` at ``version`` (latest by default), exactly as it was committed."""
    try:
        return lake.read(table_name(name), version=version)
    except TableNotFoundError as exc:
        if not lake.exists(table_name(name)):
            raise DatasetNotFoundError(f"dataset {name!r} does not exist") from None
        raise DatasetNotFoundError(f"dataset {name!r}: {exc}") from None


def latest_version(name: str, *, lake: Lake) -> int:
    """Return the latest version of dataset ``name``."""
    if not lake.exists(table_name(name)):
        raise DatasetNotFoundError(f"dataset {name!r} does not exist")
    return lake.version(table_name(name))


def versions(name: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """Return the ``datasets`` rows (all datasets, or one), newest version first."""
    frame = lake.read_or_empty("datasets")
    if name is not None:
        frame = frame.filter(pl.col("name") == name)
    return frame.sort(["name", "version"], descending=[False, True])


def list_datasets(*, lake: Lake) -> pl.DataFrame:
    """One row per dataset: latest version, number of versions, rows, last validation, last change."""
    rows = versions(lake=lake)
    return (
        rows.group_by("name")
        .agg(
            pl.col("version").max().alias("latest_version"),
            pl.len().cast(pl.Int64).alias("versions"),
            pl.col("total_rows").first().alias("rows"),
            pl.col("validation_status").first().alias("validation"),
            pl.col("content_hash").first().str.slice(0, 12).alias("hash"),
            pl.col("created_at").first().alias("updated_at"),
        )
        .sort("name")
    )


def describe(name: str, version: int | None = None, *, lake: Lake) -> dict[str, Any]:
    """The ``datasets`` row of one version with ``profile`` (dict) and ``report`` (ValidationReport).

    Raises:
        DatasetNotFoundError: no such dataset or version (names the versions that exist).
    """
    rows = versions(name, lake=lake)
    if rows.height == 0:
        raise DatasetNotFoundError(f"dataset {name!r} does not exist (see 'lakeops data list')")
    if version is not None:
        picked = rows.filter(pl.col("version") == version)
        if picked.height == 0:
            have = sorted(rows["version"].to_list())
            raise DatasetNotFoundError(f"dataset {name!r} has versions {', '.join(map(str, have))}; asked for {version}")
        rows = picked
    row = rows.row(0, named=True)
    row["profile"] = json.loads(row["profile_json"]) if row.get("profile_json") else {}
    row["report"] = validation.ValidationReport.from_dict(json.loads(row["validation_json"] or "{}"))
    return row


def profile_of(name: str, version: int | None = None, *, lake: Lake) -> dict[str, Any]:
    """The stored profile of a version (latest by default), without rereading the data.

    See ``core.profiling`` for its shape; drift checks use it as the reference.
    """
    return dict(describe(name, version, lake=lake)["profile"])


def diff(name: str, a: int, b: int, *, lake: Lake) -> DatasetDiff:
    """Compare versions ``a`` and ``b``: rows added/removed (by content), schema, distributions.

    The per-column frame has ``column``, ``kind``, ``psi`` (of b against a's profile bins),
    ``mean_a``/``mean_b``, ``null_pct_a``/``null_pct_b`` and ``distinct_a``/``distinct_b``.
    """
    da, db = describe(name, a, lake=lake), describe(name, b, lake=lake)
    fa, fb = load(name, a, lake=lake), load(name, b, lake=lake)
    ha = pl.Series("h", row_hashes(fa)).value_counts(name="na")
    hb = pl.Series("h", row_hashes(fb)).value_counts(name="nb")
    joined = ha.join(hb, on="h", how="full", coalesce=True).fill_null(0)
    delta = joined.select((pl.col("nb").cast(pl.Int64) - pl.col("na").cast(pl.Int64)).alias("d"))["d"]
    added, removed = int(delta.clip(lower_bound=0).sum()), int((-delta).clip(lower_bound=0).sum())
    sa, sb = fa.schema, fb.schema
    changes = [{"column": c, "change": "removed", "a": str(sa[c]), "b": None} for c in sa if c not in sb]
    changes += [{"column": c, "change": "added", "a": None, "b": str(sb[c])} for c in sb if c not in sa]
    changes += [{"column": c, "change": "type", "a": str(sa[c]), "b": str(sb[c])} for c in sa if c in sb and sa[c] != sb[c]]
    pa_, pb_ = da["profile"].get("columns", {}), db["profile"].get("columns", {})
    rows = []
    for c in [c for c in sb if c in sa]:
        ca, cb = pa_.get(c, {}), pb_.get(c, {})
        rows.append({
            "column": c, "kind": cb.get("kind"),
            "psi": validation.psi_against_profile(ca, fb[c]) if _comparable(ca) else None,
            "mean_a": ca.get("mean"), "mean_b": cb.get("mean"),
            "null_pct_a": 100 * float(ca.get("null_fraction") or 0), "null_pct_b": 100 * float(cb.get("null_fraction") or 0),
            "distinct_a": ca.get("distinct"), "distinct_b": cb.get("distinct"),
        })
    schema = {"column": pl.String, "kind": pl.String, "psi": pl.Float64, "mean_a": pl.Float64, "mean_b": pl.Float64,
              "null_pct_a": pl.Float64, "null_pct_b": pl.Float64, "distinct_a": pl.Int64, "distinct_b": pl.Int64}
    return DatasetDiff(name, a, b, fa.height, fb.height, added, removed, changes, pl.DataFrame(rows, schema=schema))


def _comparable(col: Mapping[str, Any]) -> bool:
    """A column whose distribution PSI means something (numeric, or categorical of low cardinality)."""
    if col.get("kind") == "numeric":
        return bool((col.get("histogram") or {}).get("counts"))
    return col.get("kind") == "categorical" and 0 < int(col.get("distinct") or 0) <= 50


def quarantined(name: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """The quarantined batches (all, or of dataset ``name``), newest first, with their status."""
    frame = lake.read_or_empty("quarantine")
    if name is not None:
        frame = frame.filter(pl.col("dataset") == name)
    return frame.sort("at", descending=True)
