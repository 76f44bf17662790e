"""The lease: at most one holder per lease name and lake (one scheduler per lake), local or S3.

Design: a compare-and-swap on the Delta log decides who holds which epoch; a heartbeat object
per epoch says until when.

* **Epochs by CAS.** The ``leases`` table holds ``acquire`` and ``release`` events. Each is
  appended with the table version its writer read just before (``base_version``), and the event
  is copied into the commit metadata (key ``lakeops_lease``). Delta commits are atomic and
  totally ordered (a put-if-absent of ``_delta_log/N.json``: a hard link locally, a ``PUT`` with
  ``If-None-Match`` on S3), and ``Lake.append`` returns the version its commit landed at. An event
  **counts** only if it landed at exactly ``base_version + 1``: nothing was committed between
  its writer's read and its commit, so the writer decided on the true current state. The state
  of a lease is its newest counting event, found in the last commits (``Lake.history`` reads
  commit metadata only). Two claimants that both saw a free lease both append; only the first
  commit counts, the other sees on re-reading that it lost and waits. ``epoch`` grows by one
  per acquisition (a fencing token).
* **Renewal by heartbeat.** The holder of epoch ``e`` extends its lease by overwriting the object
  ``_lakeops/leases/<name>/<e>.json`` (expiry, time, info such as next run times) every
  ``ttl/3``; only that holder writes that object, and both stores read their own writes at once.
  Expiry = the later of the acquire event's and the heartbeat's ``expires_at``. So renewals cost
  one small ``PUT``, not a Delta commit (8,640 commits a day at ttl 30 s would slow every read).
* **Why no one else acts meanwhile.** A claimant takes the time *before* it reads the heartbeat
  and only claims when that time is past the expiry it reads. A holder trusts a renewal only if
  its write *completed* before its previous expiry minus a margin (``Lease.held``); otherwise it
  goes back through the CAS (``acquire``), which it wins unless someone claimed first. With
  clocks that agree to within the margin (``min(2 s, ttl/10)``), any claimant reading after the
  expiry sees every renewal the holder trusts, so two holders never overlap; a dead or paused
  holder is taken over once its expiry has passed, and a paused one finds out on waking.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from core.catalog import TABLES
from core.errors import CommitConflictError, ConfigError, TableNotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake

__all__ = ["Lease", "LeaseState", "current_holder"]

_LEASES = "leases"
_META_KEY = "lakeops_lease"
_HOST = socket.gethostname()


@dataclass(frozen=True)
class LeaseState:
    """Who holds a lease (its newest counting event), since when, and until when (heartbeat)."""

    lease: str
    holder: str
    epoch: int
    event: str
    acquired_at: datetime | None
    expires_at: datetime
    at: datetime
    version: int
    info: dict[str, Any] = field(default_factory=dict)

    def active(self, now: datetime | None = None) -> bool:
        """True while the lease is held (not released and not expired)."""
        return self.event != "release" and (now or utcnow()) < self.expires_at


def _heartbeat_path(name: str, epoch: int) -> str:
    return f"_lakeops/leases/{name}/{epoch:012d}.json"


def _read_event(lake: Lake, name: str) -> tuple[int, LeaseState | None]:
    """Return (the table version read, the newest counting event of lease ``name`` or None)."""
    limit = 32
    while True:
        try:
            commits = lake.history(_LEASES, limit)
        except TableNotFoundError:
            return -1, None
        base = int(commits[0]["version"])
        for c in commits:
            raw = c.get(_META_KEY)
            if not raw:
                continue
            ev = json.loads(raw)
            if ev["lease"] == name and int(c["version"]) == int(ev["base_version"]) + 1:
                return base, LeaseState(
                    name,
                    ev["holder"],
                    int(ev["epoch"]),
                    ev["event"],
                    datetime.fromisoformat(ev["acquired_at"]) if ev.get("acquired_at") else None,
                    datetime.fromisoformat(ev["expires_at"]),
                    datetime.fromisoformat(ev["at"]),
                    int(c["version"]),
                    ev.get("info") or {},
                )
        # Nothing counting in the last `limit` commits: look further back (only failed claims
        # and compactions come between counting events, so this stays short).
        if len(commits) < limit or limit >= 4096:
            return base, None
        limit *= 4


def _read_state(lake: Lake, name: str) -> tuple[int, LeaseState | None]:
    """Like ``_read_event``, with the expiry and info of the holder's latest heartbeat applied."""
    base, state = _read_event(lake, name)
    if state is None or state.event == "release":
        return base, state
    try:
        beat = json.loads(lake.get_bytes(_heartbeat_path(name, state.epoch)))
    except FileNotFoundError:
        return base, state
    expires = datetime.fromisoformat(beat["expires_at"])
    if beat.get("holder") != state.holder or expires <= state.expires_at:
        return base, state
    return base, replace(state, expires_at=expires, info=beat.get("info") or state.info)


def current_holder(name: str = "scheduler", *, lake: Lake) -> LeaseState | None:
    """Return the state of lease ``name`` while someone holds it, else None."""
    _, state = _read_state(lake, name)
    return state if state is not None and state.active() else None


