"""Identity: bearer tokens with scopes, principals, the ``[auth]`` section, and who acts right now.

With ``[auth] mode = "tokens"`` (or ``LAKEOPS_AUTH=tokens``) every API request, UI session and
CLI command acts as a *principal*: a name with *scopes* (``predict``, ``feedback``, ``read``,
``admin``; ``admin`` implies the others) and free-form *roles* that promotion policies may name
(``role:ml-lead``; a principal's scopes count as roles too, so ``role:admin`` works).

Tokens look like ``lko_<token id>_<secret>``: the id (16 hex digits) is public and picks the
record; the secret (256 random bits, ``secrets.token_urlsafe(32)``) is shown once by ``lakeops
tokens create`` and stored nowhere. The ``tokens`` table keeps a random 16-byte salt and
``hashlib.scrypt(secret, salt, n=2**14, r=8, p=1)``; a presented secret is hashed the same way
and compared with ``hmac.compare_digest`` (constant time). scrypt costs ~40 ms and 16 MB per
check, so the API verifies a token once per worker and keeps the verified principal in memory
(``core.serving.auth``); a secret of 256 random bits cannot be guessed from its hash whatever the
hash costs, the cost is defence in depth.

*Where tokens live:* in the lake (table ``tokens``, append-only ``create``/``revoke`` events),
not in a file: every process that shares the lake (each API replica, the UI, the CLI, on every
machine of an ``s3://`` lake) sees the same tokens, a revocation reaches every replica within its
poll interval with nothing to copy around, and who created or revoked which token is an audit
trail like the registry's. The price: whoever may write the lake may add a token, but such a
person can already write registry events directly; lake credentials stay the root of trust.

Who acts is a context variable (``acting_as``, ``current_principal``): the CLI sets it from
``LAKEOPS_TOKEN``, the UI from its login, the scheduler to a *system* principal
(``scheduler:<job>``); ``core.flows`` checks it against the model's policy and records its name
as the actor of every event.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from core.config import Settings
from core.errors import AuthenticationError, ConfigError, NotFoundError, PermissionDeniedError
from core.ids import utcnow
from core.lake import Lake

__all__ = [
    "ROUTE_SETTINGS",
    "SCOPES",
    "TABLE",
    "TOKEN_PREFIX",
    "AuthConfig",
    "Principal",
    "TokenStore",
    "acting_as",
    "auth_config",
    "authenticate",
    "create_token",
    "current_principal",
    "enabled",
    "has_active_admin",
    "list_tokens",
    "oidc_principal",
    "parse_token",
    "require_scope",
    "revoke_token",
    "set_principal",
    "system_principal",
]

SCOPES = ("predict", "feedback", "read", "admin")
TOKEN_PREFIX = "lko_"
TABLE = "tokens"
ROUTE_SETTINGS = ("ready", "metrics", "schema")
_KDF = "scrypt:n=16384,r=8,p=1"
_KDF_RE = re.compile(r"scrypt:n=(\d+),r=(\d+),p=(\d+)")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
_ROLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_RESERVED = ("scheduler:", "role:", "system:")


# ---------------------------------------------------------------------------- principals
@dataclass(frozen=True)
class Principal:
    """Who acts: a name with scopes and roles.

    Attributes:
        name: the principal's name, recorded as the actor of everything it does.
        scopes: API scopes (``SCOPES``); ``admin`` grants every scope.
        roles: free-form role names a promotion policy may list as ``role:<name>``.
        token_id: the token it authenticated with (None for OIDC and system principals).
        kind: ``token``, ``oidc`` or ``system`` (automation: the scheduler, the demo seed).
        expires_at: when its credential expires (epoch seconds), or None.
    """

    name: str
    scopes: frozenset[str]
    roles: frozenset[str] = frozenset()
    token_id: str | None = None
    kind: str = "token"
    expires_at: float | None = None
    granted: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "granted", frozenset(SCOPES) if "admin" in self.scopes else frozenset(self.scopes))

    def allows(self, scope: str) -> bool:
        """Whether the principal holds ``scope`` (``admin`` holds every scope)."""
        return scope in self.granted

    @property
    def memberships(self) -> frozenset[str]:
        """Scopes and roles: what ``role:<name>`` entries of a policy are matched against."""
        return self.scopes | self.roles

    @property
    def system(self) -> bool:
        """Automation (the scheduler): acts as its policy's flags allow, never as a person."""
        return self.kind == "system"

    def describe(self) -> str:
        """``alice (admin; roles ml-lead)``: for the UI's sign-in line and CLI messages."""
        roles = f"; roles {', '.join(sorted(self.roles))}" if self.roles else ""
        return f"{self.name} ({', '.join(s for s in SCOPES if s in self.scopes) or 'no scope'}{roles})"


