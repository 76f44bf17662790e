"""The model cache of one worker: champions kept hot, hot swap by polling, micro-batched scoring.

A background thread polls ``registry.state`` (one look at the events table's version when
nothing changed) every ``poll_interval_s``. When a champion moves it loads the new version
(sha256-checked) and swaps it in with a single dict assignment: a request takes its ``Served``
object once, at its start, and scores with it to the end, so no request mixes two versions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from core import registry
from core.errors import ArtifactIntegrityError, LakeopsError, ModelVersionNotFoundError
from core.lake import Lake
from core.serving.config import ServingConfig
from core.serving.online import OnlineCodec, OnlineStores, codec_for
from core.serving.schemas import Codec
from core.signature import Signature

__all__ = ["ModelCache", "Scorer", "Served", "ServedStage"]

_log = logging.getLogger("lakeops.serving")
_PINNED_MAX = 8
_SOLO_MAX = 8
_PROBE_EVERY = 16


class Scorer:
    """Scores one served version: LightGBM until the version is hot, then its compiled trees.

    ``predictor = "auto"`` counts the rows scored and, past ``compile_after_rows``, compiles the
    model in a background thread (``core.training.compile_model``: checked against LightGBM on
    a probe of every split before use); requests keep scoring through LightGBM meanwhile and
    switch with one attribute assignment when the compiled model is ready. One-row requests
    stay on LightGBM's single-row path (cheaper than a compiled call's Python wrapper).

    Attributes:
        state: ``"lightgbm"`` (not compiled, or never will be), ``"compiling"``, ``"compiled"``,
            ``"refused"`` (the model cannot be compiled exactly; ``reason`` says why).
    """

    def __init__(self, model: Any, label: str, mode: str = "lightgbm", after_rows: int = 0,
                 cache_dir: Path | None = None) -> None:
        self._model = model
        self._label = label
        self._cache_dir = cache_dir
        self._compiled: Any = None
        self._started = threading.Lock()
        self.state = "lightgbm"
        self.reason: str | None = None
        self.seconds: float | None = None
        self._left: int | None = None if mode == "lightgbm" else (0 if mode == "compiled" else after_rows)
        if self._left == 0:
            self._start()

    def __call__(self, X: np.ndarray) -> np.ndarray:
        compiled = self._compiled
        if compiled is not None and X.shape[0] > 1:
            return np.asarray(compiled.predict_matrix(X))
        left = self._left
        if left is not None:
            left -= X.shape[0]
            self._left = left
            if left <= 0:
                self._start()
        return np.asarray(self._model.predict_matrix(X))

    def _start(self) -> None:
        if not self._started.acquire(blocking=False):
            return  # already started (two threads crossed the threshold together)
        self._left = None
        self.state = "compiling"
        threading.Thread(target=self._compile, name=f"lakeops-compile-{self._label}", daemon=True).start()

    def _compile(self) -> None:
        from core.training import CompileRefused, compile_model

        try:
            compiled = compile_model(self._model, self._cache_dir)
        except CompileRefused as exc:
            self.state, self.reason = "refused", str(exc)
            _log.warning("model %s: scores through LightGBM: %s", self._label, exc)
            return
        except Exception as exc:  # noqa: BLE001 - the model keeps scoring through LightGBM
            self.state, self.reason = "refused", f"{type(exc).__name__}: {exc}"
            _log.exception("model %s: compiling failed; it scores through LightGBM", self._label)
            return
        self.seconds = compiled.seconds
        self._compiled = compiled
        self.state = "compiled"
        _log.info("model %s: compiled trees in use (%.2f s%s; largest difference from LightGBM on the probe %.1e)",
                  self._label, compiled.seconds, ", from the cache" if compiled.cached else "", compiled.max_diff)

    def status(self) -> dict[str, Any]:
        """``{"predictor", "state", "reason", "compile_s"}`` for ``/ready`` and the model detail."""
        return {"predictor": "compiled" if self.state == "compiled" else "lightgbm", "state": self.state,
                "reason": self.reason, "compile_s": None if self.seconds is None else round(self.seconds, 3)}


class _Batcher:
    """Collects the matrices of requests that arrive in one event-loop turn; scores them at once."""

    def __init__(self, score: Scorer) -> None:
        self._model = score
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._scheduled = False
        self._solo = 0  # consecutive flushes that found one request only
        self._probe = 0

    def worth_it(self) -> bool:
        """Whether to go through the batcher (an event-loop hop) rather than score inline.

        Yes while recent flushes found company or someone is already waiting; after
        ``_SOLO_MAX`` lonely flushes in a row (no concurrency) score inline, probing through
        the batcher once every ``_PROBE_EVERY`` requests to notice when concurrency returns.
        """
        if self._pending or self._solo < _SOLO_MAX:
            return True
        self._probe += 1
        return self._probe % _PROBE_EVERY == 0

    def submit(self, X: np.ndarray) -> asyncio.Future[np.ndarray]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((X, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        items, self._pending, self._scheduled = self._pending, [], False
        self._solo = self._solo + 1 if len(items) == 1 else 0
        try:
            if len(items) == 1:
                items[0][1].set_result(self._model(items[0][0]))
                return
            scores = self._model(np.vstack([x for x, _ in items]))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for _, f in items:
                if not f.done():
                    f.set_exception(exc)
            return
        start = 0
        for x, f in items:
            end = start + x.shape[0]
            if not f.done():
                f.set_result(scores[start:end])
            start = end


@dataclass(frozen=True)
class ServedStage:
    """A challenger this worker serves beside the champion (``registry.Stage`` + the loaded model)."""

    served: Served
    mode: str
    fraction: float
    since: Any


@dataclass(eq=False)
class Served:
    """One loaded model version with its request codec."""

    name: str
    version: int
    model: Any
    signature: Signature
    sha256: str
    codec: Codec | OnlineCodec
    task: str
    threshold: float
    scorer: Scorer | None = field(repr=False, default=None)  # default: LightGBM, never compiled
    score: Scorer = field(init=False, repr=False)
    batcher: _Batcher = field(repr=False, default=None)  # type: ignore[assignment]
    wal_header: tuple[tuple[str, int], bytes] = field(repr=False, default=None)  # type: ignore[assignment]
    response_head: bytes = field(repr=False, default=b"")
    _heads: dict[str, bytes] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.score = self.scorer or Scorer(self.model, f"{self.name} v{self.version}")
        self.batcher = _Batcher(self.score)
        binary = self.task == "binary"
        # Written to a WAL segment once, before this version's first prediction record in it
        # (see ``core.serving.wal``): what the log writer needs to turn records into rows.
        header = {
            "k": "h",
            "m": self.name,
            "v": self.version,
            "fn": self.codec.names,
            "lv": self.codec.levels,
            "thr": self.threshold if binary else None,
            "pt": [{"name": n, "type": k} for n, k in self.codec._pt],
        }
        self.wal_header = ((self.name, self.version), msgspec.msgpack.encode(header))
        self.response_head = self.head("champion")

    def head(self, role: str) -> bytes:
        """The pre-encoded start of an answer by this version in ``role`` (cached per role)."""
        cached = self._heads.get(role)
        if cached is None:
            cached = self._heads[role] = (
                b'{"model":' + msgspec.json.encode(self.name) + b',"version":' + str(self.version).encode()
                + b',"role":' + msgspec.json.encode(role) + b',"prediction_ids":['
            )
        return cached

    def same_encoding(self, other: Served) -> bool:
        """Whether a request decoded for ``other`` is this version's matrix too (same features and levels)."""
        return (self.codec.names == other.codec.names and self.codec.levels == other.codec.levels
                and self.signature.feature_views == other.signature.feature_views)  # online values too


