"""Registry events: appending them, and deriving aliases, statuses and alias history by replay."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from core.errors import (
    LakeError,
    ModelVersionNotFoundError,
    RegistryError,
)
from core.ids import new_id, utcnow
from core.lake import Lake
from core.registry._base import _actor, _check_alias, _reason, get_version, require_model

__all__ = [
    "ALIAS_ACTIONS",
    "STAGE_MODES",
    "AliasChange",
    "RegistryState",
    "Stage",
    "alias_at",
    "aliases",
    "champion_version",
    "events",
    "history",
    "record_event",
    "set_alias",
    "state",
    "statuses",
]

ALIAS_ACTIONS = ("promote", "rollback", "alias", "unalias", "stage", "unstage")
STAGE_MODES = ("shadow", "canary")
_UNSET: Any = object()


@dataclass(frozen=True)
class AliasChange:
    """One alias event as replayed: who moved which alias from where to where, and why."""

    model: str
    alias: str
    version: int | None
    previous_version: int | None
    action: str
    actor: str | None
    reason: str | None
    at: datetime
    event_id: str
    applied: bool = True
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """A challenger in a staged rollout: the version, how it meets traffic, since when and by whom.

    ``mode`` is ``shadow`` (scored beside the champion on every request, never the answer) or
    ``canary`` (the answer for ``fraction`` of the traffic, chosen by a hash of the request key).
    """

    version: int
    mode: str
    fraction: float
    since: datetime
    actor: str | None
    reason: str | None


@dataclass(frozen=True)
class RegistryState:
    """A model's state derived from its events: alias map, statuses, champion stack, alias history."""

    model: str
    aliases: dict[str, int]
    statuses: dict[int, str]
    champion_stack: tuple[int, ...]
    changes: tuple[AliasChange, ...]
    table_version: int = -1
    stage: Stage | None = None


# ---------------------------------------------------------------------------- events
def record_event(
    model: str,
    action: str,
    *,
    version: int | None = None,
    alias: str | None = None,
    actor: str,
    reason: str | None = None,
    report: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    lake: Lake,
) -> str:
    """Append one event to ``registry_events`` (one commit) and return its id.

    Low level: flows (``core.flows.promote``) decide *whether* an event may be written.
    """
    eid = event_id or new_id()
    who = _actor(actor)
    row = {
        "event_id": eid,
        "model": model,
        "version": version,
        "action": action,
        "alias": alias,
        "actor": who,
        "reason": reason,
        "report_json": json.dumps(dict(report), default=str, sort_keys=True) if report else None,
        "at": utcnow(),
    }
    lake.append(
        "registry_events", [row], metadata={"actor": who, "model": model, "action": action, "event_id": eid}
    )
    return eid


