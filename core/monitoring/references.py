"""References of a champion version: built once from its training dataset version and holdout, stored in the lake, cached.

* **Feature distributions** represent the *training distribution*: every row of the training
  dataset version with a target (what ``core.training.train`` split into train and holdout), a
  seeded uniform sample of ``reference_rows`` (1,000,000) when larger. Not the time-split
  holdout: that is the last 20 % of the rows, where a calendar feature such as ``month`` has
  (almost) no spread, so every later month looks like an enormous drift. ``reference =
  "holdout"`` restores the old behaviour.
* **Score distribution** stays the model's scores on its *holdout*: what the gate measured, and
  out of sample. Scores on the training rows are in-sample (sharper, more confident), so a
  window of new data would look drifted against them even when nothing changed.
* **CBPE calibration** (``core.drift.Calibration``) is fitted on the holdout scores and labels
  (the only labelled out-of-sample rows), and the **attribution reference** is the mean
  LightGBM contribution over (a sample of) the same holdout rows, so the score shift it splits
  is the shift of the same scores the score check compares.
* A **reference sample** of the feature rows (``multivariate_sample`` rows) is kept for the
  domain classifier.

Feature distributions are stored once per training dataset version, split and settings at
``artifacts/drift/datasets/<name>/v<version>/<key>.ref`` (the sample beside it as
``<key>.sample.parquet``); the scores once per model version at
``artifacts/drift/models/<model>/v<version>/scores.ref`` and the calibration and mean
contributions at ``.../estimator-<key>.ref``. All are listed in ``drift_references`` and checked
by sha256 when read back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from core import drift
from core.config import Settings
from core.errors import ModelVersionNotFoundError
from core.ids import new_id, utcnow
from core.lake import Lake
from core.monitoring.config import champion, monitor_config
from core.signature import Signature

__all__ = ["SCORE_ROW", "ModelReference", "clear_cache", "reference"]

_log = logging.getLogger("lakeops.monitoring")
SCORE_ROW = "__score__"  # not "score": a feature may be called that
_FORMAT = 2  # 2: quality counts in the references, training-distribution default, reference sample
_CACHE: dict[tuple[str, str], dict[str, Any]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 16


def clear_cache() -> None:
    """Forget the references cached in this process (the next call reads them from the lake)."""
    with _CACHE_LOCK:
        _CACHE.clear()


@dataclass(frozen=True)
class ModelReference:
    """The reference of one champion version (see the module docstring for what each part is built from).

    Attributes:
        mode: ``training`` or ``holdout`` (which rows the feature distributions describe).
        rows: rows behind the feature distributions.
        holdout_rows: rows behind the score reference, the calibration and the attribution.
        calibration: the CBPE calibration (None for a regression model).
        contrib_mean: mean LightGBM contributions over ``contrib_rows`` holdout rows
            (features in signature order, then the expected value).
        sample: up to ``multivariate_sample`` feature rows of the reference, for the domain classifier.
    """

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
    mode: str = "training"
    holdout_rows: int = 0
    calibration: drift.Calibration | None = None
    contrib_mean: np.ndarray | None = None
    contrib_rows: int = 0
    sample: pl.DataFrame | None = None


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
    signature: Signature

    def key(self, *parts: Any) -> str:
        spec = [_FORMAT, self.dataset, self.version, self.target, self.time_column, self.seed, self.fraction,
                *parts]
        if self.params.get("split_method") == "served_holdout":  # a retrain: its traffic is part of it
            spec += [self.params.get("served_dataset"), self.params.get("served_version"), self.params.get("dedupe_key")]
        return hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()[:16]


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
    time_column = params.get("time_column", mv.signature.time_column) or None
    return _Split(mv.dataset_name, int(mv.dataset_version), mv.signature.target, time_column, seed,
                  float(params.get("valid_fraction", 0.2)), params, mv.signature)


def _frames(split: _Split, mode: str, max_rows: int, lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(feature reference rows, holdout rows) of the run's training data (``core.trainsets``).

    The reference is every row the model was trained and validated on (a stated, seeded uniform
    sample of ``max_rows`` above that), or its holdout alone with ``mode = "holdout"``.
    """
    from core import trainsets

    frames = trainsets.run_frames(dataset=split.dataset, version=split.version, params=split.params,
                                  signature=split.signature, seed=split.seed, lake=lake)
    ref = frames.holdout if mode == "holdout" else pl.concat([frames.train, frames.holdout], how="diagonal_relaxed")
    if ref.height > max_rows:
        ref = ref.sample(max_rows, seed=split.seed)
    return ref, frames.holdout


