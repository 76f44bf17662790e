"""The model registry: versions with sha256-checked artifacts, aliases, statuses and an audit trail.

Two append-only tables hold everything (``core.catalog``):

* ``model_versions``: one row per version *claim*. A version number is claimed by appending a
  row with ``max(version) + 1``; the claim whose Delta commit came first wins (the claimant
  checks the table as it was just before its own commit and retries with the next number if
  that number was already taken). Only the winner copies the artifact and writes the
  ``register`` event, whose ``event_id`` is the claim's ``registration_id``; a claim without
  that event (a lost race, or a crash mid-registration) is not a version.
* ``registry_events``: register, gate, approve, reject, archive, promote, rollback, alias,
  unalias. Each carries actor, reason, time and a JSON report. The alias map, every version's
  status (candidate, approved, rejected, champion, archived) and the deployment history are
  derived by replaying the events in order of ``(at, event_id)``.

Concurrency: an alias event may carry ``expected`` (the holder its writer saw). On replay an
event whose expectation no longer holds is *superseded* and changes nothing, so two processes
moving ``champion`` at the same moment give the result of one serial order, and both events
stay in the history. ``set_alias`` re-reads after its commit and reports whether it applied.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from core.errors import (
    ArtifactIntegrityError,
    LakeError,
    ModelNotFoundError,
    ModelVersionNotFoundError,
    RegistryError,
)
from core.ids import new_id, utcnow
from core.lake import Lake, resolve

if TYPE_CHECKING:
    from core.training import Model

__all__ = [
    "ALIAS_ACTIONS",
    "AliasChange",
    "LoadedModel",
    "ModelVersion",
    "RegistryState",
    "alias_at",
    "aliases",
    "artifact_path",
    "champion_version",
    "events",
    "get_version",
    "history",
    "list_models",
    "load",
    "record_event",
    "register",
    "resolve_version",
    "set_alias",
    "state",
    "statuses",
    "versions",
]

ALIAS_ACTIONS = ("promote", "rollback", "alias", "unalias")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_MAX_CLAIMS = 50
_UNSET: Any = object()


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model (a snapshot of its run at registration time)."""

    model: str
    version: int
    run_id: str | None
    sha256: str
    signature: dict[str, Any]
    metrics: dict[str, float]
    dataset_name: str | None
    dataset_version: int | None
    artifact_uri: str = ""
    size_bytes: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A version's model, loaded after its artifact's sha256 was checked."""

    name: str
    version: int
    model: Model
    sha256: str
    signature: dict[str, Any]


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
class RegistryState:
    """A model's state derived from its events: alias map, statuses, champion stack, alias history."""

    model: str
    aliases: dict[str, int]
    statuses: dict[int, str]
    champion_stack: tuple[int, ...]
    changes: tuple[AliasChange, ...]
    table_version: int = -1


