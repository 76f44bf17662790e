"""Registered versions: claiming a number, copying the artifact, listing, and sha256-checked loading."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from core.errors import (
    ArtifactIntegrityError,
    LakeError,
    ModelVersionNotFoundError,
    RegistryError,
)
from core.ids import new_id, utcnow
from core.lake import Lake
from core.registry._base import (
    ModelVersion,
    _actor,
    _check_model_name,
    _sha256,
    artifact_path,
    get_version,
    require_model,
    valid_claims,
)
from core.registry._events import aliases, events, record_event, state

if TYPE_CHECKING:
    from core.training import Model

__all__ = ["LoadedModel", "list_models", "load", "register", "resolve_version", "versions"]

_MAX_CLAIMS = 50


@dataclass(frozen=True)
class LoadedModel:
    """A version's model, loaded after its artifact's sha256 was checked."""

    name: str
    version: int
    model: Model
    sha256: str
    signature: dict[str, Any]


def resolve_version(
    model: str, *, version: int | None = None, alias: str | None = "champion", lake: Lake
) -> int:
    """Return ``version`` if given (checked), else the version ``alias`` points to.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model/version, or no such alias.
    """
    if version is not None:
        return get_version(model, version, lake=lake).version
    require_model(model, lake=lake)
    amap = aliases(model, lake=lake)
    if alias is None or alias not in amap:
        have = ", ".join(f"{a}=v{v}" for a, v in sorted(amap.items())) or "none"
        raise ModelVersionNotFoundError(
            f"model {model!r} has no alias {alias!r} (aliases: {have}); promote a version first"
        )
    return amap[alias]


def versions(model: str, *, lake: Lake) -> pl.DataFrame:
    """Return every version of ``model`` with its status, aliases, latest gate result and metrics.

    Columns: version, status, aliases, gate, created_at, created_by, run_id, dataset_name,
    dataset_version, sha256, size_bytes, description, then one column per metric.
    """
    rows = require_model(model, lake=lake).sort("version")
    st = state(model, lake=lake)
    by_version: dict[int, list[str]] = {}
    for a, v in sorted(st.aliases.items()):
        by_version.setdefault(v, []).append(a)
    ev = events(model, lake=lake).filter(pl.col("action") == "gate")
    gate = {
        r["version"]: bool(json.loads(r["report_json"] or "{}").get("passed"))
        for r in ev.iter_rows(named=True)
    }
    metric_rows = [json.loads(m or "{}") for m in rows["metrics_json"].to_list()]
    keys = sorted({k for m in metric_rows for k in m if not k.startswith("train_") and k != "best_iteration"})
    out = rows.select(
        "version",
        "created_at",
        "created_by",
        "run_id",
        "dataset_name",
        "dataset_version",
        "sha256",
        "size_bytes",
        "description",
    ).with_columns(
        pl.Series("status", [st.statuses.get(v, "candidate") for v in rows["version"]], dtype=pl.String),
        pl.Series("aliases", [",".join(by_version.get(v, [])) for v in rows["version"]], dtype=pl.String),
        pl.Series(
            "gate",
            [None if v not in gate else ("passed" if gate[v] else "failed") for v in rows["version"]],
            dtype=pl.String,
        ),
        *[
            pl.Series(k, [m.get(k) for m in metric_rows], dtype=pl.Float64)
            for k in keys
            if k not in rows.columns
        ],
    )
    first = ["version", "status", "aliases", "gate"]
    return out.select(first + [c for c in out.columns if c not in first])


def list_models(*, lake: Lake) -> pl.DataFrame:
    """Return one row per registered model: model, versions, latest_version, champion, aliases."""
    claims = valid_claims(lake)
    schema = {
        "model": pl.String,
        "versions": pl.Int64,
        "latest_version": pl.Int64,
        "champion": pl.Int64,
        "aliases": pl.String,
    }
    rows = []
    for name in sorted(set(claims["model"].to_list())):
        vs = claims.filter(pl.col("model") == name)["version"]
        amap = aliases(name, lake=lake)
        rows.append(
            {
                "model": name,
                "versions": vs.len(),
                "latest_version": vs.max(),
                "champion": amap.get("champion"),
                "aliases": ", ".join(f"{a}=v{v}" for a, v in sorted(amap.items())),
            }
        )
    return pl.DataFrame(rows, schema=schema)


def _claim_version(lake: Lake, row: dict[str, Any]) -> tuple[int, str]:
    """Append a claim for the next version number; the first committed claim of a number wins.

    Returns the version and the winning claim's id (each attempt has its own id, so a lost
    claim can never be mistaken for a registered version).
    """
    model = row["model"]
    for _ in range(_MAX_CLAIMS):
        taken = None
        if lake.latest_version_hint("model_versions") >= 0:
            taken = (
                lake.scan("model_versions")
                .filter(pl.col("model") == model)
                .select(pl.col("version").max())
                .collect()
                .item()
            )
        version = int(taken or 0) + 1
        claim_id = new_id()
        claim = {
            **row,
            "version": version,
            "registration_id": claim_id,
            "artifact_uri": f"{lake.uri}/{artifact_path(model, version)}",
        }
        commit = lake.append(
            "model_versions",
            [claim],
            metadata={"actor": row["created_by"], "model": model, "registration_id": claim_id},
        )
        if commit <= 0:
            return version, claim_id
        before = lake.read(
            "model_versions", version=commit - 1, columns=["model", "version", "registration_id"]
        )
        rivals = before.filter(
            (pl.col("model") == model)
            & (pl.col("version") == version)
            & (pl.col("registration_id") != claim_id)
        )
        if rivals.height == 0:
            return version, claim_id
    raise LakeError(
        f"could not claim a version number for model {model!r} after {_MAX_CLAIMS} tries: too many concurrent registrations"
    )


def register(
    model: str,
    run_id: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    actor: str,
    lake: Lake,
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
    _check_model_name(model)
    run = tracking.get_run(run_id, lake=lake)
    if run.status != "finished":
        raise RegistryError(
            f"run {run_id} is {run.status}, not finished: only a finished run's model can be registered"
        )
    try:
        text = tracking.read_artifact(run_id, "model/model.txt", lake=lake)
        sig_bytes = tracking.read_artifact(run_id, "model/signature.json", lake=lake)
    except FileNotFoundError as exc:
        raise ArtifactIntegrityError(
            f"run {run_id} has no model artifact ({exc}); train a model in that run first"
        ) from None
    return _register_files(
        lake,
        model,
        run_id,
        text,
        sig_bytes,
        metrics={k: v for k, v in run.metrics.items() if "." not in k},
        dataset_name=run.dataset_name,
        dataset_version=run.dataset_version,
        description=description,
        tags=tags,
        actor=actor,
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
    actor: str,
) -> ModelVersion:
    """Claim a version, copy the artifact files, then write the ``register`` event."""
    _check_model_name(model)
    who = _actor(actor)
    sha = _sha256(text)
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
    }
    version, reg_id = _claim_version(lake, row)
    lake.put_bytes(artifact_path(model, version), text)
    lake.put_bytes(artifact_path(model, version, "signature.json"), sig_bytes)
    record_event(
        model,
        "register",
        version=version,
        actor=who,
        reason=description or f"registered run {run_id}",
        report={"run_id": run_id, "sha256": sha, "size_bytes": len(text)},
        event_id=reg_id,
        lake=lake,
    )
    return get_version(model, version, lake=lake)


def load(
    model: str, *, version: int | None = None, alias: str | None = "champion", lake: Lake
) -> LoadedModel:
    """Load a version (or the one an alias points to) after checking its artifact's sha256.

    Raises:
        ModelNotFoundError, ModelVersionNotFoundError: unknown model, version or alias.
        ArtifactIntegrityError: the artifact file is missing or its sha256 differs from the
            recorded one (naming the file and both hashes).
    """
    from core.training import Model
    v = version if version is not None else resolve_version(model, alias=alias, lake=lake)
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
