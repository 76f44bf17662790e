"""Shared pieces of the registry: names, the version record, and looking up registered versions."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from core.errors import (
    ModelNotFoundError,
    ModelVersionNotFoundError,
    RegistryError,
)
from core.lake import Lake

__all__ = [
    "ModelVersion",
    "artifact_path",
    "get_version",
    "require_model",
    "valid_claims",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


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
        raise RegistryError(f'{what} needs a reason: pass --reason "..." (it goes into the audit trail)')
    return str(reason).strip()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_path(model: str, version: int, name: str = "model.txt") -> str:
    """Return the lake-relative path of a version's artifact file."""
    return f"artifacts/models/{model}/{version}/{name}"


def _actor(actor: str) -> str:
    """The actor of an event: required, never guessed from the environment (the edges pass ``Settings.actor``)."""
    if not (actor or "").strip():
        raise RegistryError("a registry change needs an actor (who does it): pass actor=, e.g. settings.actor")
    return actor


_claims_cache: dict[str, tuple[int, int, pl.DataFrame]] = {}
_claims_lock = threading.Lock()


def _read_pinned(lake: Lake, name: str, version: int, columns: list[str] | None = None) -> pl.DataFrame:
    if version < 0:
        return lake.read_or_empty(name, columns=columns)
    return lake.read(name, version=version, columns=columns)


def valid_claims(lake: Lake, model: str | None = None) -> pl.DataFrame:
    """``model_versions`` rows that became versions (a ``register`` event exists for them).

    Cached per lake until either table gets a new commit.
    """
    mv_v = lake.latest_version_hint("model_versions")
    ev_v = lake.latest_version_hint("registry_events")
    with _claims_lock:
        hit = _claims_cache.get(lake.uri)
    if hit is not None and hit[:2] == (mv_v, ev_v):
        frame = hit[2]
    else:
        claims = _read_pinned(lake, "model_versions", mv_v)
        regs = _read_pinned(lake, "registry_events", ev_v, ["event_id", "action", "model", "version"])
        ids = regs.filter(pl.col("action") == "register").select(
            pl.col("event_id").alias("registration_id"), "model", "version"
        )
        frame = claims.join(ids, on=["registration_id", "model", "version"], how="semi")
        with _claims_lock:
            _claims_cache[lake.uri] = (mv_v, ev_v, frame)
    return frame if model is None else frame.filter(pl.col("model") == model)


def require_model(model: str, *, lake: Lake) -> pl.DataFrame:
    rows = valid_claims(lake, model)
    if rows.height == 0:
        known = sorted(set(valid_claims(lake)["model"].to_list()))
        hint = (
            f"registered models: {', '.join(known)}"
            if known
            else "no model is registered yet (lakeops models register)"
        )
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


def get_version(model: str, version: int, *, lake: Lake) -> ModelVersion:
    """Return one registered version.

    Raises:
        ModelNotFoundError: no such model.
        ModelVersionNotFoundError: the model exists but not that version.
    """
    rows = require_model(model, lake=lake)
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
