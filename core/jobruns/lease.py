"""The lease: at most one holder per lease name and lake (one scheduler per lake), on Delta commits.

Design (a compare-and-swap on the Delta log; correct on a local folder and on S3):

* The ``leases`` table holds events: ``acquire``, ``renew``, ``release``. Each is appended with
  the table version its writer read just before (``base_version``), and the whole event is also
  copied into the commit metadata (key ``lakeops_lease``).
* Delta commits are atomic and totally ordered (each is a put-if-absent of
  ``_delta_log/N.json``, locally a hard link, on S3 a ``PUT`` with ``If-None-Match``), and
  ``Lake.append`` returns the version its commit landed at.
* An event **counts** only if it landed at exactly ``base_version + 1``: then nothing was
  committed between its writer's read and its commit, so the writer decided on the true current
  state. Every counting event carries the full state (holder, epoch, expiry), so the state of a
  lease is just its newest counting event, found in the last few commits (``Lake.history``
  reads commit metadata only; no replay of the table, no data files read).
* Two claimants that both saw a free lease both append, but only the first commit counts; the
  other, re-reading, sees it lost and waits. An unrelated commit in between (compaction by the
  maintenance job) only makes an event not count: its writer reads again and retries.
* A holder renews every ``ttl/3`` (one commit each) and trusts its lease only until
  ``expires_at - margin`` of its last counting event (``Lease.held``), so a dead or paused
  holder is taken over once its expiry has passed, and a paused one finds out at its next
  renewal. ``epoch`` grows by one per acquisition (a fencing token). Hosts sharing a lake must
  have clocks that agree to well under ``ttl``.
* Cost: one small commit per renewal (8,640 a day at the default ttl of 30 s); the nightly
  maintenance job compacts the table like every other.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import core.lake
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
    """The newest counting event of a lease: who holds it, since when, until when."""

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


def _read_state(lake: Lake, name: str) -> tuple[int, LeaseState | None]:
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
        # Nothing counting in the last `limit` commits: look further back; a lease with no
        # counting event in 4,096 commits has certainly expired (renewals come every ttl/3).
        if len(commits) < limit or limit >= 4096:
            return base, None
        limit *= 4


def current_holder(name: str = "scheduler", *, lake: Lake | None = None) -> LeaseState | None:
    """Return the state of lease ``name`` while someone holds it, else None."""
    lake = core.lake.resolve(lake)
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

    def __init__(self, lake: Lake | None = None, name: str = "scheduler", holder: str | None = None, ttl_s: float = 30) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"lease ttl_s must be > 0, got {ttl_s}")
        self.lake = core.lake.resolve(lake)
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
        """True while this holder may act: its last counting event has not (nearly) expired."""
        return self.expires_at is not None and utcnow() < self.expires_at - self.margin

    def holder(self) -> LeaseState | None:
        """Return the current holder's state (None when the lease is free)."""
        return current_holder(self.name, lake=self.lake)

    def acquire(self, info: Mapping[str, Any] | None = None) -> bool:
        """Take the lease if it is free, expired, released or already ours; True when we hold it."""
        with self._lock:
            for _ in range(5):
                base, state = _read_state(self.lake, self.name)
                now = utcnow()
                mine = state is not None and state.holder == self.holder_id and state.epoch == self.epoch
                if state is not None and state.active(now) and not mine:
                    self._drop()
                    return False
                if mine and state is not None and state.active(now):
                    ok = self._commit("renew", base, state.epoch, state.acquired_at, info)
                else:
                    ok = self._commit("acquire", base, (state.epoch if state else 0) + 1, now, info)
                if ok:
                    return True
            self._drop()
            return False

    def renew(self, info: Mapping[str, Any] | None = None) -> bool:
        """Extend our lease by ``ttl``; False when it was lost (someone else holds or held it)."""
        with self._lock:
            if self.epoch is None:
                return False
            for _ in range(5):
                base, state = _read_state(self.lake, self.name)
                if state is None or state.holder != self.holder_id or state.epoch != self.epoch or state.event == "release":
                    self._drop()
                    return False
                if self._commit("renew", base, self.epoch, state.acquired_at, info):
                    return True
            return self.held  # only lost CAS races (e.g. to compaction): keep the current expiry

    def release(self) -> None:
        """Give the lease up now (a waiting holder may take it at once)."""
        with self._lock:
            if self.epoch is None:
                return
            for _ in range(5):
                base, state = _read_state(self.lake, self.name)
                if state is None or state.holder != self.holder_id or state.epoch != self.epoch:
                    break
                if self._commit("release", base, self.epoch, state.acquired_at, None):
                    break
            self._drop()

    def _drop(self) -> None:
        self.epoch = self.acquired_at = self.expires_at = None

    def _commit(self, event: str, base: int, epoch: int, acquired_at: datetime | None, info: Mapping[str, Any] | None) -> bool:
        """Append one event read at ``base``; True when it counts (landed at ``base + 1``)."""
        if base < 0:
            self.lake.create(_LEASES, TABLES[_LEASES].schema)
            base, state = _read_state(self.lake, self.name)
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


