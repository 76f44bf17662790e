"""Shared pieces of the CLI: the one-line-error parser, settings, lake opening, table output."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import polars as pl

from core.config import Settings, load_settings
from core.errors import LakeopsError

__all__ = [
    "CliParser", "command_key", "emit_frame", "one_line", "open_lake", "render_table", "run_handler", "settings_from",
    "sign_in",
]


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"lakeops: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


Handler = Callable[[argparse.Namespace], int | None]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(text: str) -> str:
    """An error text as one plain line: terminal colour codes (some libraries add them) and newlines removed."""
    return " ".join(_ANSI.sub("", text).split())


def _loaded(args: argparse.Namespace) -> Settings:
    """The CLI's one settings resolver: environment + TOML with ``--lake``/``--config``, read once per command."""
    cached = getattr(args, "_lakeops_settings", None)
    if isinstance(cached, Settings):
        return cached
    overrides: dict[str, Any] = {}
    if getattr(args, "lake", None):
        overrides["lake_uri"] = args.lake
    settings = load_settings(config_path=getattr(args, "config", None), **overrides)
    args._lakeops_settings = settings  # the parsed command carries what it resolved
    return settings


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and config file, with ``--lake`` winning.

    With auth on, the actor is the principal ``sign_in`` authenticated (``LAKEOPS_TOKEN``),
    never ``LAKEOPS_ACTOR`` or the OS user.
    """
    from core import auth

    settings = _loaded(args)
    who = auth.current_principal()
    if who is not None and auth.enabled(settings):
        settings = settings.with_(actor=who.name)
    return settings


# What a command needs when auth is on. "none": it touches no lake data on anyone's behalf, or
# it is a service that authenticates each request itself (serve, ui, scheduler, up), or it checks
# by itself (tokens); "read": a token with the read scope; "token": any valid token, the model's
# policy decides in core.flows (promote, approve ...); anything not listed needs "admin".
_NEEDS: dict[str, str] = {
    "up": "none", "ui": "none", "scheduler": "none", "demo": "none", "simulate": "none", "config": "none",
    "tokens": "none", "serve run": "none", "serve status": "none",
    "sql": "read", "tables": "read", "history": "read", "data list": "read", "data show": "read",
    "data diff": "read", "data quarantine": "read", "runs list": "read", "runs show": "read", "runs compare": "read",
    "models list": "read", "models show": "read", "models history": "read", "jobs list": "read",
    "jobs history": "read", "drift history": "read", "alerts list": "read",
    "features list": "read", "features show": "read", "features get": "read", "features lineage": "read",
    "features check-skew": "read",
    "models evaluate": "token", "models approve": "token", "models reject": "token", "models promote": "token",
    "models rollback": "token", "models alias": "token", "models stage": "token", "models unstage": "token",
    "models rollout": "token", "models policy": "token",
}
_SUBCOMMAND_DESTS = ("data_command", "models_command", "runs_command", "jobs_command", "drift_command",
                     "alerts_command", "demo_command", "tokens_command", "features_command")


def command_key(args: argparse.Namespace) -> str:
    """``models promote``, ``serve run``, ``sql``: the command as typed, without its arguments."""
    parts = [str(getattr(args, "command", "") or "")]
    parts += [str(v) for d in _SUBCOMMAND_DESTS if (v := getattr(args, d, None))]
    if parts[0] == "serve":
        parts.append(str(getattr(args, "action", "run")))
    return " ".join(p for p in parts if p)


def sign_in(args: argparse.Namespace) -> None:
    """With auth on, authenticate ``LAKEOPS_TOKEN`` and make its principal the one who acts.

    Raises:
        AuthenticationError: no token, or a malformed, unknown, revoked or expired one.
        PermissionDeniedError: the token lacks the scope the command needs (``read`` or ``admin``).
    """
    from core import auth
    from core.lake import Lake

    settings = settings_from(args)
    key = command_key(args)
    needs = _NEEDS.get(key, _NEEDS.get(key.split(" ", 1)[0], "admin"))
    if not auth.enabled(settings) or needs == "none":
        return
    principal = auth.authenticate(settings.token, lake=Lake.from_settings(settings, create=False))
    if needs != "token":
        auth.require_scope(principal, needs, f"run 'lakeops {key}'")
    auth.set_principal(principal)


def open_lake(args: argparse.Namespace, *, create: bool = False) -> Any:
    """Open the lake named by ``args``/settings (not created unless ``create``)."""
    from core.lake import Lake

    return Lake.from_settings(settings_from(args), create=create)


def run_handler(args: argparse.Namespace) -> int:
    """Call ``args.handler``; map a ``LakeopsError`` to one stderr line and exit code 2."""
    try:
        sign_in(args)
        code = args.handler(args)
    except LakeopsError as exc:
        sys.stderr.write(f"lakeops: error: {one_line(str(exc))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("lakeops: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    return int(code or 0)


def render_table(frame: pl.DataFrame, *, max_width: int = 60) -> str:
    """Render a frame as an aligned plain-text table (header, rule, rows)."""
    cols = frame.columns
    if not cols:
        return "(no columns)"

    def cell(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, float):
            text = f"{v:.6g}"
        elif isinstance(v, (dict, list)):
            text = json.dumps(v, default=str)
        else:
            text = str(v)
        text = text.replace("\n", " ")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    rows = [[cell(v) for v in row] for row in frame.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    numeric = [frame.schema[c].is_numeric() for c in cols]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append(f"({frame.height} row{'s' if frame.height != 1 else ''})")
    return "\n".join(out)


def emit_frame(frame: pl.DataFrame, fmt: str = "table") -> None:
    """Write ``frame`` to stdout as an aligned table, csv, json (array of objects) or parquet."""
    if fmt == "table":
        sys.stdout.write(render_table(frame) + "\n")
    elif fmt == "csv":
        sys.stdout.write(_csv_safe(frame).write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(frame.to_dicts(), default=str) + "\n")
    elif fmt == "parquet":
        buf = io.BytesIO()
        frame.write_parquet(buf)
        sys.stdout.flush()
        sys.stdout.buffer.write(buf.getvalue())
    else:
        raise LakeopsError(f"unknown format {fmt!r}: use table, csv, json or parquet")


def _csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV cannot hold nested values: write them as JSON text."""
    nested = [c for c, t in frame.schema.items() if t.is_nested()]
    if not nested:
        return frame
    return frame.with_columns(
        pl.col(c).map_elements(lambda v: json.dumps(v, default=str), return_dtype=pl.String) for c in nested
    )
