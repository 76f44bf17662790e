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

import codecs
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from core import profiling, validation
from core.config import Settings, load_settings
from core.errors import (
    ConfigError,
    DatasetNotFoundError,
    DataValidationError,
    NotFoundError,
    SchemaMismatchError,
    TableNotFoundError,
)
from core.ids import new_id, utcnow
from core.lake import Lake, conform, resolve

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

_MAX_FILE_BYTES = 1 << 30  # 1 GiB; [datasets] max_file_mb in lakeops.toml changes it
_SUFFIX_SEP = {".csv": ",", ".txt": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = {".parquet", ".pq"}
_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


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


# ---------------------------------------------------------------------------- content hash
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_NULL = np.uint64(0x9E3779B97F4A7C15)
_Q = 0x100000001B3  # odd multiplier of the text hash (invertible mod 2^64)
_Q_INV = pow(_Q, -1, 1 << 64)
_CHUNK = 1 << 18


def _fmix(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser (uint64 arithmetic wraps mod 2^64)."""
    h = h ^ (h >> np.uint64(33))
    h = h * _M1
    h = h ^ (h >> np.uint64(33))
    h = h * _M2
    return h ^ (h >> np.uint64(33))


_POWERS: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]  # Q^i, Q^-i (grown on demand)
_CHUNK_BYTES = 1 << 21


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Q^i and Q^-i mod 2^64 for i in [0, n], cached (the table only ever grows)."""
    q, qi = _POWERS
    if len(q) <= n:
        size = max(n + 1, 2 * len(q), 1 << 16)
        q = np.concatenate([np.ones(1, np.uint64), np.cumprod(np.full(size - 1, _Q, dtype=np.uint64))])
        qi = np.concatenate([np.ones(1, np.uint64), np.cumprod(np.full(size - 1, _Q_INV, dtype=np.uint64))])
        _POWERS[:] = [q, qi]
    return q, qi


def _text_hash(series: pl.Series) -> np.ndarray:
    """Per-row hash of UTF-8/binary values: sum of (byte+1) * Q^(position in value), then length."""
    import pyarrow as pa

    out = np.empty(series.len(), dtype=np.uint64)
    total = series.len()
    if total == 0:
        return out
    avg = max(1, int(series.cast(pl.Binary).bin.size().mean() or 1) if series.dtype == pl.Binary
              else int(series.str.len_bytes().mean() or 1))
    step = max(1, min(_CHUNK, _CHUNK_BYTES // avg))
    for start in range(0, total, step):
        arr = series.slice(start, step).to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = arr.cast(pa.large_binary()) if not pa.types.is_large_binary(arr.type) else arr
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
        lo, hi = int(offsets[0]), int(offsets[-1])
        rel = offsets - lo
        q, qi = _powers(hi - lo)
        weighted = (data[lo:hi].astype(np.uint64) + np.uint64(1)) * q[: hi - lo]
        csum = np.concatenate([np.zeros(1, np.uint64), np.cumsum(weighted, dtype=np.uint64)])
        starts = rel[:-1]
        h = (csum[rel[1:]] - csum[starts]) * qi[starts]  # shift each value to position 0
        out[start : start + len(arr)] = _fmix(h ^ _fmix(np.diff(rel).astype(np.uint64) + _NULL))
    return out


def _canon_type(dtype: pl.DataType) -> str:
    """A small, version-independent type vocabulary for the hash."""
    if dtype.is_integer() or dtype == pl.Boolean:
        return "int"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Datetime):
        return f"datetime[{dtype.time_zone or 'UTC'}]"
    if dtype == pl.Date:
        return "date"
    if dtype == pl.Binary:
        return "binary"
    return "string" if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum) else "text:" + type(dtype).__name__


def _column_hash(s: pl.Series) -> np.ndarray:
    """Stable 64-bit hash of every value of one column (nulls -> a sentinel)."""
    dtype = s.dtype
    valid = ~s.is_null().to_numpy()
    if dtype.is_float():
        x = s.cast(pl.Float64).fill_null(0.0).to_numpy() + 0.0  # -0.0 -> 0.0
        x = np.where(np.isnan(x), np.float64("nan"), x)
        raw = np.ascontiguousarray(x).view(np.uint64)
    elif dtype.is_integer() or dtype == pl.Boolean:
        raw = s.cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    elif isinstance(dtype, pl.Datetime):
        us = s.dt.cast_time_unit("us")
        raw = us.to_physical().fill_null(0).to_numpy().astype(np.int64).view(np.uint64)
    elif dtype == pl.Date:
        raw = s.to_physical().cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    elif dtype in (pl.String, pl.Binary):
        text = s.fill_null("" if dtype == pl.String else b"")
        if s.len() > 10_000 and s.head(10_000).n_unique() < 1_000:  # low cardinality: hash each value once
            import pyarrow as pa

            enc = text.to_arrow().dictionary_encode()
            enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
            values = pl.Series(enc.dictionary)
            raw = _text_hash(values)[enc.indices.to_numpy(zero_copy_only=False)]
        else:
            raw = _text_hash(text)
    elif dtype.is_nested():
        raw = _text_hash(pl.DataFrame([s]).select(pl.struct(s.name).struct.json_encode()).to_series().fill_null(""))
    else:
        raw = _text_hash(s.cast(pl.String).fill_null(""))
    return np.where(valid, _fmix(raw + np.uint64(1)), _NULL)


def row_hashes(frame: pl.DataFrame) -> np.ndarray:
    """Return a stable uint64 hash per row (independent of column order and library versions)."""
    h = np.full(frame.height, np.uint64(0x2545F4914F6CDD1D), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, name in enumerate(sorted(frame.columns)):
            salt = np.uint64(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") + i)
            h = _fmix(h * _M2 + (_column_hash(frame[name]) ^ salt))
    return h


def content_hash(frame: pl.DataFrame) -> str:
    """A sha256 of the rows that does not depend on their order (see the module docstring)."""
    schema = json.dumps(sorted((c, _canon_type(t)) for c, t in frame.schema.items()))
    h = hashlib.sha256(b"lakeops-content-v1\x00" + schema.encode())
    h.update(frame.height.to_bytes(8, "little"))
    if frame.height:
        with np.errstate(over="ignore"):
            rows = row_hashes(frame)
            s1 = int(np.sum(rows, dtype=np.uint64))
            s2 = int(np.sum(_fmix(rows ^ _NULL), dtype=np.uint64))
        h.update(s1.to_bytes(8, "little") + s2.to_bytes(8, "little"))
    return h.hexdigest()


# ---------------------------------------------------------------------------- reading input
def _file_error(path: Path, problem: str) -> DataValidationError:
    return DataValidationError(f"file {path.name}: {problem}; nothing was written")


def _check_utf8(path: Path) -> None:
    """Stream the file once, refusing the first byte that is not UTF-8 (bounded memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    with path.open("rb") as fh:
        while chunk := fh.read(4 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                raise _file_error(
                    path,
                    f"is not UTF-8 text (byte 0x{chunk[exc.start]:02x} at offset {bad}, line {line}); "
                    "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8",
                ) from None
            line += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _file_error(path, "ends in the middle of a UTF-8 character; re-save it as UTF-8") from None


def _check_separator(path: Path, sep: str) -> None:
    with path.open("rb") as fh:
        header = fh.readline(1 << 16).decode("utf-8", errors="replace")
    if sep in header:
        return
    for other, label in _SEP_NAMES.items():
        if other != sep and header.count(other) > 0:
            raise _file_error(
                path,
                f"the header has no {_SEP_NAMES.get(sep, repr(sep))} but {header.count(other)} {label}(s): the file "
                f"looks {label}-separated; pass --delimiter {other!r} (separator={other!r} in Python)",
            )


def _csv_error(path: Path, exc: Exception) -> DataValidationError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if msg.startswith('could not parse `"'):
        return _file_error(path, f"broken quoting: a quoted field is never closed ({msg[:80]}...); fix the quotes")
    if "could not parse" in msg:
        return _file_error(
            path, f"a column mixes types: {msg}; fix the value, or quote the column as text in every row"
        )
    if "more fields" in msg or "fields than" in msg:
        return _file_error(path, f"rows have more fields than the header ({msg}); check the delimiter and quoting")
    return _file_error(path, f"cannot be read as CSV: {msg}")


def read_file(
    path: str | Path,
    *,
    separator: str | None = None,
    schema: Mapping[str, pl.DataType] | None = None,
    max_bytes: int = _MAX_FILE_BYTES,
) -> pl.DataFrame:
    """Read a CSV/TSV or Parquet file, refusing bad files with one clear message each.

    Args:
        path: the file (``.csv``, ``.txt``, ``.tsv``, ``.tab``, ``.parquet``, ``.pq``).
        separator: CSV field separator (default by suffix: comma, tab for .tsv).
        schema: types to parse known columns as (the dataset's current types).
        max_bytes: larger files are refused before anything is read.

    Raises:
        NotFoundError: no such file.
        DataValidationError: empty, header-only, too large, not UTF-8, wrong delimiter, broken
            quotes, a column of mixed types, duplicate column names, an unsupported suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise _file_error(path, "is empty (0 bytes); expected a header row and data rows")
    if size > max_bytes:
        raise _file_error(
            path,
            f"is {size / 2**20:,.0f} MiB, above the {max_bytes / 2**20:,.0f} MiB ingest limit; split it and ingest the "
            "parts with --mode append, or raise [datasets] max_file_mb in lakeops.toml",
        )
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - polars/arrow raise several types
            raise _file_error(path, f"is not a valid Parquet file ({str(exc).splitlines()[0]})") from None
    if suffix not in _SUFFIX_SEP and separator is None:
        raise _file_error(path, f"has suffix {suffix!r}; use .csv, .tsv or .parquet (or pass a delimiter)")
    sep = separator or _SUFFIX_SEP.get(suffix, ",")
    _check_utf8(path)
    _check_separator(path, sep)
    try:
        frame = pl.read_csv(
            path,
            separator=sep,
            infer_schema_length=10_000,
            try_parse_dates=True,
            schema_overrides=dict(schema) if schema else None,
        )
    except pl.exceptions.NoDataError:
        raise _file_error(path, "is empty; expected a header row and data rows") from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise _csv_error(path, exc) from None
    dups = [c for c in frame.columns if "_duplicated_" in c]
    if dups:
        raise _file_error(path, f"has duplicate column name(s) {', '.join(c.split('_duplicated_')[0] for c in dups)}")
    if frame.height == 0:
        raise _file_error(path, f"has a header ({', '.join(frame.columns[:6])}...) but no data rows")
    _check_mixed(path, frame, schema or {})
    return frame


def _check_mixed(path: Path, frame: pl.DataFrame, declared: Mapping[str, pl.DataType]) -> None:
    """Refuse a text column whose values are mostly numbers (a column of mixed types)."""
    text = [c for c, t in frame.schema.items() if t == pl.String and c not in declared]
    if not text:
        return
    parsed = frame.select(
        pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).is_not_null().alias(c) for c in text
    )
    for c in text:
        non_null = frame[c].drop_nulls().len()
        numbers = int(parsed[c].sum())
        if non_null and 0.5 <= numbers / non_null < 1.0:
            bad = frame.with_row_index("_i").filter(pl.col(c).is_not_null() & ~parsed[c]).row(0, named=True)
            raise _file_error(
                path,
                f"column {c!r} mixes types: {numbers} of {non_null} values are numbers but {bad[c]!r} "
                f"(line {bad['_i'] + 2}) is not; fix the value, or declare the column as text",
            )


def _normalise(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Types the lake stores well: Int64, Float64, String, UTC microsecond timestamps."""
    casts: list[pl.Expr] = []
    for col, dtype in frame.schema.items():
        if isinstance(dtype, (pl.Categorical, pl.Enum)) or dtype == pl.Null:
            casts.append(pl.col(col).cast(pl.String))
        elif dtype.is_integer() and dtype != pl.Int64:
            if dtype == pl.UInt64 and frame[col].max() is not None and frame[col].max() > 2**63 - 1:  # type: ignore[operator]
                raise DataValidationError(f"dataset {name!r}: column {col!r} has values above 2^63-1")
            casts.append(pl.col(col).cast(pl.Int64))
        elif dtype == pl.Float32:
            casts.append(pl.col(col).cast(pl.Float64))
        elif isinstance(dtype, pl.Datetime):
            expr = pl.col(col).dt.cast_time_unit("us")
            expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
            casts.append(expr)
        elif dtype in (pl.Time, pl.Object) or isinstance(dtype, pl.Duration):
            raise DataValidationError(
                f"dataset {name!r}: column {col!r} has type {dtype}, which the lake cannot store; "
                "cast it to a number or string first"
            )
    return frame.with_columns(casts) if casts else frame


def _as_frame(data: Any, name: str, lake: Lake, separator: str | None, max_bytes: int) -> tuple[pl.DataFrame, str | None]:
    """Turn ``data`` into a polars frame; return it with the source file name (if any)."""
    if isinstance(data, (str, Path)):
        schema = None
        if lake.exists(table_name(name)):
            schema = pl.Schema(lake.scan(table_name(name)).collect_schema())
        return read_file(data, separator=separator, schema=schema, max_bytes=max_bytes), Path(data).name
    if isinstance(data, pl.DataFrame):
        return data, None
    if isinstance(data, pl.LazyFrame):
        return data.collect(), None
    try:
        if type(data).__module__.startswith("pandas"):
            return pl.from_pandas(data), None
        return pl.DataFrame(data), None
    except Exception as exc:  # noqa: BLE001 - pandas/arrow/polars raise many types for mixed columns
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(
            f"dataset {name!r}: cannot use this {type(data).__name__} as rows ({first}); "
            "a column probably mixes types: make each column one type"
        ) from None


# ---------------------------------------------------------------------------- specs
def _spec(name: str, spec: Mapping[str, Any] | str | Path | None, settings: Settings | None) -> validation.Spec:
    """Declared rules: an explicit mapping or TOML file, else ``[datasets.<name>]`` in lakeops.toml."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"spec file {path}: {exc}") from None
        table = doc.get("datasets", {}).get(name, doc) if "datasets" in doc else doc
        return validation.parse_spec(table, where=f"spec file {path.name}")
    if spec is not None:
        return validation.parse_spec(spec)
    settings = settings or load_settings()
    return validation.parse_spec(settings.section(f"datasets.{name}"), where=f"[datasets.{name}] in lakeops.toml")


def _max_bytes(settings: Settings | None) -> int:
    raw = (settings or load_settings()).sections.get("datasets", {})
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
    lake: Lake | None = None,
    source: str | None = None,
    actor: str | None = None,
    spec: Mapping[str, Any] | str | Path | None = None,
    settings: Settings | None = None,
    separator: str | None = None,
    validate: bool = True,
) -> DatasetVersion:
    """Validate rows and commit them as a new version of dataset ``name``; profile and hash it.

    Args:
        name: dataset name (letters, digits, ``_``, ``-``).
        data: a polars/pandas frame, or the path of a CSV/TSV/Parquet file.
        mode: ``append`` adds the rows; ``replace`` makes them the whole dataset.
        lake: the lake (default: from settings).
        source: where the rows came from (default: the file name).
        actor: who ingests (commit metadata and the ``datasets`` row); default ``settings.actor``.
        spec: declared rules: a mapping or TOML file; default ``[datasets.<name>]`` in lakeops.toml.
        settings: settings to read the spec section and file limit from (default: loaded).
        separator: CSV separator (default by file suffix).
        validate: False skips validation (profiles and hashes are still recorded).

    Returns:
        The new version; ``validation_status`` is ``passed`` or ``warned`` (with ``warnings``).

    Raises:
        DataValidationError: a bad file, or a batch that broke an error rule (the batch is then
            in quarantine; ``exc.report`` is the ``ValidationReport``). Nothing is appended.
        SchemaMismatchError: rows that cannot be stored in the dataset's table.

    Example:
        >>> ingest("churn", core.demo.generate(1000)).version          # doctest: +SKIP
        1
    """
    lake = resolve(lake)
    if mode not in ("append", "replace"):
        raise DataValidationError(f"mode {mode!r} is not supported: use 'append' or 'replace'")
    tname = table_name(name)
    lake.table_uri(tname)  # validates the name before any work
    settings = settings or load_settings()
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


def list_datasets(*, lake: Lake | None = None) -> pl.DataFrame:
    """One row per dataset: latest version, number of versions, rows, last validation, last change."""
    lake = resolve(lake)
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


def describe(name: str, version: int | None = None, *, lake: Lake | None = None) -> dict[str, Any]:
    """The ``datasets`` row of one version with ``profile`` (dict) and ``report`` (ValidationReport).

    Raises:
        DatasetNotFoundError: no such dataset or version (names the versions that exist).
    """
    lake = resolve(lake)
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


def profile_of(name: str, version: int | None = None, *, lake: Lake | None = None) -> dict[str, Any]:
    """The stored profile of a version (latest by default), without rereading the data.

    See ``core.profiling`` for its shape; drift checks use it as the reference.
    """
    return dict(describe(name, version, lake=lake)["profile"])


def diff(name: str, a: int, b: int, *, lake: Lake | None = None) -> DatasetDiff:
    """Compare versions ``a`` and ``b``: rows added/removed (by content), schema, distributions.

    The per-column frame has ``column``, ``kind``, ``psi`` (of b against a's profile bins),
    ``mean_a``/``mean_b``, ``null_pct_a``/``null_pct_b`` and ``distinct_a``/``distinct_b``.
    """
    lake = resolve(lake)
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


def quarantined(name: str | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """The quarantined batches (all, or of dataset ``name``), newest first, with their status."""
    lake = resolve(lake)
    frame = lake.read_or_empty("quarantine")
    if name is not None:
        frame = frame.filter(pl.col("dataset") == name)
    return frame.sort("at", descending=True)
