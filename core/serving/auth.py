"""Who may call the API: bearer tokens checked by a Litestar guard on every route, cached for the fast path.

With ``[auth] mode = "tokens"`` every route needs a token holding its scope: predict ``predict``,
feedback ``feedback``, the model routes ``read``; ``/health`` is open, ``/ready`` open by default,
``/metrics`` and the OpenAPI schema need ``read`` by default (``[auth] ready|metrics|schema``,
``core.auth.AuthConfig``). A refusal is an RFC 9457 problem: 401 ``unauthenticated`` (with
``WWW-Authenticate: Bearer``) when the token is missing, malformed, unknown, wrong, revoked or
expired, 403 ``forbidden`` when it lacks the scope; each is counted in
``lakeops_auth_failures_total{reason}``.

A token is verified once per worker (scrypt, ~40 ms, in a thread, one at a time so a flood of
bad tokens costs at most one core's share), then its ``Authorization`` header value maps to the
principal in memory: the predict fast path (``core.serving.app._FastPredict``) does one dict
lookup and one set membership test per request and hands anything else (no token, a token not
verified yet, a refusal) to Litestar, whose guard answers it. A thread re-reads the ``tokens``
table every ``[serving] poll_interval_s`` (one listing of its log when nothing changed) and
forgets revoked tokens, so a revocation takes effect on every replica within that interval. A
token id not seen yet (created since the last poll) makes the worker re-read the table at once,
at most once per poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from core.auth import AuthConfig, Principal, TokenStore, auth_config, parse_token
from core.config import Settings
from core.errors import AuthenticationError, LakeopsError, PermissionDeniedError
from core.lake import Lake
from core.serving.metrics import Metrics

__all__ = ["ApiAuth", "authorization_header"]

_log = logging.getLogger("lakeops.serving")
_VERIFIED_MAX = 10_000
_FAILED_MAX = 1_024


def authorization_header(scope: Any) -> bytes | None:
    """The raw ``Authorization`` header of an ASGI scope, or None."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            return bytes(value)
    return None


class ApiAuth:
    """Authentication of one worker's requests (only built when auth is on).

    Args:
        settings: settings with the ``[auth]`` section.
        lake: the lake holding the ``tokens`` table.
        metrics: where refusals are counted.
        poll_interval_s: how often the ``tokens`` table is re-read.
    """

    def __init__(self, settings: Settings, lake: Lake, metrics: Metrics, poll_interval_s: float) -> None:
        self.config: AuthConfig = auth_config(settings)
        self.store = TokenStore(lake)
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self._verified: dict[bytes, Principal] = {}
        self._failed: OrderedDict[bytes, AuthenticationError] = OrderedDict()
        self._verifying = asyncio.Semaphore(1)
        self._catching_up = asyncio.Lock()
        self._forced = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="lakeops-tokens", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Read the tokens once and start polling."""
        try:
            self.store.refresh()
        except LakeopsError as exc:  # the lake is down at start: tokens are read at the next poll
            _log.warning("auth: cannot read the tokens table yet: %s", exc)
        if not self.store.active_ids():
            _log.warning("auth is on but this lake has no active token: every request is refused until an admin "
                         "runs 'lakeops tokens create NAME --scope predict'")
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - a poll failure must never stop serving
                _log.warning("auth: could not re-read the tokens table: %s", exc)

    def _refresh(self) -> None:
        if self.store.refresh():
            active = self.store.active_ids()
            # one atomic swap: the event loop reads the old or the new dict, never a half-pruned one
            self._verified = {h: p for h, p in self._verified.items() if p.token_id in active}

    # ------------------------------------------------------------------ checks
    def fast(self, header: bytes | None, scope: str) -> bool:
        """Whether ``header`` carries a token already verified by this worker that holds ``scope``."""
        p = self._verified.get(header)  # type: ignore[arg-type]
        return p is not None and scope in p.granted and (p.expires_at is None or p.expires_at > time.time())

    async def check(self, header: bytes | None, scope: str) -> Principal:
        """Authenticate ``header`` and require ``scope``; every refusal is counted.

        Raises:
            AuthenticationError: 401 (missing, malformed, unknown, invalid, revoked, expired).
            PermissionDeniedError: 403 (the principal lacks the scope).
        """
        try:
            principal = await self._principal(header)
        except AuthenticationError as exc:
            self.metrics.auth_failed(exc.reason)
            raise
        if not principal.allows(scope):
            self.metrics.auth_failed("forbidden")
            raise PermissionDeniedError(
                f"{principal.name} may not call this route: it needs the {scope!r} scope; the token has "
                f"{', '.join(sorted(principal.scopes)) or 'none'} (an admin creates one with the scope)")
        return principal

    async def _principal(self, header: bytes | None) -> Principal:
        if not header:
            raise AuthenticationError(
                "this route needs a token: send 'Authorization: Bearer <token>' (an admin creates one with "
                "'lakeops tokens create NAME --scope ...')", "missing")
        hit = self._verified.get(header)
        if hit is not None:
            if hit.expires_at is not None and hit.expires_at <= time.time():
                self._verified.pop(header, None)
                raise AuthenticationError(f"token {hit.token_id} of {hit.name} has expired", "expired")
            return hit
        failed = self._failed.get(header)
        if failed is not None:
            raise AuthenticationError(str(failed), failed.reason)
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("the Authorization header must be 'Bearer <token>'", "malformed")
        tid, _ = parse_token(token)
        if not self.store.known(tid):
            await self._catch_up(tid)
        try:
            async with self._verifying:  # scrypt costs ~40 ms of CPU: one at a time per worker
                principal = await asyncio.to_thread(self.store.verify, token)
        except AuthenticationError as exc:
            if exc.reason != "unknown":  # a wrong, revoked or expired token stays refused: no second scrypt
                self._failed[header] = exc
                while len(self._failed) > _FAILED_MAX:
                    self._failed.popitem(last=False)
            raise
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified = {}
        self._verified[header] = principal
        return principal

    async def _catch_up(self, tid: str) -> None:
        """A token id this worker has not seen: created since the last poll? Re-read the table now,
        at most once per poll interval (a request waits for its turn rather than adding lake reads)."""
        async with self._catching_up:
            if self.store.known(tid):
                return
            wait = self._forced + self.poll_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._forced = time.monotonic()
            await asyncio.to_thread(self._refresh)

    def guard(self) -> Callable[[Any, Any], Awaitable[None]]:
        """The Litestar guard: the route's ``opt["scope"]`` (None: open; absent: the schema's setting)."""
        default = self.config.route_scope("schema")

        async def _guard(connection: Any, handler: Any) -> None:
            scope = handler.opt.get("scope", default)
            if scope is None:
                return
            principal = await self.check(authorization_header(connection.scope), scope)
            connection.scope["lakeops_principal"] = principal

        return _guard