def system_principal(name: str) -> Principal:
    """The principal of automation (``scheduler:<job>``, ``lakeops up`` seeding the demo)."""
    return Principal(name=name, scopes=frozenset({"admin"}), kind="system")


_current: ContextVar[Principal | None] = ContextVar("lakeops_principal", default=None)


def current_principal() -> Principal | None:
    """The principal acting in this context, or None (auth off, or nobody signed in)."""
    return _current.get()


def set_principal(principal: Principal | None) -> None:
    """Set who acts for the rest of this context (the CLI: once per process)."""
    _current.set(principal)


@contextlib.contextmanager
def acting_as(principal: Principal | None) -> Iterator[Principal | None]:
    """Run a block as ``principal`` (a page's action, a scheduled job)."""
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)


def require_scope(principal: Principal | None, scope: str, what: str) -> Principal:
    """Return ``principal`` if it holds ``scope``; else raise.

    Raises:
        AuthenticationError: nobody is signed in.
        PermissionDeniedError: the principal lacks the scope.
    """
    if principal is None:
        raise AuthenticationError(f"{what} needs a signed-in principal: set LAKEOPS_TOKEN to a token", "missing")
    if not principal.allows(scope):
        raise PermissionDeniedError(f"{principal.name} may not {what}: it needs the {scope!r} scope "
                                    f"(has {', '.join(sorted(principal.scopes)) or 'none'})")
    return principal


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AuthConfig:
    """The ``[auth]`` section.

    Attributes:
        mode: ``off`` or ``tokens`` (``Settings.auth_mode``).
        ready: who may read ``/ready``: ``"open"`` (default: load balancers probe it without a
            token) or a scope.
        metrics: who may read ``/metrics``: a scope (default ``"read"``; Prometheus sends a
            bearer token with ``authorization`` in its scrape config) or ``"open"``.
        schema: who may read the OpenAPI schema under ``/schema``: a scope (default ``"read"``;
            it names every model's features) or ``"open"``.
        ui: how the UI signs people in: ``"token"`` (default: a token login form) or ``"oidc"``
            (Streamlit's ``st.login`` with the identity provider in ``.streamlit/secrets.toml``'s
            ``[auth]``; a person is named by their e-mail).
        oidc_default_scopes: scopes of an OIDC user not listed in ``users`` (default ``["read"]``;
            ``[]`` refuses them).
        users: OIDC users' scopes and roles by e-mail: ``[auth.users."ana@example.com"]
            scopes = ["admin"], roles = ["ml-lead"]``.
    """

    mode: str = "off"
    ready: str = "open"
    metrics: str = "read"
    schema: str = "read"
    ui: str = "token"
    oidc_default_scopes: tuple[str, ...] = ("read",)
    users: Mapping[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)

    @property
    def on(self) -> bool:
        """Whether authentication is required."""
        return self.mode == "tokens"

    def route_scope(self, route: str) -> str | None:
        """The scope ``/ready``, ``/metrics`` or ``/schema`` needs (None: open)."""
        value = getattr(self, route)
        return None if value == "open" else value


def enabled(settings: Settings) -> bool:
    """Whether authentication is on for these settings."""
    return settings.auth_mode == "tokens"


def _scopes(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"{where} must be a list of scopes ({', '.join(SCOPES)}), got {value!r}")
    out = frozenset(str(v) for v in value)
    bad = sorted(out - set(SCOPES))
    if bad:
        raise ConfigError(f"{where}: unknown scope(s) {', '.join(bad)}; scopes are {', '.join(SCOPES)}")
    return out


