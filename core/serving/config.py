"""The ``[serving]`` section of lakeops.toml, parsed and validated into ``ServingConfig``."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from core.config import Settings
from core.errors import ConfigError

__all__ = ["ServingConfig", "serving_config"]


@dataclass(frozen=True)
class ServingConfig:
    """How the prediction service behaves; every field is a ``[serving]`` key.

    Attributes:
        log_predictions: write every scored row to ``predictions/<model>`` (through the WAL).
        unknown_category: ``"missing"`` (default) scores a categorical level the model never
            saw as missing, exactly as training's encoder and LightGBM treat unseen categories;
            each such value is counted in ``/metrics`` as
            ``lakeops_unknown_category_total{model,feature}`` and is logged with its raw string,
            so drift monitoring (which compares category distributions over the union of levels)
            sees the new level. ``"error"`` refuses the request instead (422 naming row and
            field). The default lets a new level (e.g. a marketing campaign's plan) flow into
            drift -> retrain -> promote without a manual config step.
        max_rows: most rows one predict request may carry.
        request_max_body_size: largest request body in bytes (413 above it).
        wal_dir: folder of this replica's write-ahead log. Default: ``<lake parent>/wal/<lake
            folder name>/<host>-<port>`` for a local lake, ``data/wal/<bucket>_<prefix>/<host>-<port>``
            (relative to the working directory) for an s3:// lake: on local disk, outside the
            lake (it must keep working while the lake is unreachable), one folder per lake and
            port. Every segment also carries the lake's id (``Lake.lake_id``); replay refuses a
            segment of another lake and moves it to ``dead-letter/`` with the reason.
        wal_sync: what "acknowledged" means for a prediction (its rows are always in the local
            write-ahead file before the response is sent):
            ``"write"`` (default): the rows were written to the WAL file (in the OS page cache)
            before the response: they survive the server process being killed (SIGKILL, OOM,
            crash) and are replayed into the lake exactly once on restart; the file is
            fdatasynced in the background every ``wal_fsync_interval_s`` and when sealed, so a
            power cut or kernel crash loses at most that window of acknowledged rows.
            ``"fsync"``: the rows were fdatasynced (group commit) before the response: they
            survive a power cut too, for one disk flush (~ms) per request on the latency path.
        wal_fsync_interval_s: with ``wal_sync = "write"``, the bound in seconds on how long
            acknowledged rows may sit in the page cache only (background fdatasync period).
        wal_max_bytes: WAL backlog above which ``/ready`` answers 503 (the lake is behind).
        flush_interval_s: how often the WAL is sealed and appended to the lake (one commit per
            table per flush), i.e. how fresh ``predictions/<model>`` is for monitoring. Each flush
            has a fixed cost (opening the Delta table, writing one parquet file, the commit:
            ~0.05-0.15 CPU-seconds here, whatever its size) and the machine manages only ~15
            commits/s in total (LAKE-FACTS), so the default of 5 s keeps logging cheap; lower it
            for fresher monitoring.
        poll_interval_s: how often each worker checks the registry aliases for a hot swap.
        microbatch: score concurrent requests for one model in a single predict call.
        offload_rows: requests with more rows than this are scored in a worker thread.
        feedback_unknown_ids: a label for a prediction id the log does not know: ``"accept"``
            (default: recorded, and reported as an orphan by readers until the prediction shows
            up; labels may arrive before the prediction's segment is committed, or at another
            replica) or ``"refuse"`` (422; checked against the lake and this worker's own WAL,
            so with several replicas a label sent within ``flush_interval_s`` of a prediction
            made by another replica is refused too).
        shadow_queue: requests a shadow challenger may be behind (scored in one background
            thread, never on the request's path); beyond it a request is not shadowed and is
            counted in ``lakeops_shadow_dropped_total``.
        replica: the ``replica`` label on every ``/metrics`` series of this server (default
            ``<host name>:<port>``), so series of several replicas never merge.
        predictor: what scores a served model's requests of two rows or more. ``"auto"``
            (default): LightGBM until the version has scored ``compile_after_rows`` rows in this
            worker, then its trees compiled to machine code (lleaves), compiled in a background
            thread and used once they agree with LightGBM on a probe of every split (to 1e-12;
            ``core.training._compiled``); ``"compiled"``: compile as soon as a version is loaded;
            ``"lightgbm"``: never compile. Until a compile is done, and for good when it is
            refused (the reason is in ``/ready``'s ``predictors``, the model detail and the
            log), LightGBM scores. One-row requests always use LightGBM's single-row path.
        compile_after_rows: rows a version scores before ``"auto"`` compiles it (a model that
            is barely used never pays for a compile: ~1.3 s of CPU per 80 trees).
        compile_cache_dir: where compiled models are kept across restarts and shared by the
            workers and replicas of this host (default ``compiled/`` beside this replica's WAL
            folder, on local disk: the files are native code for this machine's CPU).
    """

    log_predictions: bool = True
    unknown_category: Literal["error", "missing"] = "missing"
    max_rows: int = 10_000
    request_max_body_size: int = 16 * 1024 * 1024
    wal_dir: str | None = None
    wal_sync: Literal["fsync", "write"] = "write"
    wal_fsync_interval_s: float = 0.2
    wal_max_bytes: int = 256 * 1024 * 1024
    flush_interval_s: float = 5.0
    poll_interval_s: float = 1.0
    microbatch: bool = True
    offload_rows: int = 2_000
    feedback_unknown_ids: Literal["accept", "refuse"] = "accept"
    shadow_queue: int = 256
    replica: str | None = None
    predictor: Literal["auto", "compiled", "lightgbm"] = "auto"
    compile_after_rows: int = 20_000
    compile_cache_dir: str | None = None

    def compile_path(self, settings: Settings) -> Path:
        """Return the compiled-model cache folder (see ``compile_cache_dir``)."""
        if self.compile_cache_dir:
            return Path(self.compile_cache_dir).expanduser()
        return self.wal_path(settings).parent / "compiled"

    def wal_path(self, settings: Settings) -> Path:
        """Return the WAL folder for this lake and host/port (see ``wal_dir``)."""
        if self.wal_dir:
            return Path(self.wal_dir).expanduser()
        slot = _safe(f"{settings.api_host}-{settings.api_port}")
        uri = settings.lake_uri.removeprefix("file://")
        if uri.startswith("s3://"):
            return Path("data") / "wal" / _safe(uri.removeprefix("s3://").strip("/")) / slot
        lake = Path(uri).expanduser().resolve()
        return lake.parent / "wal" / _safe(lake.name) / slot

    def legacy_wal_path(self, settings: Settings) -> Path | None:
        """The default WAL folder of earlier releases (outside the lake), when it may hold segments."""
        if self.wal_dir or settings.lake_uri.startswith("s3://"):
            return None
        slot = _safe(f"{settings.api_host}-{settings.api_port}")
        return Path(settings.lake_uri.removeprefix("file://")).expanduser().resolve().parent / "wal" / slot


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


_CHOICES = {
    "unknown_category": ("error", "missing"), "wal_sync": ("fsync", "write"), "feedback_unknown_ids": ("accept", "refuse"),
    "predictor": ("auto", "compiled", "lightgbm"),
}


def serving_config(settings: Settings) -> ServingConfig:
    """Parse ``settings.section("serving")`` into a ``ServingConfig``.

    Raises:
        ConfigError: an unknown key or a value of the wrong type or range, naming the key.
    """
    raw = settings.section("serving")
    known = {f.name: f for f in fields(ServingConfig)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"[serving] {key} is not a setting; known: {', '.join(sorted(known))}")
        default = getattr(ServingConfig, key)
        values[key] = _coerce(key, value, default)
    cfg = ServingConfig(**values)
    for key, allowed in _CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"[serving] {key} must be one of {', '.join(allowed)}; got {getattr(cfg, key)!r}")
    for key in ("max_rows", "request_max_body_size", "wal_max_bytes", "offload_rows", "shadow_queue"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"[serving] {key} must be >= 1; got {getattr(cfg, key)}")
    if cfg.compile_after_rows < 0:
        raise ConfigError(f"[serving] compile_after_rows must be >= 0; got {cfg.compile_after_rows}")
    for key in ("flush_interval_s", "poll_interval_s", "wal_fsync_interval_s"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"[serving] {key} must be > 0; got {getattr(cfg, key)}")
    return cfg


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return value.lower() in {"true", "1"}
        raise ConfigError(f"[serving] {key} must be true or false; got {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"[serving] {key} must be an integer; got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"[serving] {key} must be a number; got {value!r}") from None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"[serving] {key} must be a string; got {value!r}")
    return value