class Lease:
    """A named lease in the lake: at most one holder at a time (see the module docstring).

    Args:
        lake: the lake holding the ``leases`` table.
        name: lease name (``"scheduler"``: one scheduler per lake).
        holder: this holder's id (default ``host:pid:random``).
        ttl_s: the lease expires this long after the last acquire or renew.

    Example:
        >>> lease = Lease(lake, ttl_s=30)                      # doctest: +SKIP
        >>> if lease.acquire(): ...  # then lease.renew() every ttl/3 and check lease.held
    """

    def __init__(self, lake: Lake, name: str = "scheduler", holder: str | None = None, ttl_s: float = 30) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"lease ttl_s must be > 0, got {ttl_s}")
        self.lake = lake
        self.name = name
        self.holder_id = holder or f"{_HOST}:{os.getpid()}:{new_id()[-6:]}"
        self.ttl = timedelta(seconds=ttl_s)
        self.margin = timedelta(seconds=min(2.0, ttl_s / 10))
        self.epoch: int | None = None
        self.acquired_at: datetime | None = None
        self.expires_at: datetime | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this holder may act: its last trusted expiry minus the margin is ahead."""
        return self.expires_at is not None and utcnow() < self.expires_at - self.margin

    def holder(self) -> LeaseState | None:
        """Return the current holder's state (None when the lease is free)."""
        return current_holder(self.name, lake=self.lake)

    def acquire(self, info: Mapping[str, Any] | None = None) -> bool:
        """Take the lease if it is free, expired, released or ours (a new epoch); True when held.

        Acquiring a lease this holder already holds just renews it.
        """
        with self._lock:
            if self.held and self._renew(info):
                return True
            return self._acquire(info)

    def renew(self, info: Mapping[str, Any] | None = None) -> bool:
        """Extend our lease by ``ttl``; False when it was lost (someone else holds or held it)."""
        with self._lock:
            if self.epoch is None:
                return False
            if self.held and self._renew(info):
                return True
            # Too late to trust a heartbeat (or it was lost): go through the CAS again; this
            # wins unless someone else claimed the lease first.
            return self._acquire(info)

    def release(self) -> None:
        """Give the lease up now (a waiting holder may take it at once)."""
        with self._lock:
            if self.epoch is None:
                return
            for _ in range(5):
                base, state = _read_event(self.lake, self.name)
                if state is None or state.holder != self.holder_id or state.epoch != self.epoch:
                    break
                if self._commit("release", base, self.epoch, state.acquired_at, None):
                    break
            self._drop()

    # ------------------------------------------------------------------ internals
    def _acquire(self, info: Mapping[str, Any] | None) -> bool:
        for _ in range(5):
            now = utcnow()  # taken before reading the heartbeat (see the module docstring)
            base, state = _read_state(self.lake, self.name)
            if state is not None and state.active(now) and state.holder != self.holder_id:
                self._drop()
                return False
            epoch = (state.epoch if state else 0) + 1
            if self._commit("acquire", base, epoch, utcnow(), info):
                return True
        self._drop()
        return False

    def _renew(self, info: Mapping[str, Any] | None) -> bool:
        """Write the heartbeat of our epoch; True only if it completed in time to be trusted."""
        assert self.epoch is not None and self.expires_at is not None
        _, state = _read_event(self.lake, self.name)
        if state is None or state.holder != self.holder_id or state.epoch != self.epoch or state.event == "release":
            self._drop()
            return False
        start = utcnow()
        expires = start + self.ttl
        beat = {"lease": self.name, "holder": self.holder_id, "epoch": self.epoch, "at": start.isoformat(),
                "expires_at": expires.isoformat(), "info": dict(info or {})}
        self.lake.put_bytes(_heartbeat_path(self.name, self.epoch), json.dumps(beat, default=str).encode())
        if utcnow() >= self.expires_at - self.margin:
            return False  # landed too late to be sure every claimant saw it
        self.expires_at = expires
        return True

    def _drop(self) -> None:
        self.epoch = self.acquired_at = self.expires_at = None

    def _commit(self, event: str, base: int, epoch: int, acquired_at: datetime | None, info: Mapping[str, Any] | None) -> bool:
        """Append one event read at ``base``; True when it counts (landed at ``base + 1``)."""
        if base < 0:
            self.lake.create(_LEASES, TABLES[_LEASES].schema)
            base, state = _read_event(self.lake, self.name)
            if state is not None:  # someone else started the table and wrote first: decide again
                return False
        now = utcnow()
        expires = now if event == "release" else now + self.ttl
        ev = {
            "lease": self.name,
            "event": event,
            "holder": self.holder_id,
            "epoch": epoch,
            "base_version": base,
            "acquired_at": acquired_at.isoformat() if acquired_at else None,
            "expires_at": expires.isoformat(),
            "at": now.isoformat(),
            "info": dict(info or {}),
        }
        row = {**ev, "acquired_at": acquired_at, "expires_at": expires, "at": now, "info_json": json.dumps(ev["info"], default=str)}
        row.pop("info")
        try:
            version = self.lake.append(_LEASES, [row], metadata={_META_KEY: json.dumps(ev, default=str), "actor": self.holder_id})
        except CommitConflictError:
            return False
        if version != base + 1:
            return False
        if event == "release":
            self._drop()
        else:
            self.epoch, self.acquired_at, self.expires_at = epoch, acquired_at, expires
        return True