class ModelCache:
    """Champions (and recently pinned versions) of every registered model, kept current.

    Args:
        lake: the lake holding the registry.
        config: the serving config (poll interval, codec policy).
    """

    def __init__(self, lake: Lake, config: ServingConfig) -> None:
        self.lake = lake
        self.config = config
        self.champions: dict[str, Served] = {}
        self.aliases: dict[str, dict[str, int]] = {}
        self.stages: dict[str, ServedStage] = {}  # model -> its challenger in a staged rollout
        self._pinned: OrderedDict[tuple[str, int], Served] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="lakeops-models", daemon=True)
        self.swaps = 0
        self.last_error: str | None = None
        # model -> {"version", "error", "since"}: a champion this worker cannot load (a missing
        # or tampered artifact); it keeps serving the version it has and says so
        self.load_errors: dict[str, dict[str, Any]] = {}
        self.on_load_error: Any = None  # called with (model, version, error) the first time
        self.online = OnlineStores(lake)  # online feature values of models trained on feature views
        self.compile_dir: Path | None = None  # compiled models' cache (``ServingConfig.compile_path``)

    def start(self) -> None:
        """Load every champion once and start polling."""
        try:
            self.refresh(discover=True)
        except LakeopsError as exc:
            self.last_error = str(exc)
            _log.warning("model cache: initial load failed: %s", exc)
        self._thread.start()

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()

    def _load(self, name: str, version: int) -> Served:
        key = (name, version)
        cur = self.champions.get(name)
        if cur is not None and cur.version == version:
            return cur
        with self._lock:
            hit = self._pinned.get(key)
            if hit is not None:
                self._pinned.move_to_end(key)
                return hit
        loaded = registry.load(name, version=version, lake=self.lake)
        sig = loaded.signature
        served = Served(
            name=name,
            version=loaded.version,
            model=loaded.model,
            signature=sig,
            sha256=loaded.sha256,
            codec=codec_for(sig, stores=self.online, unknown_category=self.config.unknown_category,
                            max_rows=self.config.max_rows),
            task=sig.task,
            threshold=sig.threshold,
            scorer=Scorer(loaded.model, f"{name} v{loaded.version}", self.config.predictor,
                         self.config.compile_after_rows, self.compile_dir),
        )
        with self._lock:
            self._pinned[key] = served
            while len(self._pinned) > _PINNED_MAX:
                self._pinned.popitem(last=False)
        return served

    def refresh(self, *, discover: bool = False) -> None:
        """Re-read aliases of every known model (and list new models) and swap moved champions."""
        names = set(self.champions) | set(self.aliases)
        if discover:
            models = registry.list_models(lake=self.lake)
            names |= set(models["model"].to_list()) if models.height else set()
        for name in sorted(names):
            st = registry.state(name, lake=self.lake)
            amap = dict(st.aliases)
            if not amap and name in self.champions:
                continue  # no alias at all: an unreachable lake looks like this; keep serving
            self.aliases[name] = amap
            self._refresh_stage(name, st.stage)
            champ = amap.get("champion")
            cur = self.champions.get(name)
            if champ is None:
                self.champions.pop(name, None)
                self.load_errors.pop(name, None)
            elif cur is None or cur.version != champ:
                try:
                    served = self._load(name, champ)
                except ArtifactIntegrityError as exc:
                    self._load_failed(name, champ, cur, exc)
                    continue
                self.champions[name] = served  # the atomic swap
                self.load_errors.pop(name, None)
                self.swaps += 1
                _log.info("model %s: champion is now v%s", name, champ)
            else:
                self.load_errors.pop(name, None)
        self.online.refresh()

    def _refresh_stage(self, name: str, stage: Any) -> None:
        """Load, change or drop the model's challenger to match the registry's stage."""
        if stage is None:
            if self.stages.pop(name, None) is not None:
                _log.info("model %s: the staged rollout ended", name)
            return
        cur = self.stages.get(name)
        if cur is not None and (cur.served.version, cur.mode, cur.fraction) == (stage.version, stage.mode, stage.fraction):
            return
        try:
            served = cur.served if cur is not None and cur.served.version == stage.version else self._load(name, stage.version)
        except (ArtifactIntegrityError, LakeopsError) as exc:
            _log.error("model %s: challenger v%s cannot be loaded; no staged traffic: %s", name, stage.version, exc)
            self.stages.pop(name, None)
            return
        self.stages[name] = ServedStage(served, stage.mode, stage.fraction, stage.since)
        _log.info("model %s: challenger v%s in %s mode (fraction %s)", name, stage.version, stage.mode, stage.fraction)

    def _load_failed(self, name: str, version: int, cur: Served | None, exc: Exception) -> None:
        """Record (and say, once) that the champion cannot be loaded; keep serving what is loaded."""
        known = self.load_errors.get(name)
        if known is not None and known["version"] == version:
            return
        from core.ids import utcnow

        keeps = f"keeps serving v{cur.version}" if cur is not None else "has no version of it to serve"
        self.load_errors[name] = {"version": version, "error": str(exc), "since": utcnow().isoformat(timespec="seconds"),
                                  "serving": cur.version if cur is not None else None}
        _log.error("model %s: champion v%s cannot be loaded, this worker %s: %s", name, version, keeps, exc)
        if self.on_load_error is not None:
            try:
                self.on_load_error(name, version, cur.version if cur is not None else None, str(exc))
            except Exception:  # noqa: BLE001 - the log line and /ready still say it
                _log.exception("model %s: could not record the load failure", name)

    def _poll_loop(self) -> None:
        n = 0
        while not self._stop.wait(self.config.poll_interval_s):
            n += 1
            try:
                self.refresh(discover=n % 10 == 0)
                self.last_error = None
            except LakeopsError as exc:
                self.last_error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a poll failure must never stop serving
                self.last_error = f"{type(exc).__name__}: {exc}"
                _log.exception("model cache: poll failed")

    def fast(self, name: str, version: int | None, alias: str | None) -> Served | None:
        """Return the model for a request without I/O when it is already loaded, else None."""
        if version is None and (alias is None or alias == "champion"):
            return self.champions.get(name)
        if version is None:
            version = self.aliases.get(name, {}).get(alias or "")
            if version is None:
                return None
        cur = self.champions.get(name)
        if cur is not None and cur.version == version:
            return cur
        return self._pinned.get((name, version))

    def resolve(self, name: str, version: int | None, alias: str | None) -> Served:
        """Return the model for a request, loading it from the registry when needed (blocking).

        Raises:
            ModelNotFoundError, ModelVersionNotFoundError: no such model, version or alias.
        """
        v = registry.resolve_version(name, version=version, alias=alias or "champion", lake=self.lake)
        served = self._load(name, v)
        if version is None and (alias is None or alias == "champion"):
            if name not in self.champions:
                self.champions[name] = served
                self.aliases.setdefault(name, {"champion": v})
        return served

    async def get(self, name: str, version: int | None, alias: str | None) -> Served:
        """Return the model for a request (fast path in memory, else loaded in a thread)."""
        served = self.fast(name, version, alias)
        if served is not None:
            return served
        if version is not None and version < 1:
            raise ModelVersionNotFoundError(f"model {name!r}: version must be >= 1, got {version}")
        return await asyncio.to_thread(self.resolve, name, version, alias)
