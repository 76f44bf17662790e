"""The prediction log: WAL records -> batched, exactly-once appends to ``predictions/<model>``.

Requests write their records to the write-ahead log (``core.serving.wal``) before they answer.
A background thread seals the active segment every ``flush_interval_s``, turns each sealed
segment into one Arrow table per target table (``predictions/<model>``, ``feedback``) and appends
each with one commit whose metadata carries ``wal_segment = <slot id>/<segment>``; only then is
the segment deleted. Segment names are unique across process lifetimes (``core.serving.wal``), so
a segment whose fate is unknown (left by a killed process, or an append that raised after maybe
committing) is checked against exactly its own marker in the table history first: each record
reaches the lake exactly once.

Failures never stop the writer silently:

- The lake is unreachable (``LakeUnavailableError``, a lost commit race, an I/O error): the
  segments pile up on local disk (``backlog_bytes``) and are retried with back-off until it
  returns; ``/ready`` names the error and, past ``wal_max_bytes``, answers 503.
- A segment cannot be committed for a reason of its own (it does not fit the table, it does not
  decode, it belongs to another lake, or any unexpected error): later segments are still
  committed; ``/ready`` is unready while it fails, naming the segment and the error; after
  ``dead_letter_after`` attempts (at once for another lake's segment) it is moved to
  ``<wal_dir>/dead-letter/`` with a ``.json`` note of the error, and a ``prediction_log``
  alert is opened. ``lakeops serve status`` lists dead letters and ``lakeops serve replay``
  commits them after a fix (still exactly once). A segment with an unreadable frame (a bad
  checksum) has its readable records committed and a copy kept as a dead letter.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core import registry
from core.catalog import FEATURES_COLUMN, PASSTHROUGH_COLUMN, TS, prediction_table
from core.errors import CommitConflictError, LakeopsError, LakeUnavailableError, SchemaMismatchError
from core.ids import utcnow
from core.lake import Lake, TableParts
from core.serving.schemas import passthrough_type, prediction_schema
from core.serving.wal import PredictionRecord, Slot, WriteAheadLog, scan_segment, segments
from core.signature import Signature

__all__ = [
    "DEAD_LETTER",
    "FEEDBACK_TABLE",
    "DeadLetter",
    "ForeignSegmentError",
    "PredictionLog",
    "dead_letters",
    "discard_dead_letter",
    "prediction_table",
]

_log = logging.getLogger("lakeops.serving")
FEEDBACK_TABLE = "feedback"
DEAD_LETTER = "dead-letter"
_US_PER_DAY = 86_400_000_000
_HISTORY_LIMIT = 5_000
_UNIQUE = ("prediction_id", "at", "score", "latency_ms")  # no Parquet dictionary for these
# Errors that say the lake (not the segment) is the problem: retry, never dead-letter.
_TRANSIENT = (LakeUnavailableError, CommitConflictError, OSError)


class ForeignSegmentError(LakeopsError):
    """A WAL segment written for another lake (its header names another lake id)."""


@dataclass(frozen=True)
class DeadLetter:
    """A segment moved aside because it could not be committed, with its note."""

    path: Path
    slot_id: str
    segment: str
    error: str
    kind: str
    attempts: int
    at: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``/ready``, ``lakeops serve status``)."""
        return {
            "path": str(self.path), "slot_id": self.slot_id, "segment": self.segment, "error": self.error,
            "kind": self.kind, "attempts": self.attempts, "at": self.at, "bytes": self.bytes,
        }


