"""Content hashes of dataset rows: stable across processes and versions, independent of row order."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl

__all__ = ["content_hash", "row_hashes"]

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
    sizes = series.cast(pl.Binary).bin.size() if series.dtype == pl.Binary else series.str.len_bytes()
    mean = sizes.mean()
    avg = max(1, int(mean)) if isinstance(mean, (int, float)) and mean else 1
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
