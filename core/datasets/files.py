"""Reading dataset files (CSV, TSV, Parquet) with one clear message per kind of bad file."""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from core.errors import (
    DataValidationError,
    NotFoundError,
)
from core.lake import Lake

__all__ = ["read_file"]

_MAX_FILE_BYTES = 1 << 30  # 1 GiB; [datasets] max_file_mb in lakeops.toml changes it
_SUFFIX_SEP = {".csv": ",", ".txt": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = {".parquet", ".pq"}
_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}



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


_THOUSANDS = re.compile(r"[+-]?\d{1,3}([,' ]\d{3})+(\.\d+)?")
_UNPARSED = re.compile(r"could not parse `(?P<value>.*)` as dtype `(?P<dtype>[^`]+)` at column '(?P<column>[^']*)'")


def _thousands(path: Path, column: str, value: str, where: str = "") -> DataValidationError | None:
    """The error for a number written with thousands separators ("1,400"), or None."""
    if not _THOUSANDS.fullmatch(value.strip()):
        return None
    sep = next(c for c in value if not c.isdigit() and c not in "+-")
    plain = "".join(c for c in value if c != sep).strip()
    return _file_error(
        path,
        f"column {column!r} has {value!r}{where}, a number written with a thousands separator ({sep!r}): "
        f"write numbers without separators ({plain}), or declare the column as text",
    )


def _csv_error(path: Path, exc: Exception) -> DataValidationError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    m = _UNPARSED.match(msg)
    if m:  # a whole field (quoted or not) that does not parse as the column's type
        raw = m["value"]
        value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
        found = _thousands(path, m["column"], value)
        if found is not None:
            return found
    if msg.startswith('could not parse `"') and not m:
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
            found = _thousands(path, c, bad[c], f" (line {bad['_i'] + 2})")
            if found is not None:
                raise found
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
            if dtype == pl.UInt64 and isinstance(top := frame[col].max(), int) and top > 2**63 - 1:
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
        if lake.exists(f"data/{name}"):
            schema = pl.Schema(lake.scan(f"data/{name}").collect_schema())
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