def _roles(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"{where} must be a list of role names, got {value!r}")
    out = frozenset(str(v) for v in value)
    for r in out:
        if not _ROLE_RE.match(r):
            raise ConfigError(f"{where}: role {r!r} must be letters, digits, '_', '.' or '-' (up to 64)")
    return out


def auth_config(settings: Settings) -> AuthConfig:
    """Parse ``[auth]`` (the mode comes from ``Settings.auth_mode``: env wins over the file).

    Raises:
        ConfigError: an unknown key or a bad value, naming it.
    """
    raw = settings.section("auth")
    known = {"mode", *ROUTE_SETTINGS, "ui", "oidc_default_scopes", "users"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[auth]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kw: dict[str, Any] = {"mode": settings.auth_mode}
    for key in ROUTE_SETTINGS:
        if key in raw:
            value = str(raw[key])
            if value != "open" and value not in SCOPES:
                raise ConfigError(f"[auth] {key} must be \"open\" or a scope ({', '.join(SCOPES)}), got {raw[key]!r}")
            kw[key] = value
    if "ui" in raw:
        if raw["ui"] not in ("token", "oidc"):
            raise ConfigError(f"[auth] ui must be \"token\" or \"oidc\", got {raw['ui']!r}")
        kw["ui"] = raw["ui"]
    if "oidc_default_scopes" in raw:
        kw["oidc_default_scopes"] = tuple(sorted(_scopes(raw["oidc_default_scopes"], "[auth] oidc_default_scopes")))
    users: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for email, entry in dict(raw.get("users", {})).items():
        where = f"[auth.users.{email!r}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table with scopes and roles")
        extra = sorted(set(entry) - {"scopes", "roles"})
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}; use scopes, roles")
        users[str(email).lower()] = (_scopes(entry.get("scopes", []), f"{where} scopes"),
                                     _roles(entry.get("roles", []), f"{where} roles"))
    kw["users"] = users
    return AuthConfig(**kw)


def oidc_principal(config: AuthConfig, email: str | None, name: str | None = None) -> Principal:
    """The principal of a person the identity provider signed in (named by e-mail).

    Raises:
        AuthenticationError: no e-mail from the provider.
        PermissionDeniedError: not listed in ``[auth.users]`` and ``oidc_default_scopes`` is empty.
    """
    if not email:
        raise AuthenticationError("the identity provider did not say who you are (no e-mail claim)", "missing")
    key = email.strip().lower()
    scopes, roles = config.users.get(key, (frozenset(config.oidc_default_scopes), frozenset()))
    if not scopes and not roles:
        raise PermissionDeniedError(f"{key} is signed in but has no access: an admin adds them to [auth.users]")
    return Principal(name=key, scopes=scopes, roles=roles, kind="oidc")


# ---------------------------------------------------------------------------- the token table
def _hash(secret: str, salt: bytes, kdf: str) -> bytes:
    m = _KDF_RE.fullmatch(kdf)
    if m is None:
        raise AuthenticationError(f"token record uses an unknown key derivation {kdf!r}", "invalid")
    n, r, p = (int(x) for x in m.groups())
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def parse_token(token: str) -> tuple[str, str]:
    """Split ``lko_<id>_<secret>`` into ``(id, secret)``.

    Raises:
        AuthenticationError: not of that form (``malformed``); the message never repeats the token.
    """
    if not token.startswith(TOKEN_PREFIX):
        raise AuthenticationError("malformed token: lakeops tokens start with 'lko_' (lakeops tokens create)", "malformed")
    tid, _, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not _ID_RE.match(tid) or len(secret) < 20:
        raise AuthenticationError("malformed token: expected lko_<16 hex digits>_<secret>", "malformed")
    return tid, secret


