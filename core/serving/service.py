"""The prediction service of one worker: scoring, the durable prediction log, feedback, readiness."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from core.config import Settings
from core.errors import DataValidationError, LakeopsError
from core.ids import new_id
from core.lake import Lake
from core.serving.config import ServingConfig
from core.serving.metrics import Gauges, Metrics
from core.serving.models import ModelCache, Served, ServedStage
from core.serving.predlog import PredictionLog, dead_letters
from core.serving.problems import ProblemError
from core.serving.schemas import Decoded
from core.serving.wal import PredictionRecord, Slot, WriteAheadLog, claim_slot, orphan_slots
from core.signature import Signature

__all__ = ["Service", "batch_ids", "batch_ids_json"]

_log = logging.getLogger("lakeops.serving")
_encode = msgspec.json.encode
_pack = msgspec.msgpack.encode


def _feedback_items(
    raw: list[Any], key: str | None, task: str, key_type: str | None = None
) -> tuple[list[str], list[str | None], list[float]]:
    """Check feedback items; return (prediction ids or "", key values or None, labels).

    ``key_type``: the feedback key's pass-through type; an ``integer`` key takes integers (or
    their decimal strings, as some clients send ids), never other text, which could match no
    prediction and would be counted an orphan instead of refused.

    Raises:
        DataValidationError: naming the row and field of up to 20 problems.
    """
    allowed = {"prediction_id", "label"} | ({key} if key else set())
    ids: list[str] = []
    kvs: list[str | None] = []
    labels: list[float] = []
    errors: list[dict[str, Any]] = []
    by = "prediction_id" + (f" or {key}" if key else "")
    for row, item in enumerate(raw):
        if not isinstance(item, dict):
            errors.append({"row": row, "field": None, "message": f"expected an object with {by} and label"})
            continue
        extra = sorted(set(item) - allowed)
        if extra:
            errors.append({"row": row, "field": extra[0], "message": f"unknown field; send {by} and label"})
        pid, kv = item.get("prediction_id"), item.get(key) if key else None
        if (pid is None) == (kv is None):
            errors.append({"row": row, "field": "prediction_id",
                           "message": f"send exactly one of {by}" if key else "prediction_id is required"})
        elif pid is not None and not isinstance(pid, str):
            errors.append({"row": row, "field": "prediction_id", "message": "must be a string"})
        elif kv is not None and (isinstance(kv, bool) or not isinstance(kv, (str, int))):
            errors.append({"row": row, "field": key, "message": "must be a string or an integer"})
        elif key_type == "integer" and isinstance(kv, str) and not _DECIMAL.fullmatch(kv):
            errors.append({"row": row, "field": key, "message": f"must be an integer ({key} is an integer "
                           f"pass-through field), got {kv[:40]!r}"})
        elif key_type == "integer" and isinstance(kv, str):
            kv = int(kv)  # "0042" and 42 are the same key
        problem = _label_problem(item.get("label", _MISSING), task)
        if problem:
            errors.append({"row": row, "field": "label", "message": problem})
        ids.append(pid if isinstance(pid, str) else "")
        kvs.append(None if kv is None else str(kv))
        label = item.get("label")
        labels.append(float(label) if isinstance(label, (int, float)) else 0.0)
    if errors:
        first = errors[0]
        where = f"row {first['row']}" + (f", {first['field']}" if first["field"] else "")
        raise DataValidationError(f"{len(errors)} invalid feedback item(s); first: {where}: {first['message']}",
                                  report=errors[:20])
    return ids, kvs, labels


_MISSING = object()
_DECIMAL = re.compile(r"[+-]?[0-9]{1,19}")


def _label_problem(label: Any, task: str) -> str | None:
    """Why ``label`` is not a valid ground truth for a model of ``task``, or None."""
    if label is _MISSING or label is None:
        return "label is required"
    if isinstance(label, bool):
        return None if task == "binary" else "must be a number"
    if not isinstance(label, (int, float)) or not math.isfinite(label):
        return "must be a finite number"
    if task == "binary" and label not in (0, 1):
        return f"must be 0 or 1 for a binary model, got {label!r}"
    return None


_ID_LEN = 36  # every prediction id is a canonical UUID string
_TAIL = b'8000-000000000000",'  # variant nibble 8 (RFC 9562), then 15 random hex digits


def batch_ids_json(n: int) -> tuple[bytes, bytes]:
    """Return ``n`` fresh prediction ids twice: as ``36 * n`` ASCII bytes and as JSON array items.

    The ids are UUIDv7s sharing one ``new_id()``'s 48-bit time and 12-bit counter (one clock
    read per request) with 60 fresh random bits each. They are assembled in a numpy byte
    matrix (one row per id: quote, id, quote, comma), so no Python string is made per id.

    Returns:
        ``(ids, items)``: the ids back to back (for the WAL), and ``"id1","id2"`` (for the answer).
    """
    if n == 1:
        one = new_id().encode("ascii")
        return one, b'"' + one + b'"'
    rows = np.empty((n, _ID_LEN + 3), dtype=np.uint8)
    rows[:] = np.frombuffer(b'"' + new_id()[:19].encode("ascii") + _TAIL, dtype=np.uint8)
    digits = np.frombuffer(os.urandom(8 * n).hex().encode("ascii"), dtype=np.uint8).reshape(n, 16)
    rows[:, 21:24] = digits[:, :3]
    rows[:, 25:37] = digits[:, 3:15]
    return rows[:, 1:37].tobytes(), rows.tobytes()[:-1]


def _decode(served: Served, body: bytes, arrow: bool) -> Decoded:
    return served.codec.decode_arrow(body) if arrow else served.codec.decode(body)


def _arrow_answer(idb: bytes, n: int, scores: np.ndarray, labels: list[int] | None, versions: list[int],
                  roles: list[str]) -> bytes:
    """The answer as an Arrow IPC stream: ``prediction_id, score, label, version, role``."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    offsets = np.arange(0, _ID_LEN * (n + 1), _ID_LEN, dtype=np.int32)
    table = pa.table({
        "prediction_id": pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(idb)),
        "score": pa.array(np.asarray(scores, dtype=np.float64)),
        "label": pa.array(labels if labels is not None else [None] * n, pa.int64()),
        "version": pa.array(versions, pa.int64()),
        "role": pa.array(roles, pa.string()),
    })
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _row_keys(served: Served, decoded: Decoded, idb: bytes, n: int) -> list[bytes]:
    """Each row's canary key: the model's entity id (feedback key, else first id pass-through
    field) when the request sent it, else the row's prediction id."""
    field = served.signature.entity_key
    values = (decoded.passthrough or {}).get(field) if field else None
    ids = [idb[i * 36 : (i + 1) * 36] for i in range(n)]
    if values is None:
        return ids
    return [str(v).encode() if v is not None else ids[i] for i, v in enumerate(values)]


