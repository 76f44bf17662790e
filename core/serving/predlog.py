"""The prediction log: WAL records -> batched, exactly-once appends to ``predictions/<model>``.

Requests write their records to the write-ahead log (``core.serving.wal``) before they answer.
A background thread seals the active segment every ``flush_interval_s``, turns each sealed
segment into one Arrow table per target table (``predictions/<model>``, ``feedback``) and appends
each with one commit whose metadata carries ``wal_segment = <slot id>/<segment>``; only then is
the segment deleted. A segment whose fate is unknown (left by a killed process, or an append
that raised after maybe committing) is checked against those markers in the table history
first, so each record reaches the lake exactly once. When the lake is unreachable the segments
pile up (``backlog_bytes``) and are retried with back-off until it returns.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core import registry
from core.catalog import TS
from core.errors import LakeopsError, SchemaMismatchError
from core.lake import Lake
from core.serving.schemas import prediction_schema
from core.serving.wal import Slot, WriteAheadLog, read_segment, segments

__all__ = ["FEEDBACK_TABLE", "PredictionLog", "prediction_table"]

_log = logging.getLogger("lakeops.serving")
FEEDBACK_TABLE = "feedback"
_US_PER_DAY = 86_400_000_000
_HISTORY_LIMIT = 5_000
_UNIQUE = ("prediction_id", "at", "score", "latency_ms")  # no Parquet dictionary for these


def prediction_table(model: str) -> str:
    """Return the lake table holding model ``model``'s prediction log."""
    return f"predictions/{model}"


