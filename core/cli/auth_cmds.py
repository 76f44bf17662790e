"""``lakeops tokens create|list|revoke`` and ``lakeops config`` (the settings in force, secrets masked).

Tokens are managed by an admin (``LAKEOPS_TOKEN`` holding the ``admin`` scope). While the lake has
no active admin token, anyone who can write the lake may create one (the bootstrap: whoever can
write the lake could write the table directly anyway); the event then names the OS user.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.cli._common import emit_frame, open_lake, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``tokens`` and ``config`` to ``sub``."""
    tokens = sub.add_parser("tokens", help="API/UI/CLI tokens: create (shown once), list, revoke")
    tsub = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", parser_class=type(tokens))

    p = tsub.add_parser("create", help="create a token for a principal; it is printed once and stored only as a salted hash")
    p.add_argument("principal", help="who the token names (recorded as the actor of what it does), e.g. alice")
    p.add_argument("--scope", action="append", required=True, choices=["predict", "feedback", "read", "admin"],
                   help="repeat for several: predict, feedback, read, admin (admin implies the others)")
    p.add_argument("--role", action="append", default=[], help="a role promotion policies may name as role:NAME")
    p.add_argument("--expires-days", type=float, default=None, help="expire after this many days (default: never)")
    p.add_argument("--reason", default=None, help="why, optional (recorded with the token; revoking requires one)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=_create)

    p = tsub.add_parser("list", help="tokens with principal, scopes, roles and status (never a secret or hash)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_list)

    p = tsub.add_parser("revoke", help="revoke a token: every API replica refuses it after its next poll")
    p.add_argument("token_id", help="the token's id (lakeops tokens list), not the token itself")
    p.add_argument("--reason", required=True, help="why (recorded)")
    p.set_defaults(handler=_revoke)

    p = sub.add_parser("config", help="show the settings in force (secrets masked) and where they came from")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=_config)


def _admin(args: argparse.Namespace, what: str) -> tuple[Any, str]:
    """The lake and the actor for a token change: an admin principal, or the bootstrap."""
    from core import auth

    settings = settings_from(args)
    lake = open_lake(args, create=True)
    if not auth.has_active_admin(lake=lake):
        return lake, f"{settings.actor} (bootstrap)"
    if not settings.token:
        from core.errors import AuthenticationError

        raise AuthenticationError(f"to {what}, set LAKEOPS_TOKEN to an admin's token (this lake has admin tokens)",
                                  "missing")
    principal = auth.require_scope(auth.authenticate(settings.token, lake=lake), "admin", what)
    return lake, principal.name


def _create(args: argparse.Namespace) -> int:
    from core import auth

    lake, actor = _admin(args, "create tokens")
    token, public = auth.create_token(args.principal, args.scope, roles=args.role, expires_days=args.expires_days,
                                      actor=actor, reason=args.reason, lake=lake)
    if args.format == "json":
        sys.stdout.write(json.dumps({**public, "token": token}, default=str) + "\n")
    else:
        expires = public["expires_at"].isoformat(timespec="minutes") if public["expires_at"] else "never"
        sys.stdout.write(f"{token}\n")
        sys.stderr.write(f"token {public['token_id']} for {args.principal} (scopes {', '.join(public['scopes'])}"
                         f"{'; roles ' + ', '.join(public['roles']) if public['roles'] else ''}; expires {expires}): "
                         "store it now, it is shown once and only a salted hash is kept. Use it as "
                         "'Authorization: Bearer <token>' on the API, LAKEOPS_TOKEN for the CLI, or the UI's login\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    from core import auth

    lake, _ = _admin(args, "list tokens")
    emit_frame(auth.list_tokens(lake=lake), args.format)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from core import auth

    lake, actor = _admin(args, "revoke tokens")
    out = auth.revoke_token(args.token_id, actor=actor, reason=args.reason, lake=lake)
    sys.stdout.write(f"revoked token {out['token_id']} of {out['principal']}; API replicas refuse it after their next "
                     "poll ([serving] poll_interval_s)\n")
    return 0


def _config(args: argparse.Namespace) -> int:
    from core import auth

    settings = settings_from(args)
    shown = settings.redacted()
    shown["auth"] = {k: v for k, v in auth.auth_config(settings).__dict__.items() if k != "users"}
    shown["auth"]["users"] = sorted(auth.auth_config(settings).users)
    if args.format == "json":
        sys.stdout.write(json.dumps(shown, default=str, indent=1) + "\n")
        return 0
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        sys.stdout.write(f"{key:<{width}}  {json.dumps(value, default=str) if not isinstance(value, str) else value}\n")
    return 0
