"""``lakeops serve``: uvicorn (uvloop + httptools) on the ``core.serving.app:create_app`` factory."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli._common import settings_from

if TYPE_CHECKING:
    from core.config import Settings

__all__ = ["check_bind", "register"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_bind(settings: Any, *, insecure: bool) -> None:
    """Refuse, in one line, to serve on a non-loopback address without authentication.

    Raises:
        ConfigError: ``api_host`` is not a loopback address, auth is off and ``insecure`` is not set.
    """
    from core import auth
    from core.errors import ConfigError

    host = settings.api_host.strip().lower()
    if host in _LOOPBACK or host.startswith("127.") or auth.enabled(settings) or insecure:
        return
    raise ConfigError(
        f"refusing to serve on {settings.api_host} without authentication (anyone who reaches it could score, "
        "send feedback and read models): turn tokens on with [auth] mode = \"tokens\" or LAKEOPS_AUTH=tokens and "
        "create one with 'lakeops tokens create NAME --scope predict', or pass --insecure to serve without it")


def register(sub: Any) -> None:
    """Add ``serve`` to ``sub``."""
    p = sub.add_parser(
        "serve", help="run the prediction API (uvicorn + Litestar); 'serve status|replay|discard' for its WAL",
        description=(
            "Run the prediction API, or look after its write-ahead log (WAL): 'status' lists pending "
            "and dead-letter segments, 'replay' commits dead letters (and segments left by stopped "
            "servers) after their cause was fixed, 'discard' gives a dead letter up."
        ),
    )
    p.add_argument(
        "action", nargs="?", default="run", choices=["run", "status", "replay", "discard"],
        help="run (default): serve; status | replay | discard: the WAL of this lake and --host/--port",
    )
    p.add_argument("--wal-dir", default=None, help="status/replay/discard: the WAL folder (default: [serving] wal_dir)")
    p.add_argument("--segment", default=None, help="replay/discard: one dead letter (its file or segment name)")
    p.add_argument("--reason", default=None, help="discard: why its predictions are given up (required)")
    p.add_argument("--format", default="table", choices=["table", "json"], help="status output")
    p.add_argument("--host", default=None, help="address to bind (default: settings api_host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings api_port, 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each polls the registry and has its own WAL slot)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without authentication (anyone who reaches it may call it)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from core.errors import ConfigError
    from core.serving.config import serving_config

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["api_host"] = args.host
    if args.port:
        overrides["api_port"] = args.port
    settings = settings_from(args).with_(**overrides)
    config = serving_config(settings)  # fail fast, in one line, on a bad [serving] section
    if args.action != "run":
        root = Path(args.wal_dir).expanduser() if args.wal_dir else config.wal_path(settings)
        return _wal_action(args, settings, root, config.legacy_wal_path(settings))
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    check_bind(settings, insecure=args.insecure)
    from core.auth import auth_config

    auth_config(settings)  # a bad [auth] section fails here in one line, not in every worker
    # Worker processes build the app from the environment: hand them what the flags chose.
    os.environ["LAKEOPS_LAKE"] = settings.lake_uri
    os.environ["LAKEOPS_API_HOST"] = settings.api_host
    os.environ["LAKEOPS_API_PORT"] = str(settings.api_port)
    if settings.config_path:
        os.environ["LAKEOPS_CONFIG"] = str(settings.config_path)
    shared = None
    if args.workers > 1:
        # One folder per server run where its workers share their /metrics counts (core.serving.metrics).
        import shutil
        import tempfile

        shared = tempfile.mkdtemp(prefix=f"lakeops-metrics-{settings.api_port}-")
        os.environ["LAKEOPS_METRICS_DIR"] = shared
    else:
        os.environ.pop("LAKEOPS_METRICS_DIR", None)
    auth_note = "auth: tokens" if settings.auth_mode == "tokens" else "auth: OFF"
    sys.stderr.write(f"lakeops API on http://{settings.api_host}:{settings.api_port} (docs: /schema; {auth_note})\n")
    try:
        _run(uvicorn, settings, args)
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)
    return 0


def _run(uvicorn: Any, settings: Any, args: argparse.Namespace) -> None:
    uvicorn.run(
        "core.serving.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


def _wal_action(args: argparse.Namespace, settings: Settings, root: Path, legacy: Path | None) -> int:
    """``serve status|replay|discard``: the write-ahead log of this lake and host/port."""
    if args.action == "status":
        return _wal_status(args, root, legacy)
    if args.action == "discard":
        return _wal_discard(args, settings, root)
    return _wal_replay(args, settings, root)


def _wal_slots(root: Path) -> list[dict[str, Any]]:
    """Each slot folder of the WAL: whether its server runs, what it holds that the lake does not."""
    from core.serving.wal import orphan_slots, scan_segment, segments

    slots = []
    for path in sorted(root.glob("w*")):
        if not path.is_dir():
            continue
        pending = segments(path)
        live = next((s for s in orphan_slots(root) if s.path == path), None)
        if live is not None:
            live.close()
        slots.append({
            "slot": path.name, "server_running": live is None, "pending_segments": len(pending),
            "pending_bytes": sum(p.stat().st_size for p in pending),
            "unreadable": [f"{p.name}: {sc.detail}" for p in pending if (sc := scan_segment(p)).problem == "corrupt"],
        })
    return slots


def _wal_status(args: argparse.Namespace, root: Path, legacy: Path | None) -> int:
    import json

    from core.serving.predlog import dead_letters

    slots = _wal_slots(root)
    letters = [d.to_dict() for d in dead_letters(root)]
    earlier = str(legacy) if legacy is not None and any(legacy.glob("w*/seg-*.wal")) else None
    if args.format == "json":
        out = {"wal_dir": str(root), "slots": slots, "dead_letters": letters, "earlier_release_wal": earlier}
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return 0
    lines = [f"WAL {root}"]
    if not slots:
        lines.append("  no slots (no server has run with this lake and --host/--port, or another --wal-dir)")
    for s in slots:
        state = "server running" if s["server_running"] else "no server"
        lines.append(f"  {s['slot']}: {state}, {s['pending_segments']} segment(s) not yet in the lake ({s['pending_bytes']:,} bytes)")
        lines += [f"    unreadable: {u}" for u in s["unreadable"]]
    lines.append(f"dead letters: {len(letters)}" + (" (lakeops serve replay after a fix; lakeops serve discard --segment NAME --reason ...)" if letters else ""))
    for d in letters:
        lines.append(f"  {d['segment']} [{d['kind']}, {d['attempts']} attempts, {d['at']}]: {d['error']}")
    if earlier:
        lines.append(f"segments of an earlier release (no lake identity): {earlier}; "
                     f"if they belong to this lake: lakeops serve replay --wal-dir {earlier}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _wal_discard(args: argparse.Namespace, settings: Settings, root: Path) -> int:
    from core.errors import ConfigError
    from core.lake import Lake
    from core.serving.predlog import dead_letters, discard_dead_letter

    if not args.segment or not (args.reason or "").strip():
        raise ConfigError("serve discard needs --segment NAME and --reason \"...\" (its predictions are given up)")
    match = [d for d in dead_letters(root) if args.segment in (d.path.name, d.segment)]
    if not match:
        raise ConfigError(f"no dead letter {args.segment!r} in {root / 'dead-letter'}; see lakeops serve status")
    from core.monitoring import raise_alert

    lake = Lake.from_settings(settings, create=False)
    for d in match:
        discard_dead_letter(d)
        raise_alert("prediction_log", None, severity="warning", fingerprint=f"prediction_log:discard:{d.path}",
                    message=f"{settings.actor} discarded WAL dead letter {d.segment} ({d.bytes:,} bytes): {args.reason}",
                    evidence={**d.to_dict(), "reason": args.reason, "actor": settings.actor}, lake=lake,
                    settings=settings)
    sys.stdout.write(f"discarded {len(match)} dead letter(s)\n")
    return 0


def _wal_replay(args: argparse.Namespace, settings: Settings, root: Path) -> int:
    from core.lake import Lake
    from core.serving.predlog import PredictionLog
    from core.serving.wal import orphan_slots

    lake = Lake.from_settings(settings, create=False)
    log = PredictionLog.offline(lake, root, actor=settings.actor)
    orphans = list(orphan_slots(root)) if root.exists() else []
    try:
        pending = log.replay_orphans(orphans) if not args.segment else 0
    finally:
        for slot in orphans:
            slot.close()
    rows, errors = log.replay_dead_letters(root, only=args.segment)
    sys.stdout.write(f"replayed {pending + rows:,} row(s) into {lake.uri}\n")
    for e in errors:
        sys.stderr.write(f"lakeops: still failing: {e}\n")
    return 2 if errors else 0