def _hash_fraction(keys: list[bytes]) -> np.ndarray:
    """A stable number in [0, 1) per key (BLAKE2b): the same key always falls on the same side."""
    out = np.empty(len(keys))
    for i, k in enumerate(keys):
        out[i] = int.from_bytes(hashlib.blake2b(k, digest_size=8).digest(), "big") / 2.0**64
    return out


def _rows_of(unknown: dict[str, list[tuple[int, str]]] | None, rows: np.ndarray) -> dict[str, list[tuple[int, str]]] | None:
    """Unseen-level notes of ``rows`` only, renumbered to the subset."""
    if not unknown:
        return None
    pos = {int(r): k for k, r in enumerate(rows.tolist())}
    out = {f: [(pos[r], v) for r, v in seen if r in pos] for f, seen in unknown.items()}
    return {f: v for f, v in out.items() if v} or None


def batch_ids(n: int) -> list[str]:
    """Return ``n`` prediction ids as strings (see ``batch_ids_json``)."""
    b = batch_ids_json(n)[0].decode("ascii")
    return [b[i : i + _ID_LEN] for i in range(0, len(b), _ID_LEN)]


class Service:
    """Everything one worker process serves with; started and stopped by the app's lifespan.

    Args:
        settings: lakeops settings (lake, host/port for the default WAL folder).
        config: the ``[serving]`` config.
        lake: the lake to read models from and log predictions to.
    """

    def __init__(self, settings: Settings, config: ServingConfig, lake: Lake) -> None:
        self.settings = settings
        self.config = config
        self.lake = lake
        self.metrics = Metrics()
        self.cache = ModelCache(lake, config)
        self.cache.compile_dir = config.compile_path(settings)
        self.wal: WriteAheadLog | None = None
        self.predlog: PredictionLog | None = None
        self._slot: Slot | None = None
        self.inflight = 0
        self.bodies_decoded = 0  # predict bodies decoded (a refused request is decoded once too)
        self.started = False
        self._shadow_q: collections.deque[tuple[Any, ...]] = collections.deque()
        self._shadow_wake = threading.Event()
        self._shadow_stop = threading.Event()
        self._shadow_thread = threading.Thread(target=self._shadow_loop, name="lakeops-shadow", daemon=True)
        self._shadow_thread.start()
        self.legacy_wal: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Claim a WAL slot, replay what earlier processes left, load champions, start threads."""
        self.cache.on_load_error = self._load_alert
        self.cache.start()
        if self.config.log_predictions:
            root = self.config.wal_path(self.settings)
            self._slot = claim_slot(root)
            try:
                lake_id: str | None = self.lake.lake_id
            except LakeopsError as exc:  # the lake is down at start: segments say "unknown lake"
                _log.warning("cannot read the lake id yet: %s", exc)
                lake_id = None
            self.wal = WriteAheadLog(
                self._slot, sync=self.config.wal_sync == "fsync", fsync_interval_s=self.config.wal_fsync_interval_s,
                lake_id=lake_id,
            )
            self.predlog = PredictionLog(
                self.lake, self.wal, interval_s=self.config.flush_interval_s, actor=self.settings.actor,
                features_for=self._signature_for, alert=self._log_alert,
            )
            legacy = self.config.legacy_wal_path(self.settings)
            if legacy is not None and any(legacy.glob("w*/seg-*.wal")):
                self.legacy_wal = legacy
                _log.warning(
                    "WAL segments of an earlier release are at %s (they carry no lake identity and are not "
                    "replayed automatically); if they belong to this lake: lakeops serve replay --wal-dir %s",
                    legacy, legacy,
                )
            orphans = [s for s in orphan_slots(root) if s.path != self._slot.path]
            try:
                self.predlog.replay_orphans(orphans)
            except (LakeopsError, OSError) as exc:
                _log.warning("could not replay orphaned WAL slots yet: %s", exc)
            finally:
                for s in orphans:
                    s.close()
            self.predlog.start()
            self.predlog.flush_now()  # replay this slot's leftovers right away
        self.started = True

    def stop(self) -> None:
        """Flush the prediction log and stop every thread."""
        self.cache.close()
        self._shadow_stop.set()  # shadow rows still queued reach the WAL before it closes
        self._shadow_wake.set()
        self._shadow_thread.join(timeout=10)
        if self.predlog is not None:
            self.predlog.close()
        if self.wal is not None:
            self.wal.close()
        if self._slot is not None:
            self._slot.close()

    def _signature_for(self, model: str) -> Signature | None:
        served = self.cache.champions.get(model)
        return served.signature if served is not None else None

    def _load_alert(self, model: str, version: int, serving: int | None, error: str) -> None:
        """Open a ``model_load`` alert: the champion's artifact cannot be loaded (missing or tampered)."""
        from core import monitoring

        where = f"{self.settings.api_host}:{self.settings.api_port}"
        keeps = f"v{serving} keeps answering" if serving is not None else "no version of it can answer"
        monitoring.raise_alert(
            "model_load", model, severity="critical", fingerprint=f"model_load:{model}:v{version}",
            message=f"champion v{version} of {model!r} cannot be loaded by the API at {where} ({keeps}): {error}",
            evidence={"version": version, "serving": serving, "error": error, "api": where},
            lake=self.lake, settings=self.settings, model_version=version,
        )

    def _log_alert(self, message: str | None, evidence: dict[str, Any]) -> None:
        """Open (message) or resolve (None) this replica's ``prediction_log`` alert."""
        from core import monitoring

        where = f"{self.settings.api_host}:{self.settings.api_port}"
        fp = f"prediction_log:{evidence.get('wal')}"
        if message is None:
            monitoring.resolve_alert("prediction_log", None, fingerprint=fp, lake=self.lake, settings=self.settings,
                                     message=f"the prediction log of the API at {where} commits again")
            return
        monitoring.raise_alert("prediction_log", None, severity="critical", fingerprint=fp,
                               message=f"API at {where}: {message}", evidence={**evidence, "api": where},
                               lake=self.lake, settings=self.settings)

    # ------------------------------------------------------------------ scoring
    async def predict(self, name: str, body: bytes, version: int | None, alias: str | None, *,
                      arrow: bool = False, arrow_out: bool = False) -> bytes:
        """Score a predict body and return the response JSON (after the WAL has it).

        With a staged challenger (``registry.Stage``) and no pinned version: in ``shadow`` mode
        the champion answers and the challenger scores the same rows off the request's path (a
        background thread; logged with the same prediction ids, role ``shadow``); in ``canary``
        mode each row's key (the model's entity id pass-through field, else its prediction id)
        picks the model by a stable hash, ``fraction`` of keys going to the challenger.

        ``arrow``: the body is an Arrow IPC stream (``Codec.decode_arrow``); ``arrow_out``: answer
        with an Arrow IPC stream of ``prediction_id, score, label, version, role``.

        Raises:
            DataValidationError, ProblemError, NotFoundError: see ``core.serving.problems``.
        """
        t0 = time.perf_counter()
        served = self.cache.fast(name, version, alias) or await self.cache.get(name, version, alias)
        self.bodies_decoded += 1
        decoded = served.codec.decode_arrow(body) if arrow else served.codec.decode(body)
        pinned = version is not None or (alias is not None and alias != "champion")
        stage = None if pinned else self.cache.stages.get(name)
        if stage is not None and stage.mode == "canary":
            return await self._canary(name, served, stage, body, decoded, t0, arrow, arrow_out)
        self.inflight += 1
        try:
            scores = await self._score(served, decoded.X)
        finally:
            self.inflight -= 1
        n = decoded.rows
        idb, id_items = batch_ids_json(n)
        score_list = scores.tolist()
        labels = (scores >= served.threshold).astype(np.int64).tolist() if served.task == "binary" else None
        role = "pinned" if pinned else "champion"
        if self.wal is not None:
            # One msgpack array per request, cheap to write and to turn into Arrow later: the ids
            # as one fixed-width ASCII blob, scores and the float64 matrix as raw bytes (the
            # categorical columns are their codes; the levels are in this version's header
            # record), plus any unseen categorical strings as (row, value) by feature.
            record = PredictionRecord(
                name, served.version, time.time_ns() // 1000, (time.perf_counter() - t0) * 1000.0, n,
                idb, scores.tobytes(), decoded.X.tobytes(), decoded.unknown, decoded.passthrough, role,
            )
            await self._durable(_pack(record), served.wal_header)
        self.metrics.rows_scored[name] += n
        if decoded.unknown:
            for feature, seen in decoded.unknown.items():
                self.metrics.unknown_category[(name, feature)] += len(seen)
        if stage is not None and self.wal is not None:
            self._shadow(name, stage, served, body, decoded, idb, arrow)
        if arrow_out:
            return _arrow_answer(idb, n, scores, labels, [served.version] * n, [role] * n)
        return b"".join(
            (
                served.head(role) if pinned else served.response_head, id_items, b'],"scores":', _encode(score_list),
                b',"labels":', _encode(labels), b"}",
            )
        )

    def _shadow(self, name: str, stage: ServedStage, champion: Served, body: bytes, decoded: Decoded, idb: bytes,
                arrow: bool = False) -> None:
        """Queue the request for the shadow challenger (scored and logged in the background, role ``shadow``).

        Never on the request's path: the request only appends to a queue. A background thread
        drains it every few milliseconds and scores everything queued for one challenger in one
        predict call, logged as one WAL record (at ~5,000 requests/s that is ~25 requests per
        call: far cheaper than one call each). Beyond ``shadow_queue`` queued requests one is not
        shadowed (``lakeops_shadow_dropped_total``); a failure is counted and logged as rows
        with NaN scores.
        """
        q = self._shadow_q
        if len(q) >= self.config.shadow_queue:
            self.metrics.shadow_dropped[name] += decoded.rows
            return
        q.append((name, stage.served, champion, body, decoded, idb, arrow))
        # Always wake: "set only when the queue was empty" loses the wake-up when two request
        # threads append between each other's append and length check (both see 2), and the
        # queue then waits forever (seen under load in CI). Event.set on a set event is cheap.
        self._shadow_wake.set()

    def _shadow_loop(self) -> None:
        while True:
            self._shadow_wake.wait(0.5)  # the timeout is a backstop; appends always set the event
            self._shadow_wake.clear()
            if self._shadow_stop.is_set() and not self._shadow_q:
                return
            time.sleep(0.005)  # let a few requests gather: one predict call for all of them
            self._shadow_drain()
            if self._shadow_stop.is_set():
                return

    def _shadow_drain(self) -> None:
        """Score and log everything queued, one predict call and one WAL record per challenger."""
        q = self._shadow_q
        items = []
        while q:
            items.append(q.popleft())
        groups: dict[tuple[str, int], list[tuple[Served, Decoded, bytes]]] = {}
        for name, ch, champion, body, decoded, idb, arrow in items:
            try:
                mine = decoded if ch.same_encoding(champion) else _decode(ch, body, arrow)
            except Exception as exc:  # noqa: BLE001 - the challenger refuses this body: noted, never raised
                self._challenger_failed(name, ch, decoded, idb, np.arange(decoded.rows), exc)
                continue
            groups.setdefault((name, ch.version), []).append((ch, mine, idb))
        for (name, _version), group in groups.items():
            self._shadow_group(name, group)

    def _shadow_group(self, name: str, group: list[tuple[Served, Decoded, bytes]]) -> None:
        t0 = time.perf_counter()
        ch = group[0][0]
        X = np.vstack([d.X for _, d, _ in group]) if len(group) > 1 else group[0][1].X
        n = X.shape[0]
        try:
            scores = ch.score(X)
        except Exception as exc:  # noqa: BLE001 - a failing challenger is data: NaN scores, counted
            _log.warning("shadow challenger %s v%s failed: %s", name, ch.version, exc)
            self.metrics.shadow_errors[name] += n
            scores = np.full(n, np.nan)
        unknown: dict[str, list[tuple[int, str]]] = {}
        pt: dict[str, list[Any]] = {}
        start = 0
        for _, d, _ in group:
            for f, seen in (d.unknown or {}).items():
                unknown.setdefault(f, []).extend((start + r, v) for r, v in seen)
            for f in set(pt) | set(d.passthrough or {}):
                pt.setdefault(f, [None] * start).extend((d.passthrough or {}).get(f) or [None] * d.rows)
            start += d.rows
        record = PredictionRecord(
            name, ch.version, time.time_ns() // 1000, (time.perf_counter() - t0) * 1000.0 / len(group), n,
            b"".join(idb for _, _, idb in group), scores.tobytes(), np.ascontiguousarray(X).tobytes(),
            unknown or None, pt or None, "shadow",
        )
        try:
            assert self.wal is not None
            self.wal.write(_pack(record), ch.wal_header)
            self.metrics.shadow_rows[name] += n
        except OSError as exc:
            self.metrics.shadow_errors[name] += n
            _log.warning("shadow rows of %s v%s could not be logged: %s", name, ch.version, exc)

    def _challenger_failed(self, name: str, ch: Served, decoded: Decoded, idb: bytes, rows: np.ndarray,
                           exc: Exception) -> None:
        """The challenger could not take a request the champion answers (shadow or canary): counted,
        and logged as ``shadow`` rows with NaN scores so the live gate sees its error rate."""
        _log.warning("challenger %s v%s cannot take a request: %s", name, ch.version, exc)
        self.metrics.shadow_errors[name] += int(rows.size)
        if self.wal is None:
            return
        sub = b"".join(idb[i * 36 : (i + 1) * 36] for i in rows.tolist())
        width = len(ch.codec.names)
        record = PredictionRecord(name, ch.version, time.time_ns() // 1000, 0.0, int(rows.size), sub,
                                  np.full(rows.size, np.nan).tobytes(), np.full((rows.size, width), np.nan).tobytes(),
                                  None, None, "shadow")
        try:
            self.wal.write(_pack(record), ch.wal_header)
        except OSError:
            pass  # the answer is the champion's and is logged; this note is best effort

    async def _canary(self, name: str, champion: Served, stage: ServedStage, body: bytes, decoded: Decoded,
                      t0: float, arrow: bool = False, arrow_out: bool = False) -> bytes:
        """Answer each row with the champion or the canary challenger, by a stable hash of its key."""
        ch = stage.served
        n = decoded.rows
        idb, id_items = batch_ids_json(n)
        keys = _row_keys(champion, decoded, idb, n)
        to_ch = _hash_fraction(keys) < stage.fraction
        parts: list[tuple[Served, str, np.ndarray]] = []
        if not to_ch.all():
            parts.append((champion, "champion", np.flatnonzero(~to_ch)))
        if to_ch.any():
            parts.append((ch, "challenger", np.flatnonzero(to_ch)))
        scores = np.empty(n)
        labels = np.zeros(n, dtype=np.int64)
        if len(parts) and parts[-1][1] == "challenger" and not ch.same_encoding(champion):
            try:
                ch_decoded = _decode(ch, body, arrow)
            except Exception as exc:  # noqa: BLE001 - the challenger cannot take this request: the champion answers
                self._challenger_failed(name, ch, decoded, idb, np.flatnonzero(to_ch), exc)
                to_ch[:] = False
                parts = [(champion, "champion", np.arange(n))]
        else:
            ch_decoded = decoded
        for model, role, rows in parts:
            mine = decoded if model is champion else ch_decoded
            X = mine.X[rows]
            s = await self._score(model, X)
            scores[rows] = s
            if model.task == "binary":
                labels[rows] = s >= model.threshold
            if self.wal is not None:
                sub_ids = b"".join(idb[i * 36 : (i + 1) * 36] for i in rows.tolist()) if len(parts) > 1 else idb
                unknown = _rows_of(mine.unknown, rows) if len(parts) > 1 else mine.unknown
                pt = {k: [v[i] for i in rows.tolist()] for k, v in mine.passthrough.items()} if mine.passthrough else None
                record = PredictionRecord(name, model.version, time.time_ns() // 1000,
                                          (time.perf_counter() - t0) * 1000.0, int(rows.size), sub_ids, s.tobytes(),
                                          np.ascontiguousarray(X).tobytes(), unknown, pt, role)
                await self._durable(_pack(record), model.wal_header)
        self.metrics.rows_scored[name] += n
        label_list = labels.tolist() if champion.task == "binary" else None
        if arrow_out:
            return _arrow_answer(idb, n, scores, label_list, np.where(to_ch, ch.version, champion.version).tolist(),
                                 np.where(to_ch, "challenger", "champion").tolist())
        if len(parts) == 1:
            model, role, _ = parts[0]
            return b"".join((model.head(role), id_items, b'],"scores":', _encode(scores.tolist()),
                             b',"labels":', _encode(label_list), b"}"))
        roles = np.where(to_ch, "challenger", "champion").tolist()
        versions = np.where(to_ch, ch.version, champion.version).tolist()
        return b"".join((champion.head("champion"), id_items, b'],"scores":', _encode(scores.tolist()),
                         b',"labels":', _encode(label_list), b',"versions":', _encode(versions),
                         b',"roles":', _encode(roles), b"}"))

    async def _score(self, served: Served, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if n == 1:
            # LightGBM's single-row fast path (~10 us) costs less than a trip through the batcher
            return served.score(X)
        if n > self.config.offload_rows:
            return await asyncio.to_thread(served.score, X)
        if self.config.microbatch and served.batcher.worth_it():
            # Requests that arrived in the same event-loop turn are scored in one predict call
            # (the fixed cost of a LightGBM call dominates small requests); with no concurrency
            # the batcher says so and the request is scored inline (no event-loop hop).
            return await served.batcher.submit(X)
        return served.score(X)

    async def _durable(self, record: bytes, header: tuple[Any, bytes] | None = None) -> None:
        assert self.wal is not None
        try:
            pending = self.wal.submit(record, header)  # "write": written inline; "fsync": group commit
            if pending is not None:
                await pending
        except OSError as exc:
            raise ProblemError(
                503, "wal-unavailable", f"the prediction could not be logged to the write-ahead file: {exc}"
            ) from None

    async def feedback(self, name: str, body: bytes) -> dict[str, int]:
        """Validate a feedback batch and log it durably; return what was accepted.

        Each item is ``{"prediction_id": ..., "label": ...}``, or ``{"<feedback key>": ...,
        "label": ...}`` when the model's signature declares a feedback key (an entity id among
        its pass-through fields): such a label applies to the newest prediction of that key made
        before it arrived. Labels are checked against the champion's signature (0/1 for a
        binary model, a finite number for regression); nothing invalid is logged. A second label
        for the same prediction wins over the first (both are kept in ``feedback``; readers take
        the latest). Prediction ids the log does not know are recorded and reported as orphans
        by readers (``[serving] feedback_unknown_ids = "accept"``, the default) or refused with
        a 422 (``"refuse"``).

        Raises:
            DataValidationError: an item is malformed or a label invalid (422, naming row and field).
            ProblemError: not JSON (400), too many items (413), logging disabled (503).
            ModelNotFoundError, ModelVersionNotFoundError: unknown model, or no champion to check against.
        """
        served = self.cache.fast(name, None, None) or await self.cache.get(name, None, None)
        key = served.signature.feedback_key
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ProblemError(400, "not-json", f"the request body is not valid JSON: {exc}") from None
        if not isinstance(raw, list) or not raw:
            raise DataValidationError(
                "feedback body must be a non-empty list of {prediction_id, label}"
                + (f" or {{{key}, label}}" if key else ""),
                report=[{"row": None, "field": None, "message": "expected a non-empty JSON array of objects"}],
            )
        if len(raw) > self.config.max_rows:
            raise ProblemError(413, "too-many-rows", f"{len(raw):,} labels; the limit is {self.config.max_rows:,}")
        key_type = next((p.type for p in served.signature.passthrough if p.name == key), None) if key else None
        ids, key_values, labels = _feedback_items(raw, key, served.task, key_type)
        if self.wal is None:
            raise ProblemError(
                503, "logging-disabled", "feedback needs the prediction log; set [serving] log_predictions = true"
            )
        if self.config.feedback_unknown_ids == "refuse":
            known = await asyncio.to_thread(self._known_ids, name, [i for i in ids if i])
            unknown = [(row, i) for row, i in enumerate(ids) if i and i not in known]
            if unknown:
                raise DataValidationError(
                    f"{len(unknown)} prediction id(s) are not in the prediction log of {name!r}; first: row "
                    f"{unknown[0][0]}, {unknown[0][1]!r}",
                    report=[{"row": r, "field": "prediction_id", "message": "unknown prediction id"} for r, _ in unknown[:20]],
                )
        record: dict[str, Any] = {
            "k": "f", "m": name, "at": time.time_ns() // 1000, "src": "api", "ids": ids, "labels": labels,
        }
        if key is not None and any(v is not None for v in key_values):
            record["key"], record["kv"] = key, key_values
        await self._durable(_pack(record))
        self.metrics.feedback_rows += len(ids)
        seen = [i for i in ids if i] + [f"{key}={v}" for v in key_values if v is not None]
        return {"accepted": len(ids), "duplicates": len(seen) - len(set(seen))}

    def _known_ids(self, model: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` are in the prediction log (the lake, or this worker's WAL not yet in it)."""
        import polars as pl

        from core.serving.predlog import prediction_table
        from core.serving.wal import segments

        wanted = set(ids)
        found: set[str] = set()
        if self.wal is not None:
            for seg in segments(self.wal.slot.path):
                data = seg.read_bytes()
                found |= {i for i in wanted - found if i.encode("ascii", "replace") in data}
        rest = wanted - found
        if rest and self.lake.exists(prediction_table(model)):
            hits = (self.lake.scan(prediction_table(model)).select("prediction_id")
                    .filter(pl.col("prediction_id").is_in(list(rest))).collect())
            found |= set(hits["prediction_id"].to_list())
        return found

    # ------------------------------------------------------------------ status
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Return (ready, details): a champion is loaded and the WAL backlog is under its bound."""
        backlog = self.wal.backlog_bytes if self.wal is not None else 0
        reasons = []
        if not self.cache.champions:
            reasons.append("no champion model is loaded")
        degraded = []
        for name, err in sorted(self.cache.load_errors.items()):
            text = f"champion v{err['version']} of {name!r} cannot be loaded: {err['error']}"
            if err["serving"] is None:
                reasons.append(text)  # nothing answers for this model
            else:  # the previous version answers: reported, not a reason to leave the pool
                degraded.append(f"{text}; v{err['serving']} answers meanwhile")
        for name, served in sorted(self.cache.champions.items()):
            if served.score.state == "refused":  # it answers, at LightGBM's cost: reported, not a reason
                degraded.append(f"{name} v{served.version} scores through LightGBM, not compiled: {served.score.reason}")
        if backlog > self.config.wal_max_bytes:
            reasons.append(f"prediction log backlog {backlog} bytes is over wal_max_bytes={self.config.wal_max_bytes}")
        if self.wal is not None and self.wal.error is not None:
            reasons.append(f"the write-ahead file cannot be written: {self.wal.error}")
        log = self.predlog
        if log is not None:
            for seg, info in sorted(log.failing.items()):
                reasons.append(
                    f"the prediction log cannot commit WAL segment {seg} (attempt {info['attempts']}, failing "
                    f"since {info['since']}): {info['error']}"
                )
        letters = dead_letters(log.wal_root) if log is not None else []
        details = {
            "ready": not reasons,
            "reasons": reasons,
            "champions": {n: s.version for n, s in sorted(self.cache.champions.items())},
            "wal_backlog_bytes": backlog,
            "lake_ok": log.lake_ok if log is not None else True,
            "lake_error": log.last_error if log is not None else None,
            "dead_letter_segments": [d.to_dict() for d in letters],
            "degraded": degraded,
            "champion_load_errors": dict(self.cache.load_errors),
            "legacy_wal": str(self.legacy_wal) if self.legacy_wal else None,
            "online_features": self.cache.online.status(),
            "predictors": {n: {"version": s.version, **s.score.status()} for n, s in sorted(self.cache.champions.items())},
        }
        return not reasons, details

    def metrics_sources(self) -> tuple[Gauges, dict[str, tuple[str, float]]]:
        """This worker's gauges (with how workers combine them) and its service-level counters."""
        backlog = float(self.wal.backlog_bytes) if self.wal is not None else 0.0
        pending_segments = float(len(list(Path(self._slot.path).glob("seg-*.wal")))) if self._slot else 0.0
        gauges: Gauges = {
            "lakeops_model_version": (
                "Version of the model answering by default (the champion), by model and worker.", "worker",
                {(("model", n),): float(s.version) for n, s in self.cache.champions.items()},
            ),
            "lakeops_log_queue_bytes": ("Prediction-log bytes on the WAL not yet in the lake.", "sum", {(): backlog}),
            "lakeops_log_queue_segments": ("WAL segments not yet in the lake.", "sum", {(): pending_segments}),
            "lakeops_lake_ok": ("1 when the last prediction-log append of every worker succeeded.", "min",
                                {(): float(self.predlog.lake_ok if self.predlog else 1)}),
            "lakeops_model_compiled": (
                "1 when the champion scores through its compiled trees in this worker, 0 through LightGBM.", "worker",
                {(("model", n),): float(s.score.state == "compiled") for n, s in self.cache.champions.items()},
            ),
        }
        counters = {
            "lakeops_log_rows_committed_total": ("Prediction-log rows appended to the lake.",
                                                 float(self.predlog.rows_committed if self.predlog else 0)),
            "lakeops_model_swaps_total": ("Champion swaps seen, summed over workers.", float(self.cache.swaps)),
        }
        return gauges, counters

    def metrics_text(self, accept: str = "") -> tuple[bytes, str]:
        """Return the Prometheus exposition of every worker of this server, and its content type."""
        return self.metrics.render(*self.metrics_sources(), accept=accept)
