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
from core.compute import compute_config
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

    The reference is every row the model was trained and validated on (above ``max_rows``, the
    ``max_rows`` rows of smallest sample hash: a seeded uniform sample the Dask engine draws too),
    or its holdout alone with ``mode = "holdout"``.
    """
    from core import trainsets
    from core.compute.reference import hash_sample

    frames = trainsets.run_frames(dataset=split.dataset, version=split.version, params=split.params,
                                  signature=split.signature, seed=split.seed, lake=lake)
    ref = frames.holdout if mode == "holdout" else pl.concat([frames.train, frames.holdout], how="diagonal_relaxed")
    if ref.height > max_rows:
        ref = hash_sample(ref, max_rows, split.seed)
    return ref, frames.holdout


@dataclass(frozen=True)
class _Built:
    """A reference's parts before they are stored: from the run's rows here, or from the Dask cluster."""

    rows: int
    kinds: dict[str, str]
    features: dict[str, drift.Reference]
    sample: pl.DataFrame
    holdout_rows: int
    scores: np.ndarray | None
    labels: np.ndarray | None
    contrib_mean: np.ndarray | None
    contrib_rows: int


def _build_locally(split: _Split, cfg: Any, declared: Mapping[str, str], model: Any, lake: Lake) -> _Built:
    from core.compute.reference import hash_sample

    policy = cfg.policy
    ref_frame, holdout = _frames(split, cfg.reference, cfg.reference_rows, lake)
    kinds = {c: k for c, k in declared.items() if c in ref_frame.columns}
    refs = drift.build_reference(
        ref_frame, numeric=[c for c, k in kinds.items() if k == "numeric"],
        categorical=[c for c, k in kinds.items() if k == "categorical"], bins=policy.bins,
    )
    sample = hash_sample(ref_frame, policy.multivariate_sample, split.seed).select(list(kinds))
    scores = labels = contrib = None
    contrib_rows = 0
    if model is not None:
        scores = model.predict(holdout)
        labels = holdout[split.target].cast(pl.Float64).to_numpy() if split.target in holdout.columns else None
        if policy.attribution_sample > 0 and holdout.height:
            part = hash_sample(holdout, policy.attribution_sample, split.seed)
            contrib, contrib_rows = model.contributions(part).mean(axis=0), part.height
    return _Built(ref_frame.height, kinds, refs, sample, holdout.height, scores, labels, contrib, contrib_rows)


def _build_on_cluster(split: _Split, cfg: Any, declared: Mapping[str, str], model: Any, lake: Lake,
                      ccfg: Any) -> _Built:
    """The same parts from per-partition summaries on the Dask cluster (``core.compute.reference``)."""
    from core.compute import session
    from core.compute.frames import dataset_parts
    from core.compute.reference import build_on_cluster

    policy = cfg.policy
    parts = dataset_parts(split.dataset, split.version, lake=lake)
    kinds = {c: k for c, k in declared.items() if c in parts.schema.names}
    with session(ccfg) as client:
        got = build_on_cluster(
            client, parts=parts, signature=split.signature, time_column=split.time_column, seed=split.seed,
            valid_fraction=split.fraction, holdout_mode=cfg.reference == "holdout", max_rows=cfg.reference_rows,
            kinds=kinds, bins=policy.bins, sample_rows=policy.multivariate_sample,
            attribution_rows=policy.attribution_sample, model=model,
        )
    return _Built(got.rows, kinds, got.features, got.sample, int(got.scores.size), got.scores if model else None,
                  got.labels if model else None, got.contrib_mean, got.contrib_rows)


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


def reference(model: str, *, version: int | None = None, lake: Lake, settings: Settings,
              engine: str | None = None) -> ModelReference:
    """Return the reference of ``model`` (the champion by default), building and storing each part once.

    Later calls (any process) read the stored arrays, checked by sha256, and keep them in memory.
    On the ``dask`` engine (``engine``, default ``[compute] engine``) a missing part is built from
    per-partition summaries on the cluster (``core.compute.reference``), equal to the local build.
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
        loaded = registry.load(model, version=mv.version, alias=None, lake=lake) if scores is None or est is None else None
        ccfg = compute_config(settings, engine=engine)
        if ccfg.engine == "dask" and split.params.get("split_method") != "served_holdout":
            built = _build_on_cluster(split, cfg, declared, loaded.model if loaded else None, lake, ccfg)
        else:  # a retrain's rows (source plus served traffic, de-duplicated) are made here on every engine
            built = _build_locally(split, cfg, declared, loaded.model if loaded else None, lake)
        kinds = built.kinds
        common = {"dataset": split.dataset, "dataset_version": split.version}
        if feats is None:
            feats = _store(path, drift.reference_to_bytes(built.features), built.features, {
                "kind": f"features:{cfg.reference}", **common, "rows": built.rows,
                "columns_json": json.dumps(kinds)}, lake)
        if sample is None:
            rows = built.sample
            sample = _store(sample_path, _parquet(rows), rows, {
                "kind": f"sample:{cfg.reference}", **common, "rows": rows.height, "columns_json": json.dumps(kinds)}, lake)
        if loaded is not None and built.scores is not None:
            if scores is None:
                score_ref = drift.NumericReference.from_values(built.scores, bins=policy.bins)
                scores = _store(scores_path, drift.reference_to_bytes({SCORE_ROW: score_ref}), {SCORE_ROW: score_ref}, {
                    "kind": "scores", **common, "model": model, "model_version": mv.version, "rows": built.holdout_rows,
                    "columns_json": json.dumps({SCORE_ROW: "numeric"})}, lake)
            if est is None:
                est_value = _build_estimator(loaded.model, built, split)
                data = _estimator_bytes(est_value["calibration"], est_value["contrib_mean"], est_value["contrib_rows"])
                est = _store(est_path, data, _estimator_from_bytes(data), {
                    "kind": "estimator", **common, "model": model, "model_version": mv.version,
                    "rows": built.holdout_rows, "columns_json": json.dumps(list(declared))}, lake)
    assert feats is not None and sample is not None and scores is not None and est is not None
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


def _build_estimator(model: Any, built: _Built, split: _Split) -> dict[str, Any]:
    """CBPE calibration (binary models) on the holdout's scores and labels; the mean contributions as built."""
    calibration = None
    if model.signature.binary and built.labels is not None and built.scores is not None:
        calibration = drift.Calibration.fit(built.scores, built.labels,
                                            threshold=model.signature.threshold, seed=split.seed)
    return {"calibration": calibration, "contrib_mean": built.contrib_mean, "contrib_rows": built.contrib_rows}


def _remember(key: tuple[str, str], value: dict[str, Any]) -> None:
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = value