def _cached(path: str, lake: Lake) -> tuple[tuple[str, str], dict[str, Any] | None]:
    key = (lake.uri, path)
    with _CACHE_LOCK:
        return key, _CACHE.get(key)


def _stored_bytes(path: str, lake: Lake) -> tuple[dict[str, Any], bytes] | None:
    """The ``drift_references`` row and sha256-checked bytes at ``path``, or None when it must be built."""
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
    return row, data


def _load(path: str, lake: Lake, decode: Any) -> dict[str, Any] | None:
    key, cached = _cached(path, lake)
    if cached is not None:
        return cached
    got = _stored_bytes(path, lake)
    if got is None:
        return None
    value = {"row": got[0], "value": decode(got[1])}
    _remember(key, value)
    return value


def _store(path: str, data: bytes, value: Any, row: dict[str, Any], lake: Lake) -> dict[str, Any]:
    lake.put_bytes(path, data)
    row = {"reference_id": new_id(), "path": path, "sha256": hashlib.sha256(data).hexdigest(), "at": utcnow(), **row}
    lake.append("drift_references", [row], metadata={"reference": path})
    out = {"row": row, "value": value}
    _remember((lake.uri, path), out)
    return out


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def _estimator_bytes(calibration: drift.Calibration | None, contrib: np.ndarray | None, rows: int) -> bytes:
    packer = drift.ArrayPacker()
    header: dict[str, Any] = {"kind": "estimator", "contrib_rows": rows, "calibration": None}
    if contrib is not None:
        header["contrib_mean"] = packer.put(contrib, "<f8")
    if calibration is not None:
        header["calibration"] = {
            "x": packer.put(calibration.x, "<f8"), "y": packer.put(calibration.y, "<f8"),
            "applied": calibration.applied, "threshold": calibration.threshold, "n": calibration.n,
            "positives": calibration.positives, "ece_before": calibration.ece_before, "ece_after": calibration.ece_after,
        }
    return packer.pack(header)


def _estimator_from_bytes(data: bytes) -> dict[str, Any]:
    h, get = drift.unpack_arrays(data)
    cal = h.get("calibration")
    return {
        "calibration": None if not cal else drift.Calibration(
            get(cal["x"]), get(cal["y"]), bool(cal["applied"]), float(cal["threshold"]), int(cal["n"]),
            int(cal["positives"]), float(cal["ece_before"]), float(cal["ece_after"])),
        "contrib_mean": get(h["contrib_mean"]) if "contrib_mean" in h else None,
        "contrib_rows": int(h.get("contrib_rows") or 0),
    }