@dataclass(frozen=True)
class _Record:
    token_id: str
    principal: str
    scopes: frozenset[str]
    roles: frozenset[str]
    kdf: str
    salt: bytes
    digest: bytes
    expires_at: datetime | None
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _records(frame: pl.DataFrame) -> dict[str, _Record]:
    """Replay ``create``/``revoke`` events into the current record of every token."""
    out: dict[str, _Record] = {}
    for ev in frame.sort("at").iter_rows(named=True):
        tid = ev["token_id"]
        if ev["event"] == "create" and tid not in out:
            out[tid] = _Record(tid, ev["principal"], frozenset(ev["scopes"] or ()), frozenset(ev["roles"] or ()),
                               ev["kdf"], bytes.fromhex(ev["salt"]), bytes.fromhex(ev["hash"]), ev["expires_at"],
                               ev["at"], ev["actor"])
        elif ev["event"] == "revoke" and tid in out and out[tid].revoked_at is None:
            rec = out[tid]
            out[tid] = _Record(**{**rec.__dict__, "revoked_at": ev["at"], "revoked_by": ev["actor"]})
    return out


def _verify(records: Mapping[str, _Record], token: str, now: datetime) -> Principal:
    tid, secret = parse_token(token)
    rec = records.get(tid)
    if rec is None:
        raise AuthenticationError(f"unknown token {tid}: it was never created in this lake", "unknown")
    # Hash first, whatever the record's state: every known id costs the same to check.
    ok = hmac.compare_digest(_hash(secret, rec.salt, rec.kdf), rec.digest)
    if not ok:
        raise AuthenticationError(f"invalid token {tid}: the secret does not match", "invalid")
    state = rec.status(now)
    if state != "active":
        when = rec.revoked_at if state == "revoked" else rec.expires_at
        raise AuthenticationError(f"token {tid} of {rec.principal} was {state} at {when:%Y-%m-%d %H:%M} UTC", state)
    return Principal(rec.principal, rec.scopes, rec.roles, tid, "token",
                     rec.expires_at.timestamp() if rec.expires_at is not None else None)


class TokenStore:
    """The lake's tokens, held in memory and refreshed when the ``tokens`` table has a new commit.

    Args:
        lake: the lake holding the ``tokens`` table.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._version = -2
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Re-read the table when it has a new commit (one listing of its log otherwise).

        Returns:
            Whether the tokens changed.
        """
        v = self.lake.latest_version_hint(TABLE)
        if v == self._version:
            return False
        frame = self.lake.read(TABLE) if v >= 0 else pl.DataFrame()
        records = _records(frame) if frame.height else {}
        with self._lock:
            self._records, self._version = records, v
        return True

    def known(self, token_id: str) -> bool:
        """Whether a token of that id exists (in the last refresh)."""
        return token_id in self._records

    def active_ids(self) -> frozenset[str]:
        """Ids of the tokens neither revoked nor expired now."""
        now = utcnow()
        return frozenset(t for t, r in self._records.items() if r.status(now) == "active")

    def verify(self, token: str) -> Principal:
        """Check a presented token (scrypt + constant-time compare) and return its principal.

        Raises:
            AuthenticationError: malformed, unknown, invalid, revoked or expired (``reason``).
        """
        return _verify(self._records, token, utcnow())


def authenticate(token: str | None, *, lake: Lake) -> Principal:
    """Verify ``token`` against the lake's ``tokens`` table (one read; for the CLI and the UI).

    Raises:
        AuthenticationError: no token, or malformed, unknown, invalid, revoked or expired.
    """
    if not token:
        raise AuthenticationError("auth is on: set LAKEOPS_TOKEN to your token (an admin creates one with "
                                  "'lakeops tokens create NAME --scope read')", "missing")
    store = TokenStore(lake)
    store.refresh()
    return store.verify(token.strip())


def _check_name(principal: str) -> None:
    if not _NAME_RE.match(principal) or principal.startswith(_RESERVED):
        raise ConfigError(
            f"principal name {principal!r} must be 1-100 letters, digits, '_', '.', '@', '+' or '-', starting "
            "with a letter or digit (e.g. alice or alice@example.com)")