def dead_letters(wal_root: Path) -> list[DeadLetter]:
    """The dead-letter segments under a WAL folder (``<wal_root>/dead-letter``), oldest first."""
    out = []
    folder = wal_root / DEAD_LETTER
    for note in sorted(folder.glob("*.json")):
        seg = note.with_suffix(".wal")
        try:
            meta = json.loads(note.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        out.append(
            DeadLetter(
                seg, str(meta.get("slot_id", "")), str(meta.get("segment", seg.name)), str(meta.get("error", "")),
                str(meta.get("kind", "")), int(meta.get("attempts", 0)), str(meta.get("at", "")),
                seg.stat().st_size if seg.exists() else 0,
            )
        )
    return out


class PredictionLog:
    """Moves sealed WAL segments into the lake in a background thread.

    Args:
        lake: the lake to append to.
        wal: this worker's write-ahead log.
        interval_s: seconds between flushes.
        actor: recorded in commit metadata.
        features_for: returns the signature of a model (for a new table's schema), or None.
        dead_letter_after: attempts before a segment that fails for a reason of its own raises
            the alert and, once a later segment committed, is moved to the dead-letter folder.
        alert: called with ``(message, evidence)`` to open the ``prediction_log`` alert, and
            with ``(None, evidence)`` to resolve it (best effort: the writer goes on either way).
    """

    def __init__(
        self,
        lake: Lake,
        wal: WriteAheadLog,
        *,
        interval_s: float,
        actor: str,
        features_for: Callable[[str], Signature | None] = lambda _m: None,
        dead_letter_after: int = 3,
        alert: Callable[[str | None, dict[str, Any]], None] | None = None,
    ) -> None:
        self.lake = lake
        self.wal = wal
        self.interval_s = interval_s
        self.actor = actor
        self.features_for = features_for
        self.dead_letter_after = max(1, dead_letter_after)
        self.alert = alert
        self._alert_open = False
        self._last_commit = 0.0  # time.monotonic() of the last segment committed
        self.lake_ok = True
        self.last_error: str | None = None
        self.rows_committed = 0
        self.commits = 0
        self.dead_lettered = 0
        self.failing: dict[str, dict[str, Any]] = {}  # segment name -> attempts, error, since
        # left by an earlier process (``wal`` is None for ``replay``, which runs without a server)
        self._uncertain: set[Path] = set(segments(wal.slot.path)) if wal is not None else set()
        self._root = wal.slot.path.parent if wal is not None else None
        self._schemas: dict[str, pa.Schema] = {}
        self._lake_id: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lakeops-predlog", daemon=True)

    @property
    def wal_root(self) -> Path:
        """The WAL folder holding this worker's slot (and the dead-letter folder)."""
        assert self._root is not None
        return self._root

    @classmethod
    def offline(cls, lake: Lake, wal_root: Path, *, actor: str) -> PredictionLog:
        """A writer with no live WAL, to replay a WAL folder's leftovers (``lakeops serve replay``)."""
        log = cls(lake, None, interval_s=1.0, actor=actor)  # type: ignore[arg-type]
        log._root = wal_root
        return log

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
            except _TRANSIENT as exc:
                self.lake_ok, self.last_error = False, _one_line(exc)
                _log.warning("prediction log: lake append failed, will retry: %s", self.last_error)
                backoff = min(max(backoff * 2, 0.5), 10.0)
            except Exception as exc:  # noqa: BLE001 - the writer thread must never die
                self.last_error = f"{type(exc).__name__}: {_one_line(exc)}"
                _log.exception("prediction log: flush failed, will retry")
                backoff = min(max(backoff * 2, 0.5), 10.0)
            if stopping:
                return

    def flush(self) -> int:
        """Seal the active segment and append every sealed segment; return rows committed.

        A segment that fails for a reason of its own does not stop the others (see the module
        docstring); an error that says the lake is unreachable ends the round (raised).
        """
        assert self.wal is not None
        self.wal.seal()
        active = self.wal._active
        total = 0
        for seg in segments(self.wal.slot.path):
            if seg == active:
                continue
            total += self._attempt(seg, self.wal.slot, forget=self.wal.forget)
        self._report()
        return total

    def _report(self) -> None:
        """Open the ``prediction_log`` alert for a stuck segment; resolve it once all is well."""
        if self.alert is None:
            return
        stuck = {k: v for k, v in self.failing.items() if v["attempts"] >= self.dead_letter_after}
        letters = dead_letters(self.wal_root)
        try:
            if (stuck or letters) and not self._alert_open:
                first = next(iter(stuck.items()), None)
                if first is not None:
                    what = f"cannot commit WAL segment {first[0]} ({first[1]['attempts']} attempts): {first[1]['error']}"
                else:
                    what = f"moved WAL segment {letters[0].segment} to {letters[0].path} ({letters[0].kind}): {letters[0].error}"
                self.alert(
                    f"the prediction log {what}; acknowledged predictions wait on local disk "
                    "(lakeops serve status; lakeops serve replay after a fix)",
                    {"failing": stuck, "dead_letters": [d.to_dict() for d in letters], "wal": str(self.wal_root)},
                )
                self._alert_open = True
            elif self._alert_open and not stuck and not letters and not self.failing:
                self.alert(None, {"wal": str(self.wal_root)})
                self._alert_open = False
        except Exception:  # noqa: BLE001 - the lake may be what is failing; /ready still says it
            _log.exception("prediction log: could not write the prediction_log alert")

    def _attempt(self, seg: Path, slot: Slot, *, forget: Callable[[Path], None] | None = None) -> int:
        """Commit one segment; on a failure of its own count it, and dead-letter it when due."""
        try:
            rows = self.commit_segment(seg, slot, forget=forget)
        except _TRANSIENT:
            # The lake, not the segment: the backlog absorbs it (``/ready`` turns 503 past
            # ``wal_max_bytes``); taking every replica out of rotation for a blip would be worse.
            self._uncertain.add(seg)
            raise
        except Exception as exc:  # noqa: BLE001 - any error of this segment: counted, then dead-lettered
            info = self._note_failure(seg, exc)
            foreign = isinstance(exc, ForeignSegmentError)
            _log.error("prediction log: segment %s cannot be committed (attempt %d): %s", seg.name, info["attempts"], info["error"])
            proven = self._last_commit > info["first"]  # the lake took another segment meanwhile
            if foreign or (info["attempts"] >= self.dead_letter_after and proven):
                self._to_dead_letter(seg, slot, info, kind="foreign" if foreign else "uncommittable", forget=forget)
            return 0
        self.failing.pop(seg.name, None)
        self._last_commit = time.monotonic()
        return rows

    def _note_failure(self, seg: Path, exc: BaseException) -> dict[str, Any]:
        self._uncertain.add(seg)  # the commit of one of its tables may have landed before the error
        info = self.failing.setdefault(
            seg.name, {"attempts": 0, "since": utcnow().isoformat(timespec="seconds"), "first": time.monotonic()}
        )
        info["attempts"] += 1
        info["error"] = f"{type(exc).__name__}: {_one_line(exc)}"
        return info

    def _to_dead_letter(
        self, seg: Path, slot: Slot, info: dict[str, Any], *, kind: str, forget: Callable[[Path], None] | None,
        copy: bool = False,
    ) -> DeadLetter:
        """Move (or, for a partly committed segment, copy) ``seg`` to the dead-letter folder with a note."""
        folder = self.wal_root / DEAD_LETTER
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{slot.id}--{seg.name}"
        note = {
            "slot_id": slot.id, "segment": seg.name, "error": info.get("error", ""), "kind": kind,
            "attempts": info.get("attempts", 0), "since": info.get("since"), "at": utcnow().isoformat(timespec="seconds"),
            "lake_id": self._lake(), "how_to_replay": "fix the cause, then: lakeops serve replay",
        }
        target.with_suffix(".json").write_text(json.dumps(note, indent=1), encoding="utf-8")
        size = seg.stat().st_size
        if copy:
            shutil.copyfile(seg, target)
            (forget or (lambda p: p.unlink(missing_ok=True)))(seg)
        else:
            seg.replace(target)
            if forget is not None and self.wal is not None:  # this worker's segment: it leaves the backlog
                self.wal.sealed_bytes = max(0, self.wal.sealed_bytes - size)
        self.failing.pop(seg.name, None)
        self._uncertain.discard(seg)
        self.dead_lettered += 1
        letter = DeadLetter(target, slot.id, seg.name, note["error"], kind, int(note["attempts"]), note["at"], size)
        _log.error("prediction log: segment %s moved to %s: %s", seg.name, target, note["error"])
        return letter

    def _lake(self) -> str | None:
        if self._lake_id is None:
            try:
                self._lake_id = self.lake.lake_id
            except LakeopsError:
                return None
        return self._lake_id

    def commit_segment(self, seg: Path, slot: Slot, *, forget: Callable[[Path], None] | None = None) -> int:
        """Append one sealed segment to the lake exactly once, then delete it.

        Raises:
            ForeignSegmentError: the segment was written for another lake.
            LakeopsError, OSError, pyarrow errors: the append failed (see ``flush``).
        """
        marker = f"{slot.id}/{seg.name}"
        mine = self._lake()
        with _gc_paused():
            scan = scan_segment(seg)
            owner = (scan.header or {}).get("lake")
            if owner and mine and owner != mine:
                raise ForeignSegmentError(f"segment {seg.name} belongs to lake {owner}, not to this lake ({mine})")
            tables = _tables(scan.records, self._schema, self._header_of)
        rows = 0
        for name, table in tables.items():
            if seg in self._uncertain and self._committed(name, marker, seg):
                continue
            rows += self._append(name, table, marker)
        if scan.problem == "corrupt":
            # The readable records are in the lake; keep the whole file for inspection.
            info = {"attempts": 1, "error": f"unreadable from byte {scan.good_bytes} of {scan.size}: {scan.detail}; "
                    f"the {len(scan.records)} records before it were committed"}
            self._to_dead_letter(seg, slot, info, kind="corrupt", forget=forget, copy=True)
        else:
            self._uncertain.discard(seg)
            (forget or (lambda p: p.unlink()))(seg)
        self.rows_committed += rows
        return rows

    def _append(self, name: str, table: pa.Table | TableParts, marker: str) -> int:
        is_pred = name != FEEDBACK_TABLE
        meta = {"actor": self.actor, "source": "serving", "wal_segment": marker}
        if not is_pred:  # feedback gained columns (key, key_value): merge them into older tables
            self.lake.append(name, table, metadata=meta, unique_columns=("prediction_id",), merge_schema=True)
            self.commits += 1
            return table.num_rows
        stored = self._stored_schema(name)
        merge = False
        if stored is None:
            schema = table.schema
        elif FEATURES_COLUMN not in stored.names:
            whole = table.read_all() if isinstance(table, TableParts) else table
            table, schema, merge = _as_legacy(whole, stored, name)
        else:
            schema, merge = _merged(stored, table.schema)
        self.lake.append(
            name, table, metadata=meta, schema=schema, partition_by=("day",), unique_columns=_UNIQUE,
            merge_schema=merge,
        )
        if merge or stored is None:
            self._schemas.pop(name, None)
        self.commits += 1
        return table.num_rows

    def _stored_schema(self, name: str) -> pa.Schema | None:
        if name not in self._schemas:
            if not self.lake.exists(name):
                return None
            self._schemas[name] = self.lake.schema(name)
        return self._schemas[name]

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
        """A new table's schema from the model's signature (None: build it from the headers)."""
        sig = self.features_for(model)
        if sig is None:
            return None
        return prediction_schema(sig.features, sig.passthrough)

    def _header_of(self, model: str, version: int) -> dict[str, Any]:
        """A model version's WAL header rebuilt from the registry (for a segment that lacks it)."""
        sig = registry.get_version(model, version, lake=self.lake).signature
        return {
            "fn": sig.names,
            "lv": {f.name: list(f.levels) for f in sig.features if f.categorical},
            "thr": sig.threshold if sig.binary else None,
            "pt": [{"name": p.name, "type": p.type} for p in sig.passthrough],
        }

    def replay_orphans(self, slots: list[Slot]) -> int:
        """Append the segments of slots no live worker holds (each checked for a marker first)."""
        total = 0
        for slot in slots:
            for seg in segments(slot.path):
                self._uncertain.add(seg)
                try:
                    total += self._attempt(seg, slot)
                finally:
                    self.failing.pop(seg.name, None)
        return total

    def replay_dead_letters(self, wal_root: Path | None = None, *, only: str | None = None) -> tuple[int, list[str]]:
        """Commit dead-letter segments (after their cause was fixed), exactly once.

        Args:
            wal_root: the WAL folder whose ``dead-letter/`` to replay (default: this worker's).
            only: replay only the dead letter whose file name or segment name is this.

        Returns:
            ``(rows committed, errors)``: a segment that still fails stays a dead letter and its
            error is returned; a ``corrupt`` one is never replayed (its readable records are
            already in the lake).
        """
        total, errors = 0, []
        for letter in dead_letters(wal_root or self.wal_root):
            if only and only not in (letter.path.name, letter.segment):
                continue
            if not letter.path.exists():
                continue
            if letter.kind == "corrupt":
                errors.append(f"{letter.path.name}: its readable records are already in the lake and the rest "
                              "cannot be read; inspect it, then discard it")
                continue
            staged = letter.path.parent / "replay" / letter.segment  # its own name: its own commit marker
            staged.parent.mkdir(exist_ok=True)
            letter.path.replace(staged)
            self._uncertain.add(staged)
            try:
                total += self.commit_segment(staged, _FakeSlot(letter.slot_id))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - reported per dead letter, which stays
                if staged.exists():
                    staged.replace(letter.path)
                errors.append(f"{letter.path.name}: {type(exc).__name__}: {_one_line(exc)}")
                continue
            letter.path.with_suffix(".json").unlink(missing_ok=True)
        return total, errors


def discard_dead_letter(letter: DeadLetter) -> None:
    """Delete a dead letter and its note (its rows are given up: say why where you call this)."""
    letter.path.unlink(missing_ok=True)
    letter.path.with_suffix(".json").unlink(missing_ok=True)


class _FakeSlot:
    """A slot id without a folder or lock (to rebuild a dead letter's commit marker)."""

    def __init__(self, slot_id: str) -> None:
        self.id = slot_id


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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


def _merged(stored: pa.Schema, new: pa.Schema) -> tuple[pa.Schema, bool]:
    """``stored`` with the struct fields (features, pass-through) ``new`` adds; True when it grew.

    A model version that adds features (or pass-through fields) grows the structs; fields of
    older versions stay (null in newer rows). A field whose type changed keeps the stored type
    (the append then says which field does not fit).
    """
    fields = list(stored)
    grew = False
    for f in new:  # a column of a later release (e.g. ``role``) joins the stored table as nullable
        if stored.get_field_index(f.name) < 0 and f.name not in (FEATURES_COLUMN, PASSTHROUGH_COLUMN):
            fields.append(pa.field(f.name, f.type, nullable=True))
            grew = True
    for name in (FEATURES_COLUMN, PASSTHROUGH_COLUMN):
        if new.get_field_index(name) < 0:
            continue
        add = new.field(name).type
        idx = stored.get_field_index(name)
        if idx < 0:
            fields.append(pa.field(name, add))
            grew = True
            continue
        have = stored.field(name).type
        known = {have.field(i).name for i in range(have.num_fields)}
        extra = [add.field(i) for i in range(add.num_fields) if add.field(i).name not in known]
        if extra:
            fields[idx] = pa.field(name, pa.struct([*(have.field(i) for i in range(have.num_fields)), *extra]))
            grew = True
    return pa.schema(fields), grew


def _as_legacy(table: pa.Table, stored: pa.Schema, name: str) -> tuple[pa.Table, pa.Schema, bool]:
    """A new-layout table flattened into a table of an earlier release (features as top-level columns).

    Raises:
        SchemaMismatchError: a feature is named like one of that table's own columns.
    """
    own = ("prediction_id", "at", "day", "model_version", "score", "label", "latency_ms", "role")
    cols: dict[str, pa.Array] = {}
    for c in table.column_names:
        if c == FEATURES_COLUMN or c == PASSTHROUGH_COLUMN:
            continue
        cols["label" if c == "predicted_label" else c] = table.column(c)
    feats = table.column(FEATURES_COLUMN).combine_chunks()
    for i in range(feats.type.num_fields):
        f = feats.type.field(i)
        if f.name in own:
            raise SchemaMismatchError(
                f"{name} was created by an earlier release with features as top-level columns, and feature "
                f"{f.name!r} collides with its own column {f.name!r}; move the old table aside "
                "(or rename the feature) so the log is created with features in their own namespace"
            )
        cols[f.name] = feats.field(i)
    flat = pa.table(cols)
    fields = list(stored)
    grew = False
    for f in flat.schema:
        if stored.get_field_index(f.name) < 0:
            fields.append(f)
            grew = True
    return flat, pa.schema(fields), grew


def _tables(
    records: list[Any],
    schema_of: Callable[[str], pa.Schema | None],
    header_of: Callable[[str, int], dict[str, Any]] | None = None,
) -> dict[str, pa.Table | TableParts]:
    """Group a segment's records into one Arrow table (or ``TableParts``) per lake table (the new layout).

    Args:
        records: the segment's decoded records, in order (see ``core.serving.wal``).
        schema_of: a new prediction table's schema from the model's signature, or None.
        header_of: a model version's header when the segment lacks it (never expected: the WAL
            writes it first), else the records cannot be decoded.
    """
    preds, legacy, headers, feedback = _grouped(records)
    out: dict[str, pa.Table | TableParts] = {}
    for model in dict.fromkeys([*preds, *legacy]):
        parts = []
        if model in preds:
            recs = preds[model]
            hdrs: dict[int, dict[str, Any]] = {}
            for v in {r.version for r in recs}:
                hdr = headers.get((model, v))
                if hdr is None:
                    if header_of is None:
                        raise LakeopsError(f"WAL segment has predictions of {model} v{v} without its header")
                    hdr = header_of(model, v)
                hdrs[v] = hdr
            if model not in legacy:
                out[prediction_table(model)] = _q_parts(recs, hdrs, schema_of(model))
                continue
            parts.append(_q_table(recs, hdrs))
        if model in legacy:
            parts.append(_prediction_table(legacy[model]))
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")
        schema = schema_of(model)
        if schema is not None:
            schema, _ = _merged(schema, table.schema)
            table = _conform_structs(table, schema)
        out[prediction_table(model)] = table
    if feedback:
        out[FEEDBACK_TABLE] = _feedback_table(feedback)
    return out


_PART_ROWS = 65_536  # rows per part of a flush (see TableParts)


def _q_parts(recs: list[PredictionRecord], headers: dict[int, dict[str, Any]],
             schema: pa.Schema | None) -> pa.Table | TableParts:
    """One model's ``q`` records as a table, or as ``TableParts`` of ~``_PART_ROWS`` rows each
    (built one at a time as the lake writes them: bounded memory, reused, few page faults).

    Every part has the same schema: a part's columns and types follow from ``headers`` (all
    the versions in the segment), never from the rows it holds.
    """
    counts = np.fromiter(map(_N, recs), dtype=np.int64, count=len(recs))
    total = int(counts.sum())
    # record boundaries closest to each multiple of _PART_ROWS
    cuts = np.unique(np.searchsorted(np.cumsum(counts), np.arange(_PART_ROWS, total, _PART_ROWS), side="left") + 1)
    bounds = [0, *[int(c) for c in cuts if 0 < c < len(recs)], len(recs)]

    def build(i: int) -> pa.Table:
        with _gc_paused():
            return _q_table(recs[bounds[i] : bounds[i + 1]], headers)

    first = build(0)
    target = first.schema if schema is None else _merged(schema, first.schema)[0]

    def fit(t: pa.Table) -> pa.Table:
        return t if t.schema.equals(target) else _conform_structs(t, target)

    first = fit(first)
    if len(bounds) == 2:
        return first
    return TableParts(first, lambda: (fit(build(i)) for i in range(1, len(bounds) - 1)), total)


def _grouped(records: list[Any]) -> tuple[dict[str, list[PredictionRecord]], dict[str, list[dict[str, Any]]],
                                          dict[tuple[str, int], dict[str, Any]], list[dict[str, Any]]]:
    """A segment's records by kind: (prediction records by model, ``p`` records of an earlier
    release by model, version headers by (model, version), feedback records)."""
    preds: dict[str, list[PredictionRecord]] = {}
    legacy: dict[str, list[dict[str, Any]]] = {}
    headers: dict[tuple[str, int], dict[str, Any]] = {}
    feedback: list[dict[str, Any]] = []
    for r in records:
        if isinstance(r, PredictionRecord):
            preds.setdefault(r.model, []).append(r)
            continue
        k = r.get("k")
        if k == "h":
            headers[(r["m"], r["v"])] = r
        elif k == "p":
            legacy.setdefault(r["m"], []).append(r)
        elif k == "f":
            feedback.append(r)
    return preds, legacy, headers, feedback


def _conform_structs(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with its struct columns widened to ``schema``'s (missing fields null)."""
    cols = {}
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols[f.name] = col if col.type.equals(f.type) else col.cast(f.type)
        else:
            cols[f.name] = pa.nulls(table.num_rows, f.type)
    return pa.table(cols, schema=schema)


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


def _struct(arrays: dict[str, pa.Array], total: int) -> pa.StructArray:
    if not arrays:
        return pa.StructArray.from_arrays([pa.nulls(total, pa.null())], names=["__none"]).cast(pa.struct([]))
    return pa.StructArray.from_arrays(list(arrays.values()), names=list(arrays))


_N, _VERSION, _AT, _LATENCY = attrgetter("n"), attrgetter("version"), attrgetter("at"), attrgetter("latency_ms")
_IDS, _SCORES, _X = attrgetter("ids"), attrgetter("scores"), attrgetter("X")


def _q_table(recs: list[PredictionRecord], headers: dict[int, dict[str, Any]]) -> pa.Table:
    """Build one model's table from its ``q`` records: numpy over the raw bytes, no per-row Python.

    Per-record work is a handful of C-level ``map``/``join`` passes; per-row work is numpy.
    """
    r_count = len(recs)
    counts = np.fromiter(map(_N, recs), dtype=np.int64, count=r_count)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    versions = np.fromiter(map(_VERSION, recs), dtype=np.int64, count=r_count)
    single = len(headers) == 1
    at = np.repeat(np.fromiter(map(_AT, recs), dtype=np.int64, count=r_count), counts)
    scores = np.frombuffer(b"".join(map(_SCORES, recs)), dtype=np.float64)
    thr_of = {v: (np.nan if h.get("thr") is None else float(h["thr"])) for v, h in headers.items()}
    if single:
        thr = np.full(total, next(iter(thr_of.values())))
    else:
        thr = np.repeat(np.array([thr_of[v] for v in versions.tolist()], dtype=np.float64), counts)
    label = np.where(np.isnan(thr), -1, scores >= thr).astype(np.int64)
    ids = b"".join(map(_IDS, recs))
    if len(ids) != _ID_LEN * total:
        raise LakeopsError("WAL prediction record with malformed ids")
    offsets = np.arange(0, _ID_LEN * (total + 1), _ID_LEN, dtype=np.int32)
    cols: dict[str, pa.Array] = {
        "prediction_id": pa.StringArray.from_buffers(total, pa.py_buffer(offsets), pa.py_buffer(ids)),
        "at": pa.array(at, pa.int64()).cast(TS),
        "day": pa.array((at // _US_PER_DAY).astype(np.int32), pa.int32()).cast(pa.date32()),
        "model_version": pa.array(np.repeat(versions, counts)),
        "score": pa.array(scores, pa.float64()),
        "predicted_label": pa.array(label, pa.int64(), mask=label < 0),
        "latency_ms": pa.array(np.repeat(np.fromiter(map(_LATENCY, recs), np.float64, r_count), counts)),
        "role": _roles(recs, counts),
    }
    names_of = {v: list(h["fn"]) for v, h in headers.items()}
    names = list(dict.fromkeys(n for v in sorted(names_of, reverse=True) for n in names_of[v]))
    if all(fn == names for fn in names_of.values()):
        X = np.frombuffer(b"".join(map(_X, recs)), dtype=np.float64).reshape(total, len(names))
        XT = _columns_of(X)
        matrix = {n: XT[j] for j, n in enumerate(names)}
    else:  # versions with different features in one flush: align by name, NaN where absent
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for r in recs:
            fn = names_of[r.version]
            m = np.frombuffer(r.X, dtype=np.float64).reshape(r.n, len(fn))
            for n in names:
                parts[n].append(m[:, fn.index(n)] if n in fn else np.full(r.n, np.nan))
        matrix = {n: np.concatenate(p) for n, p in parts.items()}
    unknown = [(i, r.unknown) for i, r in enumerate(recs) if r.unknown]
    feats: dict[str, pa.Array] = {}
    for name in names:
        col = matrix[name]
        levels_of = {v: h["lv"][name] for v, h in headers.items() if name in h["lv"]}
        if not levels_of:
            nan = np.isnan(col)
            feats[name] = pa.array(col, pa.float64(), mask=nan if nan.any() else None)  # NaN (missing) -> null
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
        hits = [(starts[i], unk[name]) for i, unk in unknown if unk.get(name)]
        if hits:  # unseen strings: appended to the dictionary once each, by C-level passes
            pairs = list(chain.from_iterable(p for _, p in hits))
            rows = np.repeat(np.array([s for s, _ in hits], dtype=np.int64), [len(p) for _, p in hits])
            rows += np.fromiter(map(itemgetter(0), pairs), dtype=np.int64, count=len(pairs))
            values = list(map(itemgetter(1), pairs))
            new = {v: len(dictionary) + k for k, v in enumerate(dict.fromkeys(values))}
            index[rows] = np.fromiter(map(new.__getitem__, values), dtype=np.int64, count=len(values))
            dictionary += list(new)
        feats[name] = _strings(dictionary, index)
    cols[FEATURES_COLUMN] = _struct(feats, total)
    pt_fields = list(dict.fromkeys((p["name"], p["type"]) for v in sorted(headers) for p in headers[v].get("pt") or ()))
    if pt_fields:
        cols[PASSTHROUGH_COLUMN] = _passthrough(recs, counts, pt_fields, total)
    return pa.table(cols)


_ROLES = ("champion", "challenger", "shadow", "pinned")


def _roles(recs: list[PredictionRecord], counts: np.ndarray) -> pa.Array:
    """Each row's role (``champion`` for records of earlier releases, which had none)."""
    codes = np.fromiter((_ROLES.index(r.role) if r.role in _ROLES else 0 for r in recs),
                        dtype=np.int32, count=len(recs))
    return pa.array(list(_ROLES), pa.string()).take(pa.array(np.repeat(codes, counts), pa.int32()))


def _passthrough(recs: list[PredictionRecord], counts: np.ndarray, fields: list[tuple[str, str]],
                 total: int) -> pa.StructArray:
    """The pass-through struct: each record's ``{field: [values]}``, nulls where absent."""
    arrays: dict[str, pa.Array] = {}
    for name, kind in fields:
        values: list[Any] = []
        for r, n in zip(recs, counts.tolist(), strict=True):
            got = r.passthrough.get(name) if r.passthrough else None
            values += got if got is not None else [None] * n
        typ = passthrough_type(kind)
        if kind == "datetime":  # logged as microseconds since the epoch
            arrays[name] = pa.array(values, pa.int64()).cast(typ)
        elif kind == "date":  # logged as days since the epoch
            arrays[name] = pa.array(values, pa.int32()).cast(typ)
        else:
            arrays[name] = pa.array(values, typ)
    return _struct(arrays, total)


def _repeat(recs: list[dict[str, Any]], key: str) -> list[Any]:
    """Each (feedback) record's ``key`` value once per row of the record."""
    out: list[Any] = []
    for r in recs:
        out += [r[key]] * len(r["ids"])
    return out


def _concat(recs: list[dict[str, Any]], key: str) -> list[Any]:
    out: list[Any] = []
    for r in recs:
        out += r[key]
    return out


_ID_LEN = 36


def _ids_array(recs: list[dict[str, Any]], total: int) -> pa.Array:
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


def _legacy_categorical(recs: list[dict[str, Any]], counts: np.ndarray, name: str, codes: np.ndarray) -> pa.Array:
    """One categorical column of earlier-format ``p`` records (levels + codes, or strings)."""
    dictionary: list[Any] = []
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
    return _strings(dictionary, index)


def _prediction_table(recs: list[dict[str, Any]]) -> pa.Table:
    """Build one table from earlier-format ``p`` records (still replayed, no longer written)."""
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
        "predicted_label": pa.array(label, pa.int64(), mask=label < 0),
        "latency_ms": pa.array(np.repeat(np.array([r["lat"] for r in recs], dtype=np.float64), counts)),
        "role": pa.array(["champion"] * total, pa.string()),
    }
    names = list(dict.fromkeys(x for r in recs for x in r["fn"]))
    matrix: dict[str, np.ndarray] = {}
    for n in names:
        parts = []
        for r, k in zip(recs, counts.tolist(), strict=True):
            m = np.frombuffer(r["X"], dtype=np.float64).reshape(k, len(r["fn"]))
            parts.append(m[:, r["fn"].index(n)] if n in r["fn"] else np.full(k, np.nan))
        matrix[n] = np.concatenate(parts)
    categorical = set().union(*[r.get("cat") or r.get("lv") or () for r in recs])
    feats: dict[str, pa.Array] = {}
    for name in names:
        if name in categorical:
            feats[name] = _legacy_categorical(recs, counts, name, matrix[name])
        else:
            col = matrix[name]
            nan = np.isnan(col)
            feats[name] = pa.array(col, pa.float64(), mask=nan if nan.any() else None)
    cols[FEATURES_COLUMN] = _struct(feats, total)
    return pa.table(cols)


def _feedback_table(recs: list[dict[str, Any]]) -> pa.Table:
    cols = {
        "prediction_id": pa.array(_concat(recs, "ids"), pa.string()),
        "model": pa.array(_repeat(recs, "m"), pa.string()),
        "label": pa.array(_concat(recs, "labels"), pa.float64()),
        "at": pa.array(_repeat(recs, "at"), pa.int64()).cast(TS),
        "source": pa.array(_repeat(recs, "src"), pa.string()),
    }
    if any("kv" in r for r in recs):  # labels sent by the model's feedback key (an entity id)
        keys: list[Any] = []
        values: list[Any] = []
        for r in recs:
            n = len(r["ids"])
            keys += [r.get("key") if v is not None else None for v in (r.get("kv") or [None] * n)]
            values += r.get("kv") or [None] * n
        cols["key"] = pa.array(keys, pa.string())
        cols["key_value"] = pa.array(values, pa.string())
    return pa.table(cols)

