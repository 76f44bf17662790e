"""``lakeops serve``: uvicorn (uvloop + httptools) on the ``core.serving.app:create_app`` factory."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from core.cli._common import settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``serve`` to ``sub``."""
    p = sub.add_parser("serve", help="run the prediction API (uvicorn + Litestar)")
    p.add_argument("--host", default=None, help="address to bind (default: settings api_host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings api_port, 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each polls the registry and has its own WAL slot)")
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
    serving_config(settings)  # fail fast, in one line, on a bad [serving] section
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    # Worker processes build the app from the environment: hand them what the flags chose.
    os.environ["LAKEOPS_LAKE"] = settings.lake_uri
    os.environ["LAKEOPS_API_HOST"] = settings.api_host
    os.environ["LAKEOPS_API_PORT"] = str(settings.api_port)
    if settings.config_path:
        os.environ["LAKEOPS_CONFIG"] = str(settings.config_path)
    sys.stderr.write(f"lakeops API on http://{settings.api_host}:{settings.api_port} (docs: /schema)\n")
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
    return 0
