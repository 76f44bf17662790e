"""A local write-ahead log: segment files, inline writes or group-committed fsyncs, replay.

Layout of a WAL folder (one per host:port, see ``ServingConfig.wal_dir``)::

    <wal_dir>/w0/            a slot, owned by one worker process through an flock on ``lock``
        id                   the slot's random id (names its segments in commit metadata)
        seg-<epoch>-000001.wal  checksummed msgpack records; the newest is the active one
    <wal_dir>/w1/ ...        further workers (``lakeops serve --workers N``) claim further slots
    <wal_dir>/dead-letter/   segments that can never be committed, each with a ``.json`` note

A segment's name carries its writer's *epoch*: a UUIDv7 drawn when the ``WriteAheadLog`` is
opened, so a segment's identity (``<slot id>/<file name>``, the marker its lake commit carries)
is unique across process lifetimes. A counter that restarts with each process would let a new
segment look "already committed" when an earlier process committed one of the same name.

Two durability modes (``[serving] wal_sync``); in both, a response is sent only after its
records are in the active segment file:

- ``"write"`` (default): ``append`` writes the record with one ``write(2)`` on the calling
  (event-loop) thread before the request answers. The bytes are then in the kernel's page cache,
  so an acknowledged prediction survives the process being killed (SIGKILL, OOM, crash) and is
  replayed on restart. A background thread ``fdatasync``s the active segment every
  ``fsync_interval_s`` (default 0.2 s) when it changed, and every segment is fsynced when it is
  sealed, so a power cut or kernel crash loses at most the last ``fsync_interval_s`` of
  acknowledged predictions.
- ``"fsync"``: ``submit`` hands the record to a writer thread that appends everything submitted
  since its last write in one ``write`` + ``fdatasync`` (group commit) and then resolves every
  waiting request's future: acknowledged = on stable storage, survives a power cut too, at the
  price of one disk flush (~2 ms here) on every request's path.

``seal`` closes the active segment and opens a new one; sealed segments are read back by
``core.serving.predlog``.

A segment starts with the magic ``LKWAL\x02\n\x00`` and a segment-header record naming the lake
(``Lake.lake_id``), the slot and the epoch, so replay refuses a segment of another lake. Every
record is framed as a 4-byte little-endian length, a 4-byte CRC-32 of the payload, then the
msgpack payload. A write that fails (a full disk) is truncated back to the last whole frame
before the error reaches the request, which answers 503; the reader stops at the first frame
that is cut short (a crash mid-write: never acknowledged) or fails its checksum, and says so.
Segments written before this format (no magic: length-prefixed frames without a checksum) are
still read.

Records:

- ``{"k": "s", "lake", "slot", "epoch", "fmt"}``: the segment header (first record).

- ``{"k": "h", "m", "v", "fn", "lv", "thr"}``: a model version's header (feature names,
  categorical levels, threshold), written once per segment before that version's first
  prediction record in it, so every segment can be read on its own.
- ``["q", model, version, at_us, latency_ms, n, ids, scores, X, unknown, passthrough, role]``: one
  predict request's rows, a ``PredictionRecord`` (a msgpack array: the writer and every reader
  share that one definition; records of earlier releases without the last two or three
  elements still decode, with their defaults).
- ``{"k": "f", ...}``: a feedback batch; ``{"k": "p", ...}``: the previous, self-describing
  prediction record (still read, no longer written).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import uuid
import zlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from core.errors import ConfigError
from core.ids import new_id

__all__ = [
    "MAGIC",
    "PredictionRecord",
    "SegmentScan",
    "Slot",
    "WriteAheadLog",
    "claim_slot",
    "frame",
    "orphan_slots",
    "read_segment",
    "scan_segment",
    "segments",
]

_MAX_SLOTS = 64
MAGIC = b"LKWAL\x02\n\x00"
_crc32 = zlib.crc32
Header = tuple[Hashable, bytes]  # (key, msgpack header record), see WriteAheadLog.append
_log = logging.getLogger("lakeops.serving")


class PredictionRecord(msgspec.Struct, array_like=True, tag="q", gc=False):
    """One predict request's rows in the WAL: a msgpack array ``["q", model, version, ...]``.

    An array, not a map: cheap to write on the request's path and to turn into Arrow later. The
    writer (``core.serving.service``) and the reader (``core.serving.predlog``) share this one
    definition; earlier releases wrote the same array as a plain list, 10 to 12 elements long
    (``passthrough`` and ``role`` came later), which decodes into this with the defaults.

    Attributes:
        model: the model name.
        version: the model version that scored the rows (its header record names the features).
        at: when, microseconds since the epoch (UTC).
        latency_ms: the request's time to score, per row group.
        n: the number of rows.
        ids: the prediction ids, ``36 * n`` ASCII bytes back to back.
        scores: ``n`` float64, raw bytes.
        X: the ``n x features`` float64 matrix, raw bytes, row-major (categorical columns as codes
            into the header's levels, NaN for missing).
        unknown: unseen categorical strings by feature, ``[(row, value), ...]``, or None.
        passthrough: pass-through fields by name, one value per row, or None.
        role: ``champion``, ``challenger``, ``shadow`` or ``pinned``.
    """

    model: str
    version: int
    at: int
    latency_ms: float
    n: int
    ids: bytes
    scores: bytes
    X: bytes
    unknown: dict[str, Any] | None = None
    passthrough: dict[str, Any] | None = None
    role: str = "champion"


class _PredictionView(PredictionRecord, tag="q", gc=False):
    """A ``PredictionRecord`` as read back: its raw byte fields are views into the segment's
    bytes (msgspec's zero-copy ``memoryview`` decoding), not copies. A flush decodes a whole
    segment at once; copying ~17 KB per 100-row request into fresh ``bytes`` objects made the
    decode cost ~4x more, mostly in page faults."""

    ids: memoryview  # type: ignore[assignment]
    scores: memoryview  # type: ignore[assignment]
    X: memoryview  # type: ignore[assignment]


_decoder = msgspec.msgpack.Decoder(_PredictionView | dict[str, Any])


class Slot:
    """A WAL slot folder held under an exclusive flock (released by ``close``)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        id_file = path / "id"
        if not id_file.exists():
            tmp = path / "id.tmp"
            tmp.write_text(uuid.uuid4().hex, encoding="utf-8")
            tmp.replace(id_file)
        self.id = id_file.read_text(encoding="utf-8").strip()

    def close(self) -> None:
        """Release the slot."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _try_lock(path: Path) -> Slot | None:
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return Slot(path, fd)


def claim_slot(root: Path) -> Slot:
    """Claim the first free slot ``w0``, ``w1`` ... under ``root`` (one per worker process).

    Raises:
        ConfigError: the folder cannot be created or every slot is taken.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(_MAX_SLOTS):
            slot = _try_lock(root / f"w{i}")
            if slot is not None:
                return slot
    except OSError as exc:
        raise ConfigError(f"[serving] wal_dir {root} is not usable: {exc.strerror or exc}") from exc
    raise ConfigError(f"[serving] wal_dir {root}: all {_MAX_SLOTS} slots are taken by running workers")


def orphan_slots(root: Path) -> Iterator[Slot]:
    """Yield (locked) slots under ``root`` that no live process holds, e.g. of a smaller restart."""
    for path in sorted(root.glob("w*")):
        if path.is_dir():
            slot = _try_lock(path)
            if slot is not None:
                yield slot


def segments(path: Path) -> list[Path]:
    """Return the segment files of a slot folder, oldest first."""
    return sorted(path.glob("seg-*.wal"))


def frame(record: bytes) -> bytes:
    """Frame one msgpack record: 4-byte little-endian length, 4-byte CRC-32, then the bytes."""
    return len(record).to_bytes(4, "little") + _crc32(record).to_bytes(4, "little") + record


@dataclass(frozen=True)
class SegmentScan:
    """What a segment holds: its records, its header, and whether every byte was readable.

    Attributes:
        records: the decoded records in order (maps, or ``PredictionRecord``), without the
            segment header.
        header: the segment header (``{"k": "s", "lake", "slot", "epoch"}``), or None for a
            segment of the earlier format.
        size: the file's size in bytes.
        good_bytes: bytes up to the end of the last whole, valid frame.
        problem: None when every byte was read; ``"torn"`` when the last frame is cut short
            (a crash during a write: that request was never answered); ``"corrupt"`` when a
            frame fails its checksum or does not decode (the bytes from ``good_bytes`` on are
            unreadable and must be kept for inspection).
        detail: a sentence saying what was found.
    """

    records: list[Any]
    header: dict[str, Any] | None
    size: int
    good_bytes: int
    problem: str | None = None
    detail: str = ""


def scan_segment(path: Path) -> SegmentScan:
    """Read a segment file (either format) and report how far it is readable."""
    data = memoryview(path.read_bytes())  # records are decoded from views: no copy per record
    size = len(data)
    decoder = _decoder
    out: list[Any] = []
    header: dict[str, Any] | None = None
    if bytes(data[: len(MAGIC)]) == MAGIC:
        pos = len(MAGIC)
        while pos < size:
            if pos + 8 > size:
                return SegmentScan(out, header, size, pos, "torn", f"a frame header is cut short at byte {pos}")
            n = int.from_bytes(data[pos : pos + 4], "little")
            end = pos + 8 + n
            if end > size:
                return SegmentScan(out, header, size, pos, "torn", f"a {n}-byte frame at byte {pos} is cut short")
            payload = data[pos + 8 : end]
            if _crc32(payload) != int.from_bytes(data[pos + 4 : pos + 8], "little"):
                return SegmentScan(out, header, size, pos, "corrupt", f"the frame at byte {pos} fails its checksum")
            try:
                rec = decoder.decode(payload)
            except msgspec.DecodeError as exc:
                return SegmentScan(out, header, size, pos, "corrupt", f"the frame at byte {pos} does not decode: {exc}")
            if header is None and not out and isinstance(rec, dict) and rec.get("k") == "s":
                header = rec
            else:
                out.append(rec)
            pos = end
        return SegmentScan(out, header, size, pos)
    pos = 0  # the earlier format: length-prefixed frames, no checksum, no header
    while pos + 4 <= size:
        n = int.from_bytes(data[pos : pos + 4], "little")
        end = pos + 4 + n
        if end > size:
            return SegmentScan(out, None, size, pos, "torn", f"a {n}-byte frame at byte {pos} is cut short")
        try:
            out.append(decoder.decode(data[pos + 4 : end]))
        except msgspec.DecodeError as exc:
            return SegmentScan(out, None, size, pos, "corrupt", f"the frame at byte {pos} does not decode: {exc}")
        pos = end
    if pos < size:
        return SegmentScan(out, None, size, pos, "torn", f"a frame header is cut short at byte {pos}")
    return SegmentScan(out, None, size, pos)


def read_segment(path: Path) -> list[Any]:
    """Decode a segment's records (maps, or ``PredictionRecord``), in order.

    Reading stops at the first frame that is cut short or fails its checksum (see
    ``scan_segment`` for what was left unread). The segment header is not returned.
    """
    return scan_segment(path).records


class WriteAheadLog:
    """The active segment of one slot, written inline (``sync=False``) or by a group-commit thread.

    Args:
        slot: the claimed slot folder.
        sync: fdatasync before acknowledging (``wal_sync = "fsync"``, group commit in a writer
            thread) or not (``"write"``: ``append`` writes inline, fsync in the background).
        fsync_interval_s: with ``sync=False``, seconds between background fdatasyncs of the
            active segment (None: only when a segment is sealed).
    """

    def __init__(
        self, slot: Slot, *, sync: bool = True, fsync_interval_s: float | None = 0.2, lake_id: str | None = None
    ) -> None:
        self.slot = slot
        self.sync = sync
        self.fsync_interval_s = fsync_interval_s
        self.lake_id = lake_id
        existing = segments(slot.path)
        # A fresh epoch per process lifetime: segment names (and the markers of their commits)
        # never repeat, even when an earlier process left the slot folder empty.
        self.epoch = new_id().replace("-", "")
        self._seq = 0
        self._broken = False  # a failed write could not be truncated away: roll to a new segment
        self._fd = -1
        self._active: Path | None = None
        self._active_bytes = 0
        self._dirty = False
        self._file_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[tuple[Header | None, bytes]] = []
        self._headers: set[Hashable] = set()  # header keys already in the active segment
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | threading.Event] = []
        self._closing = False
        self._stop = threading.Event()
        self.sealed_bytes = sum(p.stat().st_size for p in existing)
        self.records_written = 0
        self.fsyncs = 0
        self.error: OSError | None = None
        self._open_new()
        if sync:
            self._thread = threading.Thread(target=self._run, name="lakeops-wal", daemon=True)
        else:
            self._thread = threading.Thread(target=self._sync_loop, name="lakeops-wal-fsync", daemon=True)
        self._thread.start()

    @property
    def backlog_bytes(self) -> int:
        """Bytes written to the WAL and not yet appended to the lake."""
        return self.sealed_bytes + self._active_bytes

    def _open_new(self) -> None:
        self._seq += 1
        path = self.slot.path / f"seg-{self.epoch}-{self._seq:06d}.wal"
        head = MAGIC + frame(
            msgspec.msgpack.encode({"k": "s", "fmt": 2, "lake": self.lake_id, "slot": self.slot.id, "epoch": self.epoch})
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _write_all(fd, head)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._active, self._fd = path, fd
        self._base = len(head)  # bytes of an empty segment (magic + header)
        self._active_bytes = 0
        self._broken = False
        self._headers = set()

    def _with_headers(self, items: list[tuple[Header | None, bytes]]) -> tuple[bytes, list[Hashable]]:
        """Frame ``items``, each preceded by its header when the active segment lacks it (lock held)."""
        parts: list[bytes] = []
        added: list[Hashable] = []
        for header, record in items:
            if header is not None and header[0] not in self._headers and header[0] not in added:
                parts.append(frame(header[1]))
                added.append(header[0])
            parts.append(frame(record))
        return b"".join(parts), added

    def append(self, record: bytes, header: Header | None = None) -> None:
        """Write ``record`` to the active segment now (``sync=False``), in one ``write(2)``.

        Args:
            record: one msgpack record.
            header: ``(key, header record)``: the header record is written first when the
                active segment does not hold one with that key yet (a segment must be readable
                on its own: a prediction record refers to its model version's header).

        Raises:
            OSError: the file could not be written (also kept in ``error`` for ``/ready``).
        """
        with self._file_lock:
            if self._broken:
                self._roll()
            if header is None or header[0] in self._headers:
                data, added = frame(record), list[Hashable]()
            else:
                data, added = self._with_headers([(header, record)])
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                self.error = exc
                self._undo_partial()
                raise
            self._active_bytes += len(data)
            self._dirty = True
            self.records_written += 1
            self._headers.update(added)
        self.error = None

    def submit(self, record: bytes, header: Header | None = None) -> asyncio.Future[None] | None:
        """Make ``record`` durable per the mode; await the returned future when there is one.

        With ``sync=False`` the record is written before this returns (None is returned); with
        ``sync=True`` the future resolves once the record is written and fdatasynced.
        """
        if not self.sync:
            self.append(record, header)
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._pending.append((header, record))
            self._waiters.append((loop, fut))
            self._cond.notify()
        return fut

    def write(self, record: bytes, header: Header | None = None, timeout: float = 30.0) -> None:
        """Append ``record`` and block until it is durable per the mode (outside an event loop)."""
        if not self.sync:
            self.append(record, header)
            return
        done = threading.Event()
        with self._cond:
            self._pending.append((header, record))
            self._waiters.append(done)
            self._cond.notify()
        if not done.wait(timeout):
            raise OSError("the write-ahead log did not confirm the write in time")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = [], []
            err: OSError | None = None
            with self._file_lock:
                data, added = self._with_headers(batch)
                try:
                    if self._broken:
                        self._roll()
                    _write_all(self._fd, data)
                    os.fdatasync(self._fd)
                    self.fsyncs += 1
                    self._active_bytes += len(data)
                    self.records_written += len(batch)
                    self._headers.update(added)
                except OSError as exc:
                    err = exc
                    self._undo_partial()
            self.error = err
            _resolve(waiters, err)

    def _sync_loop(self) -> None:
        if self.fsync_interval_s is None:
            return
        while not self._stop.wait(self.fsync_interval_s):
            self.sync_now()

    def _undo_partial(self) -> None:
        """After a failed write (lock held): cut the segment back to its last whole frame.

        A short write (ENOSPC) leaves part of a frame at the end of the file; every later frame
        would be read at the wrong offset. Truncating restores the file; when even that fails
        the segment is marked broken and the next write starts a new one (the reader sees the
        stray bytes as a torn tail, after every acknowledged record).
        """
        try:
            os.ftruncate(self._fd, self._base + self._active_bytes)
        except OSError as exc:
            _log.error("write-ahead log: cannot truncate %s after a failed write: %s", self._active, exc)
            self._broken = True

    def _roll(self) -> None:
        """Seal a broken active segment and open a new one (lock held; raises OSError)."""
        old_fd, old = self._fd, self._active
        self._open_new()
        self.sealed_bytes += os.fstat(old_fd).st_size
        os.close(old_fd)
        _log.warning("write-ahead log: %s was sealed early after a failed write", old)

    def sync_now(self) -> None:
        """fdatasync the active segment if it changed since the last sync (without blocking writers)."""
        with self._file_lock:
            if not self._dirty or self._fd < 0:
                return
            self._dirty = False
            fd = os.dup(self._fd)  # the flush runs outside the lock; seal may close the original
        try:
            os.fdatasync(fd)
            self.fsyncs += 1
        except OSError as exc:
            _log.warning("write-ahead log: background fdatasync failed: %s", exc)
            self._dirty = True
        finally:
            os.close(fd)

    def seal(self) -> Path | None:
        """Close the active segment (when it holds anything) and start a new one.

        The sealed segment is fdatasynced first (it is about to be read back and deleted).

        Returns:
            The sealed segment's path, or None when the active segment was empty.
        """
        with self._file_lock:
            if self._active_bytes == 0 and not self._broken:
                return None
            sealed, old_fd, dirty = self._active, self._fd, self._dirty
            self.sealed_bytes += self._base + self._active_bytes
            self._open_new()
            self._dirty = False
        try:
            if dirty:
                os.fdatasync(old_fd)
                self.fsyncs += 1
        finally:
            os.close(old_fd)
        return sealed

    def forget(self, path: Path) -> None:
        """Delete a sealed segment whose records are committed to the lake."""
        size = path.stat().st_size
        path.unlink()
        self.sealed_bytes = max(0, self.sealed_bytes - size)

    def close(self) -> None:
        """Write what is pending, stop the threads and close the active segment (removed if empty)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._stop.set()
        self._thread.join(timeout=10)
        with self._file_lock:
            if self._fd >= 0:
                if self._dirty:
                    try:
                        os.fdatasync(self._fd)
                    except OSError:
                        pass
                os.close(self._fd)
                self._fd = -1
            if self._active is not None and self._active_bytes == 0 and not self._broken:
                self._active.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    """``write(2)`` all of ``data`` (a short write is continued; an error is raised)."""
    written = os.write(fd, data)
    if written != len(data):
        mv = memoryview(data)[written:]
        while mv:
            mv = mv[os.write(fd, mv) :]


def _resolve(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | threading.Event],
             err: OSError | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for w in waiters:
        if isinstance(w, threading.Event):
            w.set()
        else:
            by_loop.setdefault(w[0], []).append(w[1])
    for loop, futs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_finish, futs, err)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _finish(futs: list[asyncio.Future[None]], err: OSError | None) -> None:
    for f in futs:
        if not f.done():
            if err is None:
                f.set_result(None)
            else:
                f.set_exception(err)