class PredictionLog:
    """Moves sealed WAL segments into the lake in a background thread.

    Args:
        lake: the lake to append to.
        wal: this worker's write-ahead log.
        interval_s: seconds between flushes.
        actor: recorded in commit metadata.
        features_for: returns the signature features of a model (for a new table's schema),
            or None when unknown.
    """

    def __init__(
        self,
        lake: Lake,
        wal: WriteAheadLog,
        *,
        interval_s: float,
        actor: str,
        features_for: Callable[[str], list[dict[str, Any]] | None] = lambda _m: None,
    ) -> None:
        self.lake = lake
        self.wal = wal
        self.interval_s = interval_s
        self.actor = actor
        self.features_for = features_for
        self.lake_ok = True
        self.last_error: str | None = None
        self.rows_committed = 0
        self.commits = 0
        self._uncertain: set[Path] = set(segments(wal.slot.path))  # left by an earlier process
        self._schemas: dict[str, pa.Schema] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lakeops-predlog", daemon=True)

    def start(self) -> None:
        """Start the background flusher."""
        self._thread.start()

    def flush_now(self) -> None:
        """Ask the flusher to run now instead of at the next interval."""
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is on the WAL (best effort within ``timeout``) and stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.interval_s
        while True:
            self._wake.wait(backoff)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self.flush()
                self.lake_ok, self.last_error = True, None
                backoff = self.interval_s
            except (LakeopsError, OSError) as exc:
                self.lake_ok, self.last_error = False, str(exc)
                _log.warning("prediction log: lake append failed, will retry: %s", exc)
                backoff = min(max(backoff * 2, 0.5), 10.0)
            if stopping:
                return

    def flush(self) -> int:
        """Seal the active segment and append every sealed segment; return rows committed."""
        self.wal.seal()
        active = self.wal._active
        total = 0
        for seg in segments(self.wal.slot.path):
            if seg == active:
                continue
            total += self.commit_segment(seg, self.wal.slot, forget=self.wal.forget)
        return total

    def commit_segment(self, seg: Path, slot: Slot, *, forget: Callable[[Path], None] | None = None) -> int:
        """Append one sealed segment to the lake exactly once, then delete it."""
        marker = f"{slot.id}/{seg.name}"
        with _gc_paused():
            tables = _tables(read_segment(seg), self._schema, self._header_of)
        rows = 0
        for name, table in tables.items():
            if seg in self._uncertain and self._committed(name, marker, seg):
                continue
            is_pred = name != FEEDBACK_TABLE
            try:
                self.lake.append(
                    name,
                    table,
                    metadata={"actor": self.actor, "source": "serving", "wal_segment": marker},
                    schema=table.schema if is_pred else None,
                    partition_by=("day",) if is_pred else (),
                    unique_columns=_UNIQUE if is_pred else ("prediction_id",),
                )
            except SchemaMismatchError as exc:
                bad = seg.with_suffix(".rejected")
                seg.rename(bad)
                _log.error("prediction log: segment %s does not fit %s, kept as %s: %s", seg, name, bad, exc)
                return rows
            except BaseException:
                self._uncertain.add(seg)  # the commit may have landed before the error
                raise
            rows += table.num_rows
            self.commits += 1
        self._uncertain.discard(seg)
        (forget or (lambda p: p.unlink()))(seg)
        self.rows_committed += rows
        return rows

    def _committed(self, table: str, marker: str, seg: Path) -> bool:
        if not self.lake.exists(table):
            return False
        since_ms = seg.stat().st_mtime * 1000 - 3_600_000  # commits older than the segment cannot be it
        for h in self.lake.history(table, _HISTORY_LIMIT):
            if h.get("wal_segment") == marker:
                return True
            if (h.get("timestamp") or 0) < since_ms:
                break
        return False

    def _schema(self, model: str) -> pa.Schema | None:
        name = prediction_table(model)
        if model in self._schemas:
            return self._schemas[model]
        if self.lake.exists(name):
            self._schemas[model] = self.lake.schema(name)
            return self._schemas[model]
        features = self.features_for(model)
        return prediction_schema(features) if features is not None else None

    def _header_of(self, model: str, version: int) -> dict[str, Any]:
        """A model version's WAL header rebuilt from the registry (for a segment that lacks it)."""
        sig = registry.get_version(model, version, lake=self.lake).signature
        feats = sig["features"]
        return {
            "fn": [f["name"] for f in feats],
            "lv": {f["name"]: list(f.get("levels") or []) for f in feats if f["kind"] == "categorical"},
            "thr": float(sig.get("threshold", 0.5)) if sig.get("task", "binary") == "binary" else None,
        }

    def replay_orphans(self, slots: list[Slot]) -> int:
        """Append the segments of slots no live worker holds (each checked for a marker first)."""
        total = 0
        for slot in slots:
            for seg in segments(slot.path):
                self._uncertain.add(seg)
                total += self.commit_segment(seg, slot)
        return total


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a segment is decoded and tabled.

    Decoding tens of thousands of small records allocates containers fast enough to run a GC
    generation scan every few hundred records, each walking every record decoded so far; that
    made decoding ~4x slower (measured: 40 vs 9 us per 1-row record). Nothing built here forms
    cycles, and the pause lasts one segment.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _tables(
    records: list[Any],
    schema_of: Callable[[str], pa.Schema | None],
    header_of: Callable[[str, int], dict[str, Any]] | None = None,
) -> dict[str, pa.Table]:
    """Group a segment's records into one Arrow table per lake table.

    Args:
        records: the segment's decoded records, in order (see ``core.serving.wal``).
        schema_of: the existing table schema of a model's prediction log, or None.
        header_of: a model version's header when the segment lacks it (never expected: the WAL
            writes it first), else the records cannot be decoded.
    """
    preds: dict[str, list[list[Any]]] = {}
    legacy: dict[str, list[dict]] = {}
    headers: dict[tuple[str, int], dict[str, Any]] = {}
    feedback: list[dict] = []
    for r in records:
        if type(r) is list:
            if r and r[0] == "q":
                preds.setdefault(r[1], []).append(r)
        elif isinstance(r, dict):
            k = r.get("k")
            if k == "h":
                headers[(r["m"], r["v"])] = r
            elif k == "p":
                legacy.setdefault(r["m"], []).append(r)
            elif k == "f":
                feedback.append(r)
    out: dict[str, pa.Table] = {}
    for model in dict.fromkeys([*preds, *legacy]):
        schema = schema_of(model)
        parts = []
        if model in preds:
            recs = preds[model]
            hdrs: dict[int, dict[str, Any]] = {}
            for v in {r[2] for r in recs}:
                hdr = headers.get((model, v))
                if hdr is None:
                    if header_of is None:
                        raise LakeopsError(f"WAL segment has predictions of {model} v{v} without its header")
                    hdr = header_of(model, v)
                hdrs[v] = hdr
            if schema is None:
                newest = hdrs[max(hdrs)]
                schema = prediction_schema(
                    [{"name": n, "kind": "categorical" if n in newest["lv"] else "numeric"} for n in newest["fn"]]
                )
            parts.append(_q_table(recs, hdrs, schema))
        if model in legacy:
            parts.append(_prediction_table(legacy[model], schema))
        out[prediction_table(model)] = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")
    if feedback:
        out[FEEDBACK_TABLE] = _feedback_table(feedback)
    return out


