"""``lakeops up`` (API + scheduler + UI, supervised) and ``lakeops ui``.

Processes, not imports, cross the top: ``up`` starts ``lakeops serve`` (uvicorn on the
``core.serving`` app factory), ``python -m jobs`` and ``streamlit run app.py`` as child
processes, waits until each answers, prints their addresses and, on Ctrl-C or SIGTERM, stops
them in order (scheduler, API, UI) with SIGTERM so each flushes its buffers, killing only what
does not stop within the grace period. Children die with the supervisor (``PR_SET_PDEATHSIG``),
so even a killed ``up`` leaves no orphans.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cli._common import settings_from
from core.errors import ConfigError, LakeopsError

__all__ = ["register"]

_ROOT = Path(__file__).resolve().parents[2]
_GRACE_S = 20.0
_START_TIMEOUT_S = 120.0


def register(sub: Any) -> None:
    """Add ``up`` and ``ui`` to ``sub``."""
    p = sub.add_parser("up", help="seed the demo if the lake is empty, then run API + scheduler + UI")
    p.add_argument("--no-seed", action="store_true", help="do not seed the demo scenario")
    p.add_argument("--no-ui", action="store_true", help="do not start the Streamlit UI")
    p.add_argument("--no-scheduler", action="store_true", help="do not start the scheduler")
    p.add_argument("--api-port", type=int, help="port of the prediction API (default: $LAKEOPS_API_PORT or 8000)")
    p.add_argument("--ui-port", type=int, help="port of the UI (default: $LAKEOPS_UI_PORT or 8501)")
    p.add_argument("--insecure", action="store_true",
                   help="allow the API on a non-loopback LAKEOPS_API_HOST without authentication")
    p.set_defaults(handler=_up)

    p = sub.add_parser("ui", help="run the Streamlit UI (streamlit run app.py)")
    p.set_defaults(handler=_ui)


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us when the supervising process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class _Child:
    name: str
    argv: list[str]
    url: str
    health: str
    proc: subprocess.Popen[bytes] | None = field(default=None)


def _child_env(settings: Any) -> dict[str, str]:
    env = dict(os.environ)
    lake = settings.lake_uri
    if "://" not in lake:
        lake = str(Path(lake).resolve())
    env["LAKEOPS_LAKE"] = lake
    if settings.config_path:
        env["LAKEOPS_CONFIG"] = str(Path(settings.config_path).resolve())
    env["LAKEOPS_API_HOST"] = settings.api_host
    env["LAKEOPS_API_PORT"] = str(settings.api_port)
    env["LAKEOPS_UI_PORT"] = str(settings.ui_port)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _check_ports(settings: Any, *, api: bool = True, ui: bool = True) -> None:
    """Refuse, in one line and before anything starts, a port that is taken (or used twice)."""
    wanted = []
    if api:
        wanted.append(("API", settings.api_host, settings.api_port, "--api-port or LAKEOPS_API_PORT"))
    if ui:
        wanted.append(("UI", "127.0.0.1", settings.ui_port, "--ui-port or LAKEOPS_UI_PORT"))
    if len({port for _, _, port, _ in wanted}) < len(wanted):
        raise ConfigError(f"the API and the UI cannot share port {settings.api_port}: choose another with --ui-port")
    for what, host, port, how in wanted:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(
                    f"port {port} for the {what} on {host} is in use ({exc.strerror}): stop what uses it, "
                    f"or choose another with {how}"
                ) from None


def _streamlit_argv(settings: Any) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(_ROOT / "app.py"),
        "--server.address", "127.0.0.1",
        "--server.port", str(settings.ui_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",  # no Deploy button or developer menu for users
    ]  # fmt: skip


def _children(settings: Any, args: argparse.Namespace) -> list[_Child]:
    api = f"http://{settings.api_host}:{settings.api_port}"
    ui = f"http://127.0.0.1:{settings.ui_port}"
    out = [
        _Child(
            "api",
            [sys.executable, "-m", "core.cli", "serve", "--host", settings.api_host, "--port", str(settings.api_port),
             *(["--insecure"] if getattr(args, "insecure", False) else [])],
            api,
            f"{api}/ready",
        )
    ]
    if not args.no_scheduler:
        out.append(_Child("scheduler", [sys.executable, "-m", "jobs"], "(background jobs)", ""))
    if not args.no_ui:
        out.append(_Child("ui", _streamlit_argv(settings), ui, f"{ui}/_stcore/health"))
    return out


def _wait_healthy(child: _Child, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert child.proc is not None
        if child.proc.poll() is not None:
            raise LakeopsError(f"{child.name} exited with code {child.proc.returncode} while starting")
        if not child.health:
            return
        try:
            with urllib.request.urlopen(child.health, timeout=2) as resp:  # noqa: S310 - loopback URL we built
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3)
    raise LakeopsError(f"{child.name} did not become ready at {child.health} within {_START_TIMEOUT_S:.0f} s")


def _stop(children: list[_Child]) -> None:
    """SIGTERM the children (scheduler first, UI last), wait, then SIGKILL stragglers."""
    order = {"scheduler": 0, "api": 1, "ui": 2}
    running = [c for c in sorted(children, key=lambda c: order.get(c.name, 9)) if c.proc and c.proc.poll() is None]
    for c in running:
        assert c.proc is not None
        c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for c in running:
        assert c.proc is not None
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"lakeops: {c.name} did not stop within {_GRACE_S:.0f} s; killing it\n")
            c.proc.kill()
            c.proc.wait()


def _up(args: argparse.Namespace) -> int:
    from core.lake import Lake

    settings = settings_from(args)
    ports = {"api_port": args.api_port, "ui_port": args.ui_port}
    settings = settings.with_(**{k: v for k, v in ports.items() if v is not None})
    from core.cli.serve import check_bind

    check_bind(settings, insecure=args.insecure)
    _check_ports(settings, ui=not args.no_ui)
    lake = Lake.from_settings(settings, create=True)
    print(f"lakeops: lake at {lake.uri}", flush=True)  # noqa: T201
    if not args.no_seed:
        from core.auth import acting_as, system_principal
        from core.flows.seed import seed_demo

        with acting_as(system_principal("lakeops-up:seed")):  # with auth on: automation, not a person
            outcome = seed_demo(lake=lake, settings=settings, log=lambda m: print(f"lakeops: {m}", flush=True))  # noqa: T201
        if outcome is None:
            print("lakeops: reusing the existing lake (champion already registered)", flush=True)  # noqa: T201

    children = _children(settings, args)
    env = _child_env(settings)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        for c in children:
            c.proc = subprocess.Popen(c.argv, env=env, cwd=_ROOT, preexec_fn=_die_with_parent)  # noqa: PLW1509
        deadline = time.monotonic() + _START_TIMEOUT_S
        for c in children:
            _wait_healthy(c, deadline)
        print("lakeops: up", flush=True)  # noqa: T201
        for c in children:
            print(f"  {c.name:<10} {c.url}", flush=True)  # noqa: T201
        print("lakeops: press Ctrl-C to stop", flush=True)  # noqa: T201
        while not stop["signal"]:
            dead = [(c.name, rc) for c in children if c.proc is not None and (rc := c.proc.poll()) is not None]
            if dead:
                sys.stderr.write(f"lakeops: {dead[0][0]} exited unexpectedly (code {dead[0][1]}); stopping\n")
                code = 1
                break
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(children)
    print("lakeops: stopped", flush=True)  # noqa: T201
    return code


def _ui(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _check_ports(settings, api=False)
    proc = subprocess.Popen(_streamlit_argv(settings), env=_child_env(settings), cwd=_ROOT, preexec_fn=_die_with_parent)  # noqa: PLW1509
    print(f"lakeops: UI at http://127.0.0.1:{settings.ui_port}", flush=True)  # noqa: T201
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()