# ---------------------------------------------------------------------------- helpers
def _check_model_name(model: str) -> None:
    if not isinstance(model, str) or not _NAME.match(model):
        raise RegistryError(
            f"model name {model!r} is invalid: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not _NAME.match(alias):
        raise RegistryError(f"alias {alias!r} is invalid: use letters, digits, '_' or '-'")


def _reason(reason: str | None, what: str) -> str:
    if reason is None or not str(reason).strip():
        raise RegistryError(f"{what} needs a reason: pass --reason \"...\" (it goes into the audit trail)")
    return str(reason).strip()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_path(model: str, version: int, name: str = "model.txt") -> str:
    """Return the lake-relative path of a version's artifact file."""
    return f"artifacts/models/{model}/{version}/{name}"


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    from core.config import load_settings

    return load_settings().actor


# ---------------------------------------------------------------------------- events
def record_event(
    model: str,
    action: str,
    *,
    version: int | None = None,
    alias: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    report: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    lake: Lake | None = None,
) -> str:
    """Append one event to ``registry_events`` (one commit) and return its id.

    Low level: flows (``core.flows.promote``) decide *whether* an event may be written.
    """
    lake = resolve(lake)
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
    lake.append("registry_events", [row], metadata={"actor": who, "model": model, "action": action, "event_id": eid})
    return eid


def events(model: str | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """Return registry events (all models, or one), in replay order ``(at, event_id)``."""
    lake = resolve(lake)
    frame = lake.read_or_empty("registry_events")
    if model is not None:
        frame = frame.filter(pl.col("model") == model)
    return frame.sort(["at", "event_id"])


def _replay(model: str, rows: list[dict[str, Any]], table_version: int) -> RegistryState:
    """Derive the alias map, statuses and alias history from ordered events."""
    alias_map: dict[str, int] = {}
    status: dict[int, str] = {}
    stack: list[int] = []
    changes: list[AliasChange] = []
    for ev in rows:
        action, v = ev["action"], ev["version"]
        if action == "register":
            status[v] = "candidate"
        elif action in ("approve", "reject", "archive"):
            status[v] = {"approve": "approved", "reject": "rejected", "archive": "archived"}[action]
        if action not in ALIAS_ACTIONS or not ev["alias"]:
            continue
        alias = ev["alias"]
        report = json.loads(ev["report_json"]) if ev["report_json"] else {}
        current = alias_map.get(alias)
        new = None if action == "unalias" else v
        applied = "expected" not in report or report["expected"] == current
        if applied:
            if alias == "champion":
                if action == "rollback" and stack:
                    stack.pop()
                if new is None:
                    stack.clear()
                elif not stack or stack[-1] != new:
                    stack.append(new)
                if current is not None and current != new:
                    status[current] = "archived"
            if new is None:
                alias_map.pop(alias, None)
            else:
                alias_map[alias] = new
        changes.append(
            AliasChange(model, alias, new, current, action, ev["actor"], ev["reason"], ev["at"], ev["event_id"], applied, report)
        )
    if "champion" in alias_map:
        status[alias_map["champion"]] = "champion"
    return RegistryState(model, alias_map, status, tuple(stack), tuple(changes), table_version)


_cache: dict[tuple[str, str], RegistryState] = {}
_cache_lock = threading.Lock()


def state(model: str, *, lake: Lake | None = None) -> RegistryState:
    """Return the model's derived state, recomputed only when ``registry_events`` has a new commit.

    Cheap when nothing changed (one look at the table's latest version), so serving may poll it.
    """
    lake = resolve(lake)
    if not lake.exists("registry_events"):
        return RegistryState(model, {}, {}, (), ())
    tv = lake.version("registry_events")
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


def champion_version(model: str, lake: Lake | None = None) -> int | None:
    """Return the version holding ``champion`` (None when there is none); reads only the events table.

    Serving polls this every second or two: it costs one lookup of the table's latest version
    when nothing changed, and a small scan of the model's events when something did.
    """
    return state(model, lake=lake).aliases.get("champion")


def aliases(model: str, *, lake: Lake | None = None) -> dict[str, int]:
    """Return the current alias map of ``model`` (alias -> version)."""
    return dict(state(model, lake=lake).aliases)


def statuses(model: str, *, lake: Lake | None = None) -> dict[int, str]:
    """Return every registered version's derived status."""
    return dict(state(model, lake=lake).statuses)


def history(model: str, alias: str | None = None, *, lake: Lake | None = None) -> pl.DataFrame:
    """Return the alias history (deployment history for ``champion``), oldest first.

    Columns: at, alias, action, version, previous_version, applied, forced, actor, reason, event_id.
    ``applied`` is False for an event superseded by a concurrent change (it changed nothing).
    """
    _require_model(model, lake=resolve(lake))
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
    schema = {
        "at": pl.Datetime("us", "UTC"), "alias": pl.String, "action": pl.String, "version": pl.Int64,
        "previous_version": pl.Int64, "applied": pl.Boolean, "forced": pl.Boolean, "actor": pl.String,
        "reason": pl.String, "event_id": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def alias_at(model: str, alias: str, when: datetime, *, lake: Lake | None = None) -> AliasChange | None:
    """Return the alias event in force at ``when``: its ``version`` held ``alias`` then.

    The result names who moved the alias there, when and why; None when the alias did not
    exist yet (or had been removed) at that moment.
    """
    lake = resolve(lake)
    _require_model(model, lake=lake)
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
    actor: str | None,
    reason: str,
    action: str = "promote",
    report: Mapping[str, Any] | None = None,
    expected: Any = _UNSET,
    lake: Lake | None = None,
) -> AliasChange:
    """Point ``alias`` at ``version`` (None with action ``unalias`` removes it) as one event.

    Args:
        model: registered model name.
        alias: alias name (``champion``, ``challenger``, any name).
        version: the version the alias should point to.
        actor: who does it (default: settings' actor).
        reason: why (required; it is the audit trail).
        action: ``promote``, ``rollback``, ``alias`` or ``unalias``.
        report: extra JSON-able details (gate report id, forced flag ...).
        expected: the version the caller saw holding the alias (None = no holder); when given,
            the change applies only if that still holds at its place in the event order.
        lake: the lake (default: from settings).

    Returns:
        The replayed change; ``applied`` is False when a concurrent change superseded it.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError, RegistryError (bad alias, no reason).
    """
    lake = resolve(lake)
    if action not in ALIAS_ACTIONS:
        raise RegistryError(f"alias action {action!r} is unknown: use {', '.join(ALIAS_ACTIONS)}")
    _check_alias(alias)
    why = _reason(reason, f"moving alias {alias!r}")
    if action == "unalias":
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
    eid = record_event(model, action, version=version, alias=alias, actor=actor, reason=why, report=body, lake=lake)
    for change in state(model, lake=lake).changes:
        if change.event_id == eid:
            return change
    raise LakeError(f"registry event {eid} for {model!r} was committed but is not readable yet; retry the read")


# ---------------------------------------------------------------------------- versions
def _valid_claims(lake: Lake, model: str | None = None) -> pl.DataFrame:
    """``model_versions`` rows that became versions (a ``register`` event exists for them)."""
    claims = lake.read_or_empty("model_versions")
    regs = lake.read_or_empty("registry_events", columns=["event_id", "action"])
    ids = regs.filter(pl.col("action") == "register").select(pl.col("event_id").alias("registration_id"))
    if model is not None:
        claims = claims.filter(pl.col("model") == model)
    return claims.join(ids, on="registration_id", how="semi").unique(["model", "version"], keep="first")


def _require_model(model: str, *, lake: Lake) -> pl.DataFrame:
    rows = _valid_claims(lake, model)
    if rows.height == 0:
        known = sorted(set(_valid_claims(lake)["model"].to_list()))
        hint = f"registered models: {', '.join(known)}" if known else "no model is registered yet (lakeops models register)"
        raise ModelNotFoundError(f"model {model!r} is not registered; {hint}")
    return rows


def _to_version(row: Mapping[str, Any], uri: str) -> ModelVersion:
    return ModelVersion(
        model=row["model"],
        version=int(row["version"]),
        run_id=row["run_id"],
        sha256=row["sha256"],
        signature=json.loads(row["signature_json"] or "{}"),
        metrics=json.loads(row["metrics_json"] or "{}"),
        dataset_name=row["dataset_name"],
        dataset_version=row["dataset_version"],
        artifact_uri=row["artifact_uri"] or f"{uri}/{artifact_path(row['model'], int(row['version']))}",
        size_bytes=int(row["size_bytes"] or 0),
        tags=json.loads(row["tags_json"] or "{}"),
        description=row["description"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def get_version(model: str, version: int, *, lake: Lake | None = None) -> ModelVersion:
    """Return one registered version.

    Raises:
        ModelNotFoundError: no such model.
        ModelVersionNotFoundError: the model exists but not that version.
    """
    lake = resolve(lake)
    rows = _require_model(model, lake=lake)
    hit = rows.filter(pl.col("version") == int(version))
    if hit.height == 0:
        have = sorted(rows["version"].to_list())
        raise ModelVersionNotFoundError(f"model {model!r} has versions {_ranges(have)}; asked for {version}")
    return _to_version(hit.row(0, named=True), lake.uri)


def _ranges(values: list[int]) -> str:
    out: list[str] = []
    for v in values:
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def resolve_version(model: str, *, version: int | None = None, alias: str | None = "champion", lake: Lake | None = None) -> int:
    """Return ``version`` if given (checked), else the version ``alias`` points to.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model/version, or no such alias.
    """
    lake = resolve(lake)
    if version is not None:
        return get_version(model, version, lake=lake).version
    _require_model(model, lake=lake)
    amap = aliases(model, lake=lake)
    if alias is None or alias not in amap:
        have = ", ".join(f"{a}=v{v}" for a, v in sorted(amap.items())) or "none"
        raise ModelVersionNotFoundError(f"model {model!r} has no alias {alias!r} (aliases: {have}); promote a version first")
    return amap[alias]


def versions(model: str, *, lake: Lake | None = None) -> pl.DataFrame:
    """Return every version of ``model`` with its status, aliases, latest gate result and metrics.

    Columns: version, status, aliases, gate, created_at, created_by, run_id, dataset_name,
    dataset_version, sha256, size_bytes, description, then one column per metric.
    """
    lake = resolve(lake)
    rows = _require_model(model, lake=lake).sort("version")
    st = state(model, lake=lake)
    by_version: dict[int, list[str]] = {}
    for a, v in sorted(st.aliases.items()):
        by_version.setdefault(v, []).append(a)
    ev = events(model, lake=lake).filter(pl.col("action") == "gate")
    gate = {r["version"]: bool(json.loads(r["report_json"] or "{}").get("passed")) for r in ev.iter_rows(named=True)}
    metric_rows = [json.loads(m or "{}") for m in rows["metrics_json"].to_list()]
    keys = sorted({k for m in metric_rows for k in m if not k.startswith("train_") and k != "best_iteration"})
    out = rows.select(
        "version", "created_at", "created_by", "run_id", "dataset_name", "dataset_version", "sha256", "size_bytes", "description"
    ).with_columns(
        pl.Series("status", [st.statuses.get(v, "candidate") for v in rows["version"]], dtype=pl.String),
        pl.Series("aliases", [",".join(by_version.get(v, [])) for v in rows["version"]], dtype=pl.String),
        pl.Series("gate", [None if v not in gate else ("passed" if gate[v] else "failed") for v in rows["version"]], dtype=pl.String),
        *[pl.Series(k, [m.get(k) for m in metric_rows], dtype=pl.Float64) for k in keys if k not in rows.columns],
    )
    first = ["version", "status", "aliases", "gate"]
    return out.select(first + [c for c in out.columns if c not in first])


def list_models(*, lake: Lake | None = None) -> pl.DataFrame:
    """Return one row per registered model: model, versions, latest_version, champion, aliases."""
    lake = resolve(lake)
    claims = _valid_claims(lake)
    schema = {"model": pl.String, "versions": pl.Int64, "latest_version": pl.Int64, "champion": pl.Int64, "aliases": pl.String}
    rows = []
    for name in sorted(set(claims["model"].to_list())):
        vs = claims.filter(pl.col("model") == name)["version"]
        amap = aliases(name, lake=lake)
        rows.append(
            {
                "model": name,
                "versions": vs.len(),
                "latest_version": int(vs.max()),  # type: ignore[arg-type]
                "champion": amap.get("champion"),
                "aliases": ", ".join(f"{a}=v{v}" for a, v in sorted(amap.items())),
            }
        )
    return pl.DataFrame(rows, schema=schema)


def _claim_version(lake: Lake, row: dict[str, Any]) -> int:
    """Append a claim for the next version number; the first committed claim of a number wins."""
    model = row["model"]
    for _ in range(_MAX_CLAIMS):
        if lake.exists("model_versions"):
            taken = lake.scan("model_versions").filter(pl.col("model") == model).select(pl.col("version").max()).collect().item()
        else:
            taken = None
        version = int(taken or 0) + 1
        claim = {**row, "version": version, "artifact_uri": f"{lake.uri}/{artifact_path(model, version)}"}
        commit = lake.append("model_versions", [claim], metadata={"actor": row["created_by"], "model": model, "registration_id": row["registration_id"]})
        before = lake.read("model_versions", version=commit - 1, columns=["model", "version", "registration_id"]) if commit > 0 else None
        if before is None or before.filter((pl.col("model") == model) & (pl.col("version") == version)).height == 0:
            return version
    raise LakeError(f"could not claim a version number for model {model!r} after {_MAX_CLAIMS} tries: too many concurrent registrations")


def register(
    model: str,
    run_id: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    actor: str | None = None,
    lake: Lake | None = None,
) -> ModelVersion:
    """Register the model of run ``run_id`` as the next version of ``model``.

    Copies the run's ``model/model.txt`` and ``model/signature.json`` to
    ``artifacts/models/<model>/<version>/`` with their sha256, and snapshots the run's metrics
    and dataset lineage. Concurrent registrations get distinct version numbers.

    Raises:
        RunNotFoundError: no such run.
        ArtifactIntegrityError: the run has no model artifact.
        RegistryError: invalid model name.
    """
    from core import tracking

    lake = resolve(lake)
    _check_model_name(model)
    run = tracking.get_run(run_id, lake=lake)
    if run.status != "finished":
        raise RegistryError(f"run {run_id} is {run.status}, not finished: only a finished run's model can be registered")
    try:
        text = tracking.read_artifact(run_id, "model/model.txt", lake=lake)
        sig_bytes = tracking.read_artifact(run_id, "model/signature.json", lake=lake)
    except FileNotFoundError as exc:
        raise ArtifactIntegrityError(f"run {run_id} has no model artifact ({exc}); train a model in that run first") from None
    return _register_files(
        lake, model, run_id, text, sig_bytes, metrics={k: v for k, v in run.metrics.items() if "." not in k}, dataset_name=run.dataset_name,
        dataset_version=run.dataset_version, description=description, tags=tags, actor=actor,
    )


def _register_files(
    lake: Lake,
    model: str,
    run_id: str | None,
    text: bytes,
    sig_bytes: bytes,
    *,
    metrics: Mapping[str, float],
    dataset_name: str | None,
    dataset_version: int | None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    actor: str | None = None,
) -> ModelVersion:
    """Claim a version, copy the artifact files, then write the ``register`` event."""
    _check_model_name(model)
    who = _actor(actor)
    sha = _sha256(text)
    reg_id = new_id()
    row = {
        "model": model,
        "run_id": run_id,
        "sha256": sha,
        "size_bytes": len(text),
        "signature_json": sig_bytes.decode("utf-8"),
        "metrics_json": json.dumps({k: float(v) for k, v in metrics.items()}, sort_keys=True),
        "tags_json": json.dumps({str(k): str(v) for k, v in dict(tags or {}).items()}, sort_keys=True),
        "description": description,
        "dataset_name": dataset_name,
        "dataset_version": dataset_version,
        "created_at": utcnow(),
        "created_by": who,
        "registration_id": reg_id,
    }
    version = _claim_version(lake, row)
    lake.put_bytes(artifact_path(model, version), text)
    lake.put_bytes(artifact_path(model, version, "signature.json"), sig_bytes)
    record_event(
        model, "register", version=version, actor=who, reason=description or f"registered run {run_id}",
        report={"run_id": run_id, "sha256": sha, "size_bytes": len(text)}, event_id=reg_id, lake=lake,
    )
    return get_version(model, version, lake=lake)


def load(model: str, *, version: int | None = None, alias: str | None = "champion", lake: Lake | None = None) -> LoadedModel:
    """Load a version (or the one an alias points to) after checking its artifact's sha256.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model, version or alias.
        ArtifactIntegrityError: the artifact file is missing or its sha256 differs from the
            recorded one (naming the file and both hashes).
    """
    from core.training import Model

    lake = resolve(lake)
    v = resolve_version(model, version=version, alias=alias, lake=lake)
    mv = get_version(model, v, lake=lake)
    path = artifact_path(model, v)
    try:
        data = lake.get_bytes(path)
    except FileNotFoundError:
        raise ArtifactIntegrityError(
            f"model {model!r} v{v}: artifact {path} is missing (recorded sha256 {mv.sha256}, found none); "
            f"re-register run {mv.run_id}"
        ) from None
    actual = _sha256(data)
    if actual != mv.sha256:
        raise ArtifactIntegrityError(
            f"model {model!r} v{v}: artifact {path} has sha256 {actual} but {mv.sha256} was recorded at "
            f"registration; refusing a tampered file (re-register run {mv.run_id})"
        )
    return LoadedModel(model, v, Model.from_text(data.decode("utf-8"), mv.signature), actual, mv.signature)