def reference(model: str, *, version: int | None = None, lake: Lake, settings: Settings) -> ModelReference:
    """Return the reference of ``model`` (the champion by default), building and storing each part once.

    Later calls (any process) read the stored arrays, checked by sha256, and keep them in memory.
    """
    from core import registry
    mv = registry.get_version(model, version, lake=lake) if version is not None else champion(model, lake=lake)
    cfg = monitor_config(model, settings)
    policy = cfg.policy
    split = _split_of(mv, lake)
    declared = {f.name: f.kind for f in mv.signature.features}
    key = split.key(cfg.reference, cfg.reference_rows, sorted(declared.items()), policy.bins)
    base = f"artifacts/drift/datasets/{split.dataset}/v{split.version}/{key}"
    path, sample_path = f"{base}.ref", f"{base}.sample.parquet"
    mdir = f"artifacts/drift/models/{model}/v{mv.version}"
    scores_path = f"{mdir}/scores.ref"
    est_path = f"{mdir}/estimator-{split.key(policy.attribution_sample)}.ref"
    feats = _load(path, lake, drift.reference_from_bytes)
    sample = _load(sample_path, lake, lambda b: pl.read_parquet(io.BytesIO(b)))
    scores = _load(scores_path, lake, drift.reference_from_bytes)
    est = _load(est_path, lake, _estimator_from_bytes)
    if feats is None or sample is None or scores is None or est is None:
        ref_frame, holdout = _frames(split, cfg.reference, cfg.reference_rows, lake)
        kinds = {c: k for c, k in declared.items() if c in ref_frame.columns}
        common = {"dataset": split.dataset, "dataset_version": split.version}
        if feats is None:
            refs = drift.build_reference(
                ref_frame, numeric=[c for c, k in kinds.items() if k == "numeric"],
                categorical=[c for c, k in kinds.items() if k == "categorical"], bins=policy.bins,
            )
            feats = _store(path, drift.reference_to_bytes(refs), refs, {
                "kind": f"features:{cfg.reference}", **common, "rows": ref_frame.height,
                "columns_json": json.dumps(kinds)}, lake)
        if sample is None:
            rows = ref_frame.select(list(kinds))
            if rows.height > policy.multivariate_sample:
                rows = rows.sample(policy.multivariate_sample, seed=split.seed)
            sample = _store(sample_path, _parquet(rows), rows, {
                "kind": f"sample:{cfg.reference}", **common, "rows": rows.height, "columns_json": json.dumps(kinds)}, lake)
        if scores is None or est is None:
            loaded = registry.load(model, version=mv.version, alias=None, lake=lake)
            if scores is None:
                score_ref = drift.NumericReference.from_values(loaded.model.predict(holdout), bins=policy.bins)
                scores = _store(scores_path, drift.reference_to_bytes({SCORE_ROW: score_ref}), {SCORE_ROW: score_ref}, {
                    "kind": "scores", **common, "model": model, "model_version": mv.version, "rows": holdout.height,
                    "columns_json": json.dumps({SCORE_ROW: "numeric"})}, lake)
            if est is None:
                est_value = _build_estimator(loaded.model, holdout, split, policy.attribution_sample)
                data = _estimator_bytes(est_value["calibration"], est_value["contrib_mean"], est_value["contrib_rows"])
                est = _store(est_path, data, _estimator_from_bytes(data), {
                    "kind": "estimator", **common, "model": model, "model_version": mv.version,
                    "rows": holdout.height, "columns_json": json.dumps(list(declared))}, lake)
    row = feats["row"]
    score = scores["value"].get(SCORE_ROW) or scores["value"]["score"]  # "score": stored by earlier releases
    assert isinstance(score, drift.NumericReference)
    kinds = json.loads(row["columns_json"])
    e = est["value"]
    return ModelReference(
        model, int(mv.version), split.dataset, split.version, int(row["rows"]), kinds,
        {k: feats["value"][k] for k in kinds}, score, path, scores_path, cfg.reference, int(scores["row"]["rows"]),
        e["calibration"], e["contrib_mean"], e["contrib_rows"], sample["value"],
    )


def _build_estimator(model: Any, holdout: pl.DataFrame, split: _Split, attribution_rows: int) -> dict[str, Any]:
    """CBPE calibration (binary models) and mean contributions over a holdout sample."""
    calibration = None
    if model.signature.binary and split.target in holdout.columns:
        labels = holdout[split.target].cast(pl.Float64).to_numpy()
        calibration = drift.Calibration.fit(model.predict(holdout), labels,
                                            threshold=model.signature.threshold, seed=split.seed)
    contrib, rows = None, 0
    if attribution_rows > 0 and holdout.height:
        part = holdout if holdout.height <= attribution_rows else holdout.sample(attribution_rows, seed=split.seed)
        contrib, rows = model.contributions(part).mean(axis=0), part.height
    return {"calibration": calibration, "contrib_mean": contrib, "contrib_rows": rows}


def _remember(key: tuple[str, str], value: dict[str, Any]) -> None:
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = value