_BLOCK = 4096  # rows per step of the cache-friendly transpose


def _columns_of(X: np.ndarray) -> np.ndarray:
    """``X.T`` as a contiguous (features x rows) array, copied in cache-sized row blocks.

    numpy's one-shot transposed copy of a tall matrix is ~2.5x slower (strided writes).
    """
    out = np.empty((X.shape[1], X.shape[0]), dtype=X.dtype)
    for i in range(0, X.shape[0], _BLOCK):
        out[:, i : i + _BLOCK] = X[i : i + _BLOCK].T
    return out


def _strings(dictionary: list[Any], index: np.ndarray) -> pa.Array:
    """``dictionary[index]`` as an Arrow string array; index -1 is null (one ``take``)."""
    idx = np.where(index < 0, len(dictionary), index).astype(np.int32)
    return pa.array([*dictionary, None], pa.string()).take(pa.array(idx, pa.int32()))


def _q_table(recs: list[list[Any]], headers: dict[int, dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build one model's table from its ``q`` records: numpy over the raw bytes, no per-row Python.

    Per-record work is a handful of C-level ``map``/``join`` passes; per-row work is numpy.
    """
    r_count = len(recs)
    counts = np.fromiter(map(itemgetter(5), recs), dtype=np.int64, count=r_count)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    versions = np.fromiter(map(itemgetter(2), recs), dtype=np.int64, count=r_count)
    single = len(headers) == 1
    at = np.repeat(np.fromiter(map(itemgetter(3), recs), dtype=np.int64, count=r_count), counts)
    scores = np.frombuffer(b"".join(map(itemgetter(7), recs)), dtype=np.float64)
    thr_of = {v: (np.nan if h.get("thr") is None else float(h["thr"])) for v, h in headers.items()}
    if single:
        thr = np.full(total, next(iter(thr_of.values())))
    else:
        thr = np.repeat(np.array([thr_of[v] for v in versions.tolist()], dtype=np.float64), counts)
    label = np.where(np.isnan(thr), -1, scores >= thr).astype(np.int64)
    ids = b"".join(map(itemgetter(6), recs))
    if len(ids) != _ID_LEN * total:
        raise LakeopsError("WAL prediction record with malformed ids")
    offsets = np.arange(0, _ID_LEN * (total + 1), _ID_LEN, dtype=np.int32)
    cols: dict[str, pa.Array] = {
        "prediction_id": pa.StringArray.from_buffers(total, pa.py_buffer(offsets), pa.py_buffer(ids)),
        "at": pa.array(at, pa.int64()).cast(TS),
        "day": pa.array((at // _US_PER_DAY).astype(np.int32), pa.int32()).cast(pa.date32()),
        "model_version": pa.array(np.repeat(versions, counts)),
        "score": pa.array(scores, pa.float64()),
        "label": pa.array(label, pa.int64(), mask=label < 0),
        "latency_ms": pa.array(np.repeat(np.fromiter(map(itemgetter(4), recs), np.float64, r_count), counts)),
    }
    names_of = {v: list(h["fn"]) for v, h in headers.items()}
    names = list(dict.fromkeys(n for v in sorted(names_of, reverse=True) for n in names_of[v]))
    if all(fn == names for fn in names_of.values()):
        X = np.frombuffer(b"".join(map(itemgetter(8), recs)), dtype=np.float64).reshape(total, len(names))
        XT = _columns_of(X)
        matrix = {n: XT[j] for j, n in enumerate(names)}
    else:  # versions with different features in one flush: align by name, NaN where absent
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for r in recs:
            fn = names_of[r[2]]
            m = np.frombuffer(r[8], dtype=np.float64).reshape(r[5], len(fn))
            for n in names:
                parts[n].append(m[:, fn.index(n)] if n in fn else np.full(r[5], np.nan))
        matrix = {n: np.concatenate(p) for n, p in parts.items()}
    unknown = [(i, r[9]) for i, r in enumerate(recs) if r[9]]
    for name in names:
        col = matrix[name]
        levels_of = {v: h["lv"][name] for v, h in headers.items() if name in h["lv"]}
        if not levels_of:
            nan = np.isnan(col)
            cols[name] = pa.array(col, pa.float64(), mask=nan if nan.any() else None)  # NaN (missing) -> null
            continue
        # categorical: codes -> one dictionary of strings (levels of every version, then unseen values)
        dictionary: list[Any] = []
        offset: dict[int, int] = {}
        memo: dict[tuple[str, ...], int] = {}
        for v, lv in levels_of.items():
            key = tuple(lv)
            if key not in memo:
                memo[key] = len(dictionary)
                dictionary += lv
            offset[v] = memo[key]
        nan = np.isnan(col)
        index = np.nan_to_num(col, nan=0.0).astype(np.int64)
        if len(offset) == 1 and len(levels_of) == len(headers):
            index += next(iter(offset.values()))
        else:  # several versions: each record's codes index its own version's levels
            index += np.repeat(np.array([offset.get(v, 0) for v in versions.tolist()], dtype=np.int64), counts)
            nan |= np.repeat(np.array([v not in offset for v in versions.tolist()]), counts)
        index[nan] = -1
        for i, unk in unknown:
            for row, value in unk.get(name, ()):
                index[starts[i] + row] = len(dictionary)
                dictionary.append(value)
        cols[name] = _strings(dictionary, index)
    return pa.table(
        {n: cols[n] if n in cols else pa.nulls(total, schema.field(n).type) for n in schema.names}, schema=schema
    )


def _repeat(recs: list[dict], key: str) -> list[Any]:
    """Each (feedback) record's ``key`` value once per row of the record."""
    out: list[Any] = []
    for r in recs:
        out += [r[key]] * len(r["ids"])
    return out


def _concat(recs: list[dict], key: str) -> list[Any]:
    out: list[Any] = []
    for r in recs:
        out += r[key]
    return out


_ID_LEN = 36


def _ids_array(recs: list[dict], total: int) -> pa.Array:
    """The prediction ids as one Arrow string array, from fixed-width id blobs when possible."""
    if all("idb" in r for r in recs):
        data = "".join(r["idb"] for r in recs).encode("ascii")
        if len(data) == _ID_LEN * total:
            offsets = np.arange(0, _ID_LEN * (total + 1), _ID_LEN, dtype=np.int32)
            return pa.StringArray.from_buffers(total, pa.py_buffer(offsets), pa.py_buffer(data))
    ids: list[str] = []
    for r in recs:
        if "idb" in r:
            b = r["idb"]
            ids += [b[k : k + _ID_LEN] for k in range(0, len(b), _ID_LEN)]
        else:
            ids += r["ids"]
    return pa.array(ids, pa.string())


def _categorical(recs: list[dict], counts: np.ndarray, name: str, codes: np.ndarray, *, compact: bool) -> pa.Array:
    """One categorical column's strings for all records, without a Python string per row.

    A compact record carries the levels (``lv``) and its codes are the matrix column; values the
    model never saw are listed in ``unk`` as (row, string). A small record carries its strings
    (``cat``). Both become indices into one dictionary of strings, then one ``take``.
    """
    if not compact:  # only small records (no ``lv``): their strings, concatenated
        try:
            return pa.array(list(chain.from_iterable(map(itemgetter(name), map(itemgetter("cat"), recs)))), pa.string())
        except (KeyError, TypeError):
            pass  # some record lacks the feature (another version's signature)
        values: list[Any] = []
        for r, n in zip(recs, counts.tolist(), strict=True):
            values += (r.get("cat") or {}).get(name) or [None] * n
        return pa.array(values, pa.string())
    first = recs[0].get("lv", {}).get(name)
    if first is not None and all("lv" in r and r["lv"].get(name) == first for r in recs):
        # the common case (one model version per flush): the codes are the index, no per-record work
        index = np.nan_to_num(codes, nan=-1.0).astype(np.int64)
        dictionary = list(first)
        if any(name in (r.get("unk") or {}) for r in recs):
            starts = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
            for r, start in zip(recs, starts, strict=True):
                for row, value in (r.get("unk") or {}).get(name, ()):
                    index[start + row] = len(dictionary)
                    dictionary.append(value)
        return pa.array(dictionary, pa.string()).take(pa.array(index, pa.int64(), mask=index < 0))
    dictionary = []
    memo: dict[tuple[str, ...], int] = {}
    index = np.full(int(counts.sum()), -1, dtype=np.int64)
    start = 0
    for r, n in zip(recs, counts.tolist(), strict=True):
        end = start + n
        if "lv" in r and name in r["lv"]:
            levels = tuple(r["lv"][name])
            off = memo.get(levels)
            if off is None:
                off = memo[levels] = len(dictionary)
                dictionary += levels
            c = codes[start:end]
            ok = ~np.isnan(c)
            index[start:end][ok] = c[ok].astype(np.int64) + off
            for row, value in (r.get("unk") or {}).get(name, ()):
                index[start + row] = len(dictionary)
                dictionary.append(value)
        elif "cat" in r and name in r["cat"]:
            for k, value in enumerate(r["cat"][name]):
                if value is not None:
                    index[start + k] = len(dictionary)
                    dictionary.append(value)
        start = end
    return pa.array(dictionary, pa.string()).take(pa.array(index, pa.int64(), mask=index < 0))


def _prediction_table(recs: list[dict], schema: pa.Schema | None) -> pa.Table:
    """Build one table from binary prediction records (numpy over the raw bytes, no per-row work)."""
    counts = np.array([r["n"] if "n" in r else len(r["ids"]) for r in recs], dtype=np.int64)
    total = int(counts.sum())
    at = np.repeat(np.array([r["at"] for r in recs], dtype=np.int64), counts)
    scores = np.frombuffer(b"".join([r["s"] for r in recs]), dtype=np.float64)
    thr = np.repeat(np.array([r.get("thr") for r in recs], dtype=np.float64), counts)  # None -> NaN
    label = np.where(np.isnan(thr), -1, scores >= thr).astype(np.int64)
    cols: dict[str, pa.Array] = {
        "prediction_id": _ids_array(recs, total),
        "at": pa.array(at, pa.int64()).cast(TS),
        "day": pa.array((at // _US_PER_DAY).astype(np.int32), pa.int32()).cast(pa.date32()),
        "model_version": pa.array(np.repeat(np.array([r["v"] for r in recs], dtype=np.int64), counts)),
        "score": pa.array(scores, pa.float64()),
        "label": pa.array(label, pa.int64(), mask=label < 0),
        "latency_ms": pa.array(np.repeat(np.array([r["lat"] for r in recs], dtype=np.float64), counts)),
    }
    names: list[str] = list(recs[0]["fn"])
    if all(r["fn"] == names for r in recs):
        X = np.frombuffer(b"".join([r["X"] for r in recs]), dtype=np.float64).reshape(total, len(names))
        XT = np.ascontiguousarray(X.T)  # one transpose: contiguous columns convert much faster
        matrix = {n: XT[j] for j, n in enumerate(names)}
    else:  # versions with different features in one flush: align by name, NaN where absent
        matrix = {}
        for n in dict.fromkeys(x for r in recs for x in r["fn"]):
            parts = []
            for r, k in zip(recs, counts.tolist(), strict=True):
                m = np.frombuffer(r["X"], dtype=np.float64).reshape(k, len(r["fn"]))
                parts.append(m[:, r["fn"].index(n)] if n in r["fn"] else np.full(k, np.nan))
            matrix[n] = np.concatenate(parts)
        names = list(matrix)
    categorical = set().union(*[r.get("cat") or r.get("lv") or () for r in recs])
    compact = any("lv" in r for r in recs)
    for name in names:
        if name in categorical:
            cols[name] = _categorical(recs, counts, name, matrix[name], compact=compact)
        else:
            col = matrix[name]
            nan = np.isnan(col)
            cols[name] = pa.array(col, pa.float64(), mask=nan if nan.any() else None)  # NaN (missing) -> null
    if schema is None:
        return pa.table(cols)
    return pa.table(
        {n: cols[n] if n in cols else pa.nulls(total, schema.field(n).type) for n in schema.names}, schema=schema
    )


def _feedback_table(recs: list[dict]) -> pa.Table:
    return pa.table(
        {
            "prediction_id": pa.array(_concat(recs, "ids"), pa.string()),
            "model": pa.array(_repeat(recs, "m"), pa.string()),
            "label": pa.array(_concat(recs, "labels"), pa.float64()),
            "at": pa.array(_repeat(recs, "at"), pa.int64()).cast(TS),
            "source": pa.array(_repeat(recs, "src"), pa.string()),
        }
    )