def create_token(
    principal: str,
    scopes: Iterable[str],
    *,
    roles: Iterable[str] = (),
    expires_days: float | None = None,
    actor: str,
    reason: str | None = None,
    lake: Lake,
) -> tuple[str, dict[str, Any]]:
    """Create a token for ``principal``; return the token (shown once) and its public record.

    Only the salt and the scrypt hash of the secret are stored (one ``create`` row).

    Raises:
        ConfigError: a bad principal name, scope, role or expiry (named).
    """
    _check_name(principal)
    granted = _scopes(list(scopes), "--scope")
    if not granted:
        raise ConfigError(f"a token needs at least one scope: --scope with one of {', '.join(SCOPES)}")
    role_set = _roles(list(roles), "--role")
    if expires_days is not None and not expires_days > 0:
        raise ConfigError(f"--expires-days must be > 0, got {expires_days}")
    tid = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = os.urandom(16)
    now = utcnow()
    expires = now + timedelta(days=expires_days) if expires_days is not None else None
    row = {
        "token_id": tid, "event": "create", "principal": principal, "scopes": sorted(granted),
        "roles": sorted(role_set), "kdf": _KDF, "salt": salt.hex(), "hash": _hash(secret, salt, _KDF).hex(),
        "expires_at": expires, "actor": actor, "reason": reason, "at": now,
    }
    lake.append(TABLE, [row], metadata={"actor": actor, "token_id": tid, "event": "create"})
    public = {k: row[k] for k in ("token_id", "principal", "scopes", "roles", "expires_at", "actor", "at")}
    return f"{TOKEN_PREFIX}{tid}_{secret}", public


def revoke_token(token_id: str, *, actor: str, reason: str, lake: Lake) -> dict[str, Any]:
    """Revoke a token (a ``revoke`` row); every API replica refuses it after its next poll.

    Raises:
        NotFoundError: no such token.
        ConfigError: no reason, or the token is already revoked.
    """
    if not (reason or "").strip():
        raise ConfigError('revoking a token needs a reason: pass --reason "..." (it goes into the audit trail)')
    store = TokenStore(lake)
    store.refresh()
    rec = store._records.get(token_id)
    if rec is None:
        raise NotFoundError(f"no token {token_id!r} in this lake; see lakeops tokens list")
    if rec.revoked_at is not None:
        raise ConfigError(f"token {token_id} of {rec.principal} is already revoked (at {rec.revoked_at:%Y-%m-%d %H:%M} UTC)")
    row = {"token_id": token_id, "event": "revoke", "principal": rec.principal, "actor": actor, "reason": reason.strip(),
           "at": utcnow()}
    lake.append(TABLE, [row], metadata={"actor": actor, "token_id": token_id, "event": "revoke"})
    return {"token_id": token_id, "principal": rec.principal, "revoked_by": actor}


def list_tokens(*, lake: Lake) -> pl.DataFrame:
    """Every token's public record and status (``active``, ``revoked``, ``expired``); no hash or salt."""
    frame = lake.read_or_empty(TABLE)
    ts = pl.Datetime("us", "UTC")
    schema: dict[str, pl.DataType] = {
        "token_id": pl.String(), "principal": pl.String(), "scopes": pl.String(), "roles": pl.String(),
        "status": pl.String(), "created_at": ts, "created_by": pl.String(), "expires_at": ts, "revoked_at": ts,
        "revoked_by": pl.String(),
    }
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    now = utcnow()
    rows = [{"token_id": r.token_id, "principal": r.principal, "scopes": ",".join(s for s in SCOPES if s in r.scopes),
             "roles": ",".join(sorted(r.roles)), "status": r.status(now), "created_at": r.created_at,
             "created_by": r.created_by, "expires_at": r.expires_at, "revoked_at": r.revoked_at,
             "revoked_by": r.revoked_by} for r in _records(frame).values()]
    return pl.DataFrame(rows, schema=schema).sort("created_at")


def has_active_admin(*, lake: Lake) -> bool:
    """Whether some active token holds ``admin`` (until one does, the first admin token may be created freely)."""
    tokens = list_tokens(lake=lake)
    return tokens.filter((pl.col("status") == "active") & pl.col("scopes").str.contains("admin")).height > 0