def events(model: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """Return registry events (all models, or one), in replay order ``(at, event_id)``."""
    frame = lake.read_or_empty("registry_events")
    if model is not None:
        frame = frame.filter(pl.col("model") == model)
    return frame.sort(["at", "event_id"])


_STATUS_OF_ACTION = {"register": "candidate", "approve": "approved", "reject": "rejected", "archive": "archived"}


@dataclass
class _Replay:
    """A model's state while its events are replayed, oldest first."""

    aliases: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    stack: list[int] = field(default_factory=list)  # the champion's versions, newest last
    stage: Stage | None = None

    def apply(self, ev: Mapping[str, Any], report: Mapping[str, Any], current: int | None, new: int | None) -> None:
        """Apply one alias event that took effect (``current`` -> ``new`` on ``ev["alias"]``)."""
        action, alias, v = ev["action"], ev["alias"], ev["version"]
        if action == "stage":
            since = ev["at"] if current != v or self.stage is None else self.stage.since
            self.stage = Stage(v, str(report.get("mode", "shadow")), float(report.get("fraction", 0.0)), since,
                               ev["actor"], ev["reason"])
        elif alias == "challenger" and action in ("unstage", "unalias", "alias"):
            self.stage = None
        if alias == "champion":
            self._move_champion(action, current, new)
        if new is None:
            self.aliases.pop(alias, None)
        else:
            self.aliases[alias] = new

    def _move_champion(self, action: str, current: int | None, new: int | None) -> None:
        if action == "rollback" and self.stack:
            self.stack.pop()
        if new is None:
            self.stack.clear()
        elif not self.stack or self.stack[-1] != new:
            self.stack.append(new)
        if current is not None and current != new:
            self.statuses[current] = "archived"
        if new is not None and self.aliases.get("challenger") == new:  # the challenger won: its stage ends
            self.aliases.pop("challenger", None)
            self.stage = None


def _replay(model: str, rows: list[dict[str, Any]], table_version: int) -> RegistryState:
    """Derive the alias map, statuses and alias history from ordered events."""
    st = _Replay()
    changes: list[AliasChange] = []
    for ev in rows:
        action, v = ev["action"], ev["version"]
        if action in _STATUS_OF_ACTION:
            st.statuses[v] = _STATUS_OF_ACTION[action]
        if action not in ALIAS_ACTIONS or not ev["alias"]:
            continue
        report = json.loads(ev["report_json"]) if ev["report_json"] else {}
        current = st.aliases.get(ev["alias"])
        new = None if action in ("unalias", "unstage") else v
        # an event written against an alias that moved meanwhile (its expected version) changes nothing
        applied = "expected" not in report or report["expected"] == current
        if applied:
            st.apply(ev, report, current, new)
        changes.append(AliasChange(model, ev["alias"], new, current, action, ev["actor"], ev["reason"], ev["at"],
                                   ev["event_id"], applied, report))
    if "champion" in st.aliases:
        st.statuses[st.aliases["champion"]] = "champion"
    if st.stage is not None:
        st.statuses[st.stage.version] = f"challenger ({st.stage.mode})"
    return RegistryState(model, st.aliases, st.statuses, tuple(st.stack), tuple(changes), table_version, st.stage)


_cache: dict[tuple[str, str], RegistryState] = {}
_cache_lock = threading.Lock()


def state(model: str, *, lake: Lake) -> RegistryState:
    """Return the model's derived state, recomputed only when ``registry_events`` has a new commit.

    Cheap when nothing changed (one listing of the table's ``_delta_log``), so serving may poll it.
    """
    tv = lake.latest_version_hint("registry_events")
    if tv < 0:
        return RegistryState(model, {}, {}, (), ())
    key = (lake.uri, model)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit.table_version == tv:
        return hit
    frame = (
        lake.scan("registry_events", version=tv)
        .filter(pl.col("model") == model)
        .select("event_id", "version", "action", "alias", "actor", "reason", "report_json", "at")
        .sort(["at", "event_id"])
        .collect()
    )
    result = _replay(model, frame.to_dicts(), tv)
    with _cache_lock:
        _cache[key] = result
    return result


def champion_version(model: str, lake: Lake) -> int | None:
    """Return the version holding ``champion`` (None when there is none); reads only the events table.

    Serving polls this every second or two: it costs one lookup of the table's latest version
    when nothing changed, and a small scan of the model's events when something did.
    """
    return state(model, lake=lake).aliases.get("champion")


def aliases(model: str, *, lake: Lake) -> dict[str, int]:
    """Return the current alias map of ``model`` (alias -> version)."""
    return dict(state(model, lake=lake).aliases)


def statuses(model: str, *, lake: Lake) -> dict[int, str]:
    """Return every registered version's derived status."""
    return dict(state(model, lake=lake).statuses)


def history(model: str, alias: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """Return the alias history (deployment history for ``champion``), oldest first.

    Columns: at, alias, action, version, previous_version, applied, forced, actor, reason, event_id.
    ``applied`` is False for an event superseded by a concurrent change (it changed nothing).
    """
    require_model(model, lake=lake)
    rows = [
        {
            "at": c.at,
            "alias": c.alias,
            "action": c.action,
            "version": c.version,
            "previous_version": c.previous_version,
            "applied": c.applied,
            "forced": bool(c.report.get("forced", False)),
            "actor": c.actor,
            "reason": c.reason,
            "event_id": c.event_id,
        }
        for c in state(model, lake=lake).changes
        if alias is None or c.alias == alias
    ]
    schema: dict[str, pl.DataType] = {
        "at": pl.Datetime("us", "UTC"),
        "alias": pl.String(),
        "action": pl.String(),
        "version": pl.Int64(),
        "previous_version": pl.Int64(),
        "applied": pl.Boolean(),
        "forced": pl.Boolean(),
        "actor": pl.String(),
        "reason": pl.String(),
        "event_id": pl.String(),
    }
    return pl.DataFrame(rows, schema=schema)


def alias_at(model: str, alias: str, when: datetime, *, lake: Lake) -> AliasChange | None:
    """Return the alias event in force at ``when``: its ``version`` held ``alias`` then.

    The result names who moved the alias there, when and why; None when the alias did not
    exist yet (or had been removed) at that moment.
    """
    require_model(model, lake=lake)
    if when.tzinfo is None:
        raise RegistryError(f"alias_at needs an aware datetime (UTC), got naive {when.isoformat()}")
    found = None
    for c in state(model, lake=lake).changes:
        if c.at > when:
            break
        if c.alias == alias and c.applied:
            found = c
    return found if found is not None and found.version is not None else None


def set_alias(
    model: str,
    alias: str,
    version: int | None,
    *,
    actor: str,
    reason: str,
    action: str = "promote",
    report: Mapping[str, Any] | None = None,
    expected: Any = _UNSET,
    lake: Lake,
) -> AliasChange:
    """Point ``alias`` at ``version`` (None with action ``unalias`` removes it) as one event.

    Args:
        model: registered model name.
        alias: alias name (``champion``, ``challenger``, any name).
        version: the version the alias should point to.
        actor: who does it (the audit trail's name; required).
        reason: why (required; it is the audit trail).
        action: ``promote``, ``rollback``, ``alias``, ``unalias``, or ``stage``/``unstage`` (the
            ``challenger`` alias in a staged rollout; ``report`` holds ``mode`` and ``fraction``).
        report: extra JSON-able details (gate report id, forced flag ...).
        expected: the version the caller saw holding the alias (None = no holder); when given,
            the change applies only if that still holds at its place in the event order.
        lake: the lake.

    Returns:
        The replayed change; ``applied`` is False when a concurrent change superseded it.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError, RegistryError (bad alias, no reason).
    """
    if action not in ALIAS_ACTIONS:
        raise RegistryError(f"alias action {action!r} is unknown: use {', '.join(ALIAS_ACTIONS)}")
    _check_alias(alias)
    why = _reason(reason, f"moving alias {alias!r}")
    if action in ("unalias", "unstage"):
        if alias not in aliases(model, lake=lake):
            raise ModelVersionNotFoundError(f"model {model!r} has no alias {alias!r} to remove")
        version = None
    else:
        if version is None:
            raise RegistryError(f"alias {alias!r} needs a version to point to")
        get_version(model, version, lake=lake)
    body = dict(report or {})
    if expected is not _UNSET:
        body["expected"] = expected
    eid = record_event(
        model, action, version=version, alias=alias, actor=actor, reason=why, report=body, lake=lake
    )
    for change in state(model, lake=lake).changes:
        if change.event_id == eid:
            return change
    raise LakeError(
        f"registry event {eid} for {model!r} was committed but is not readable yet; retry the read"
    )
