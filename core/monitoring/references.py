"""Reference distributions of a champion version: built once from its training dataset version, stored in the lake, cached."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from core import drift
from core.config import Settings
from core.errors import ModelVersionNotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake, resolve
from core.monitoring.config import champion, monitor_config

__all__ = ["SCORE_ROW", "ModelReference", "clear_cache", "reference"]

_log = logging.getLogger("lakeops.monitoring")
SCORE_ROW = "__score__"  # not "score": a feature may be called that
_CACHE: dict[tuple[str, str], dict[str, Any]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 8


def clear_cache() -> None:
    """Forget the references cached in this process (the next call reads them from the lake)."""
    with _CACHE_LOCK:
        _CACHE.clear()


@dataclass(frozen=True)
class ModelReference:
    """The reference of one champion version: feature distributions of its training dataset
    version (shared by every model trained on the same version and split) and its holdout scores."""

    model: str
    model_version: int
    dataset: str
    dataset_version: int
    rows: int
    kinds: dict[str, str]
    features: dict[str, drift.Reference]
    score: drift.NumericReference
    path: str
    scores_path: str


@dataclass(frozen=True)
class _Split:
    """How a model version's training data was split (to recompute its holdout exactly)."""

    dataset: str
    version: int
    target: str
    time_column: str | None
    seed: int
    fraction: float
    params: Mapping[str, str]
    signature: Mapping[str, Any]

    def key(self, mode: str, kinds: Mapping[str, str], bins: int) -> str:
        spec = [self.dataset, self.version, self.target, self.time_column, self.seed, self.fraction, mode, sorted(kinds.items()), bins]
        if self.params.get("split_method") == "served_holdout":  # a retrain: its traffic is part of it
            spec += [self.params.get("served_dataset"), self.params.get("served_version"), self.params.get("dedupe_key")]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def _split_of(mv: Any, lake: Lake) -> _Split:
    from core import tracking

    if not mv.dataset_name or mv.dataset_version is None:
        raise ModelVersionNotFoundError(
            f"model {mv.model!r} v{mv.version} has no dataset lineage; register a model trained from a dataset"
        )
    params: dict[str, str] = {}
    seed = 0
    if mv.run_id:
        run = tracking.get_run(mv.run_id, lake=lake)
        params, seed = run.params, int(run.seed or 0)
    time_column = params.get("time_column", mv.signature.get("time_column")) or None
    return _Split(mv.dataset_name, int(mv.dataset_version), mv.signature.get("target"), time_column, seed,
                  float(params.get("valid_fraction", 0.2)), params, mv.signature)


def _frames(split: _Split, mode: str, lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(feature reference rows, holdout rows) of the run's training data (``core.trainsets``)."""
    from core import trainsets

    frames = trainsets.run_frames(dataset=split.dataset, version=split.version, params=split.params,
                                  signature=split.signature, seed=split.seed, lake=lake)
    everything = pl.concat([frames.train, frames.holdout], how="diagonal_relaxed")
    return (frames.holdout if mode == "holdout" else everything), frames.holdout


def _stored(path: str, lake: Lake) -> dict[str, Any] | None:
    """The cached or stored reference at ``path`` (sha256-checked), or None when it must be built."""
    key = (lake.uri, path)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    known = lake.read_or_empty("drift_references").filter(pl.col("path") == path)
    if known.height == 0:
        return None
    row = known.sort("at").row(-1, named=True)
    try:
        data = lake.get_bytes(path)
    except FileNotFoundError:
        _log.warning("drift reference %s is missing; rebuilding it", path)
        return None
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        _log.warning("drift reference %s does not match its sha256; rebuilding it", path)
        return None
    value = {"row": row, "refs": drift.reference_from_bytes(data)}
    _remember(key, value)
    return value


def _store(path: str, refs: Mapping[str, drift.Reference], row: dict[str, Any], lake: Lake) -> dict[str, Any]:
    data = drift.reference_to_bytes(refs)
    lake.put_bytes(path, data)
    row = {"reference_id": new_id(), "path": path, "sha256": hashlib.sha256(data).hexdigest(), "at": utcnow(), **row}
    lake.append("drift_references", [row], metadata={"reference": path})
    value = {"row": row, "refs": dict(refs)}
    _remember((lake.uri, path), value)
    return value


def reference(model: str, *, version: int | None = None, lake: Lake | None = None, settings: Settings | None = None) -> ModelReference:
    """Return the reference of ``model`` (the champion by default), building and storing it once.

    Feature distributions (sorted values, quantile edges, category counts) are built once per
    training dataset version and split, at ``artifacts/drift/datasets/<name>/v<version>/<key>.ref``;
    the model's scores on the holdout once per model version, at
    ``artifacts/drift/models/<model>/v<version>/scores.ref``. Both are listed in
    ``drift_references``; later calls (any process) read the stored arrays, checked by sha256,
    and keep them in memory.
    """
    from core import registry

    lake = resolve(lake)
    mv = registry.get_version(model, version, lake=lake) if version is not None else champion(model, lake=lake)
    cfg = monitor_config(model, settings)
    split = _split_of(mv, lake)
    declared = {f["name"]: f["kind"] for f in mv.signature.get("features", [])}
    path = f"artifacts/drift/datasets/{split.dataset}/v{split.version}/{split.key(cfg.reference, declared, cfg.policy.bins)}.ref"
    scores_path = f"artifacts/drift/models/{model}/v{mv.version}/scores.ref"
    feats, scores = _stored(path, lake), _stored(scores_path, lake)
    if feats is None or scores is None:
        ref_frame, holdout = _frames(split, cfg.reference, lake)
        if feats is None:
            kinds = {c: k for c, k in declared.items() if c in ref_frame.columns}
            refs = drift.build_reference(
                ref_frame, numeric=[c for c, k in kinds.items() if k == "numeric"],
                categorical=[c for c, k in kinds.items() if k == "categorical"], bins=cfg.policy.bins,
            )
            feats = _store(path, refs, {"kind": f"features:{cfg.reference}", "dataset": split.dataset,
                                        "dataset_version": split.version, "rows": ref_frame.height,
                                        "columns_json": json.dumps(kinds)}, lake)
        if scores is None:
            loaded = registry.load(model, version=mv.version, alias=None, lake=lake)
            score_ref = drift.NumericReference.from_values(loaded.model.predict(holdout), bins=cfg.policy.bins)
            scores = _store(scores_path, {SCORE_ROW: score_ref}, {
                "kind": "scores", "dataset": split.dataset, "dataset_version": split.version, "model": model,
                "model_version": mv.version, "rows": holdout.height, "columns_json": json.dumps({SCORE_ROW: "numeric"}),
            }, lake)
    row = feats["row"]
    score = scores["refs"].get(SCORE_ROW) or scores["refs"]["score"]  # "score": stored by earlier releases
    assert isinstance(score, drift.NumericReference)
    kinds = json.loads(row["columns_json"])
    return ModelReference(model, int(mv.version), split.dataset, split.version, int(row["rows"]), kinds,
                          {k: feats["refs"][k] for k in kinds}, score, path, scores_path)


def _remember(key: tuple[str, str], value: dict[str, Any]) -> None:
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = value
