"""The training use case: load a dataset version, train LightGBM deterministically, track everything, and reproduce a run."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from core import datasets, features, tracking, training, trainsets
from core.compute import compute_config
from core.config import Settings, read_toml
from core.errors import ArtifactIntegrityError, DatasetNotFoundError, TrainingError
from core.lake import Lake

__all__ = [
    "ReproduceOutcome",
    "TrainOutcome",
    "feature_importance",
    "load_params_file",
    "reproduce",
    "run_leakage",
    "run_model",
    "train_model",
]

_log = logging.getLogger("lakeops.training")
AUTO = "auto"
MODEL_PATH = "model/model.txt"
SIGNATURE_PATH = "model/signature.json"
IMPORTANCE_PATH = "model/importance.json"
LEAKAGE_PATH = "model/leakage.json"


@dataclass(frozen=True)
class TrainOutcome:
    """What ``train_model`` produced (the run holds the rest)."""

    run_id: str
    dataset: str
    dataset_version: int
    metrics: dict[str, float]
    model: training.Model
    best_iteration: int = 0
    excluded: dict[str, str] | None = None
    leakage: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReproduceOutcome:
    """A retrain of a recorded run and whether it produced the very same model."""

    run_id: str
    new_run_id: str
    sha256: str
    new_sha256: str

    @property
    def matches(self) -> bool:
        """True when the retrained model's sha256 equals the recorded one."""
        return self.sha256 == self.new_sha256


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read training params from a TOML file (a ``[params]`` table or top-level keys), validated.

    Raises:
        TrainingError: the file is unreadable, not TOML, or has unknown parameter names.
    """
    doc = read_toml(path, what="params file", error=TrainingError)
    params = doc.get("params", doc)
    if not isinstance(params, dict):
        raise TrainingError(f"params file {path}: [params] must be a table")
    try:
        return training.validate_params(params)
    except TrainingError as exc:
        raise TrainingError(f"params file {path}: {exc}") from None


def _resolve_version(dataset: str, version: int | None, lake: Lake) -> int:
    latest = datasets.latest_version(dataset, lake=lake)
    if version is None:
        return latest
    if not 1 <= version <= latest:
        raise DatasetNotFoundError(f"dataset {dataset!r} has versions 1-{latest}; asked for {version}")
    return version


def _checked_task(task: str | None) -> training.Task | None:
    """``task`` as a training task (None: inferred from the target), or a TrainingError naming it."""
    if task is None:
        return None
    if task == "binary":
        return "binary"
    if task == "regression":
        return "regression"
    raise TrainingError(f"task must be 'binary' or 'regression', got {task!r}")


def train_model(
    dataset: str,
    *,
    target: str,
    version: int | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    experiment: str | None = None,
    name: str | None = None,
    task: str | None = None,
    time_column: str | None = AUTO,
    exclude: Sequence[str] = (),
    tags: Mapping[str, Any] | None = None,
    lake: Lake,
    passthrough: Sequence[str] | None = None,
    feedback_key: str | None = None,
    served: tuple[str, int] | None = None,
    dedupe: tuple[str | None, Sequence[str]] | None = None,
    engine: str | None = None,
    settings: Settings,
) -> TrainOutcome:
    """Train a model on a dataset version and record it as a run.

    The run logs: params (the effective LightGBM params, ``seed``, ``target``, ``task``, the
    split definition, the excluded columns and ``train_params``, the user params as JSON, which
    ``reproduce`` uses); per-iteration ``train.<metric>``/``valid.<metric>`` step metrics;
    final validation metrics (``auc``, ``log_loss`` ... or ``rmse``, ``mae``, ``r2``) and the
    training-set ones as ``train_<metric>``; artifacts ``model/model.txt``,
    ``model/signature.json`` and ``model/importance.json``; tag ``model_sha256``. The run is
    committed before this returns.

    Args:
        dataset: dataset name.
        target: target column.
        version: dataset version (default latest).
        params: LightGBM params (validated), plus ``valid_fraction`` and ``threshold``.
        seed: split and LightGBM seed.
        experiment: experiment name (default: the dataset name).
        name: run name (default ``<dataset>@v<version>``).
        task: ``binary`` or ``regression`` (default: inferred from the target).
        time_column: ``"auto"`` (a UTC datetime column, if any), a column, or None (stratified).
        exclude: columns to keep out of the features.
        tags: extra run tags.
        lake: the lake.
        passthrough: columns requests may carry beside the features, logged but never seen by
            the model (None: the time column and the id-like columns).
        feedback_key: a pass-through field feedback may join by instead of the prediction id.
        served: ``(name, version)`` of a ``<model>_served`` dataset: a retrain. The rows are the
            source version plus the older labelled traffic, and the holdout is the newest
            labelled traffic (``core.trainsets.retrain_frames``).
        dedupe: with ``served``, ``(key column or None, content columns)``: how rows are told
            apart for de-duplication (``core.trainsets.dedupe_key`` of the retrained model).
        engine: ``local`` or ``dask`` (default: ``[compute] engine``). On ``dask`` the version
            is read from its snapshot files by the workers, split exactly as locally and trained
            with ``lightgbm.dask`` (``core.compute.train``); the run also records ``engine``,
            ``workers`` and ``threads``. A retrain's rows are combined here, then trained there.
        settings: settings to read ``[compute]`` from.

    Raises:
        DatasetNotFoundError: unknown dataset or version.
        TrainingError: bad target, params or data (a run already started ends ``failed``).
    """
    user_params = training.validate_params(params)
    version = _resolve_version(dataset, version, lake)
    task = _checked_task(task)
    cfg = compute_config(settings, engine=engine)
    if cfg.engine == "dask":
        return _train_on_cluster(
            cfg, dataset, version, target=target, user_params=user_params, seed=seed, experiment=experiment, name=name,
            task=task, time_column=time_column, exclude=exclude, tags=tags, lake=lake, passthrough=passthrough,
            feedback_key=feedback_key, served=served, dedupe=dedupe, actor=settings.actor,
        )
    frame = datasets.load(dataset, version, lake=lake)
    if frame.height == 0:
        raise TrainingError(f"dataset {dataset!r} version {version} has no rows")
    inferred = training.infer_task(frame, target)  # unknown/one-class/non-numeric target: no run
    task_ = task or inferred
    if task_ == "binary" and inferred != "binary":
        raise TrainingError(f"target {target!r} is not 0/1: it cannot be trained as binary")
    if time_column == AUTO:
        time_column = training.detect_time_column(frame)
    elif time_column is not None and time_column not in frame.columns:
        raise TrainingError(f"time column {time_column!r} is not a column of dataset {dataset!r}")
    views = features.training_views(dataset, version, lake=lake)  # [] unless a training set of feature views
    if views:
        exclude, passthrough = _feature_view_columns(frame, views, target, time_column, exclude, passthrough)
    valid_frame = None
    split_info: dict[str, Any] = {}
    if served is not None:
        frame, valid_frame, split_info, exclude = _retrain_frames(frame, served, dedupe, target, user_params, exclude, lake)
    with tracking.start_run(
        experiment or dataset,
        name or f"{dataset}@v{version}",
        dataset=(dataset, version),
        seed=seed,
        tags={"task": task_, "target": target, "source": "lakeops.train", **(tags or {})},
        sync=True,
        lake=lake,
        actor=settings.actor,
    ) as run:
        result = training.train(
            frame, target, task=task_, params=user_params, seed=seed, time_column=time_column, exclude=exclude,
            passthrough=passthrough, feedback_key=feedback_key, valid=valid_frame,
        )
        if views:
            _attach_feature_views(result.model.signature, views)
        _record(run, result, user_params=user_params, split_info=split_info, target=target, task=task_,
                time_column=time_column, exclude=exclude, passthrough=passthrough, feedback_key=feedback_key)
    return TrainOutcome(
        run_id=run.run_id,
        dataset=dataset,
        dataset_version=version,
        metrics=result.metrics,
        model=result.model,
        best_iteration=result.best_iteration,
        excluded=result.excluded,
        leakage=result.leakage,
    )


def _feature_view_columns(
    frame: pl.DataFrame, views: list[dict[str, Any]], target: str, time_column: str | None,
    exclude: Sequence[str], passthrough: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """A training set's entity keys are pass-through fields (what a request names), never features.

    An entity key training would take for an id anyway (``*_id``, or unique) stays one (role
    ``id``); any other (``tailnum``: repeated, or an integer) is excluded from the features.
    """
    entities = list(dict.fromkeys(v["entity"] for v in views))
    tcols = [time_column] if time_column else []
    clean = frame.filter(pl.col(target).is_not_null())
    idlike = training.id_like_columns(clean, exclude=[target, *tcols, *exclude])
    exclude = [*exclude, *(e for e in entities if e not in exclude and e not in idlike)]
    if passthrough is None:  # the default (time column and id-like columns, as training infers them) plus the keys
        passthrough = [*tcols, *idlike]
    return exclude, [*passthrough, *(e for e in entities if e not in passthrough)]


def _attach_feature_views(signature: dict[str, Any], views: list[dict[str, Any]]) -> None:
    """Record in the signature which model features a request may leave out: the service fills them
    from the online values of these view versions, by the entity key the request carries."""
    names = {f["name"] for f in signature["features"]}
    signature["feature_views"] = [
        {"view": v["view"], "version": v["version"], "hash": v["hash"], "entity": v["entity"],
         "features": [f for f in v["features"] if f in names], "missing": v["missing"],
         "defaults": {f: d for f, d in v["defaults"].items() if f in names}}
        for v in views
    ]


def _retrain_frames(frame: pl.DataFrame, served: tuple[str, int], dedupe: tuple[str | None, Sequence[str]] | None,
                    target: str, user_params: Mapping[str, Any], exclude: Sequence[str], lake: Lake,
                    ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any], list[str]]:
    """A retrain's training rows, holdout, split params and exclusions (``core.trainsets.retrain_frames``)."""
    key, content = (dedupe[0], list(dedupe[1])) if dedupe is not None else (None, [])
    frames = trainsets.retrain_frames(
        frame, datasets.load(served[0], served[1], lake=lake), target=target, key=key, content=content,
        valid_fraction=float(user_params.get("valid_fraction", 0.2)),
    )
    split_info = {**frames.info, "served_dataset": served[0], "served_version": served[1],
                  "dedupe_key": key or "", "dedupe_content": json.dumps(content)}
    return frames.train, frames.holdout, split_info, [*exclude, *(c for c in trainsets.SERVED_META if c not in exclude)]


def _record(run: Any, result: training.TrainResult, *, user_params: Mapping[str, Any], split_info: Mapping[str, Any],
            target: str, task: str, time_column: str | None, exclude: Sequence[str], passthrough: Sequence[str] | None,
            feedback_key: str | None, extra: Mapping[str, Any] | None = None) -> None:
    """Log a training result into its run: params, curves, metrics, model artifacts, tags (see ``train_model``)."""
    run.log_params(
        {
            **{k: v for k, v in result.params.items()},
            "target": target,
            "task": task,
            "train_params": json.dumps(user_params, sort_keys=True),
            "split_method": split_info.get("split_method") or result.split["method"],
            **{k: v for k, v in split_info.items() if k != "split_method"},
            "time_column": time_column or "",
            "valid_fraction": result.split["valid_fraction"],
            "excluded_columns": json.dumps(result.excluded, sort_keys=True),
            "exclude": json.dumps(list(exclude)),
            "passthrough": json.dumps(None if passthrough is None else list(passthrough)),
            "feedback_key": feedback_key or "",
            "rows_train": result.rows["train"],
            "rows_valid": result.rows["valid"],
            **(extra or {}),
        }
    )
    curves = result.history
    n = max((len(v) for v in curves.values()), default=0)
    for i in range(n):
        run.log_metrics({k: v[i] for k, v in curves.items() if i < len(v)}, step=i + 1)
    run.log_metrics(result.metrics, step=result.best_iteration)
    run.log_metrics(
        {f"train_{k}": v for k, v in result.train_metrics.items()}, step=result.best_iteration
    )
    run.log_metric("best_iteration", result.best_iteration)
    model = result.model
    run.log_text(MODEL_PATH, model.text)
    run.log_dict(SIGNATURE_PATH, model.signature)
    run.log_artifact(IMPORTANCE_PATH, json.dumps(model.importance().to_dicts()).encode("utf-8"))
    run.log_dict(LEAKAGE_PATH, result.leakage)
    flagged = [d["feature"] for d in result.leakage.get("flagged", [])]
    run.set_tags({"model_sha256": model.sha256, **({"leakage": ",".join(flagged)} if flagged else {})})
    for d in result.leakage.get("flagged", []):
        _log.warning("possible target leakage in run %s: feature %r %s", run.run_id, d["feature"], d["why"])


def _train_on_cluster(
    cfg: Any, dataset: str, version: int, *, target: str, user_params: dict[str, Any], seed: int,
    experiment: str | None, name: str | None, task: str | None, time_column: str | None, exclude: Sequence[str],
    tags: Mapping[str, Any] | None, lake: Lake, passthrough: Sequence[str] | None, feedback_key: str | None,
    served: tuple[str, int] | None, dedupe: tuple[str | None, Sequence[str]] | None, actor: str,
) -> TrainOutcome:
    """``train_model`` on the Dask cluster (``core.compute.train``): the same run, params, curves,
    metrics, artifacts and tags, plus ``engine``, ``workers`` and ``threads``."""
    from core.compute import session
    from core.compute.frames import dataset_parts
    from core.compute.train import train_on_cluster

    parts = dataset_parts(dataset, version, lake=lake)
    schema_frame = pl.DataFrame(pl.from_arrow(parts.schema.empty_table()))
    if target not in schema_frame.columns:
        raise TrainingError(f"target {target!r} is not a column of the dataset; columns: {', '.join(schema_frame.columns)}")
    if time_column == AUTO:
        time_column = training.detect_time_column(schema_frame)
    elif time_column is not None and time_column not in schema_frame.columns:
        raise TrainingError(f"time column {time_column!r} is not a column of dataset {dataset!r}")
    views = features.training_views(dataset, version, lake=lake)  # a training set of feature views: keys are not features
    frames = None
    split_info: dict[str, Any] = {}
    if served is not None:  # a retrain: its de-duplicated rows are made here, trained on the cluster
        train_f, valid_f, split_info, exclude = _retrain_frames(
            datasets.load(dataset, version, lake=lake), served, dedupe, target, user_params, exclude, lake)
        frames = (train_f, valid_f)
    with session(cfg) as client, tracking.start_run(
        experiment or dataset,
        name or f"{dataset}@v{version}",
        dataset=(dataset, version),
        seed=seed,
        tags={"task": task or "", "target": target, "source": "lakeops.train", "engine": "dask", **(tags or {})},
        sync=True,
        lake=lake,
        actor=actor,
    ) as run:
        out = train_on_cluster(
            client, cfg, parts=None if frames else parts, frames=frames, target=target, task=task,
            params=user_params, seed=seed, time_column=time_column, exclude=exclude, passthrough=passthrough,
            feedback_key=feedback_key, entity_keys=list(dict.fromkeys(v["entity"] for v in views)),
        )
        result = out.result
        if views:
            _attach_feature_views(result.model.signature, views)
        run.set_tags({"task": result.model.signature["task"]})
        _record(run, result, user_params=user_params, split_info=split_info, target=target,
                task=result.model.signature["task"], time_column=time_column, exclude=exclude, passthrough=passthrough,
                feedback_key=feedback_key, extra={**out.engine, "leakage_sample_rows": result.leakage.get("sample_rows", 0)})
    return TrainOutcome(
        run_id=run.run_id, dataset=dataset, dataset_version=version, metrics=result.metrics, model=result.model,
        best_iteration=result.best_iteration, excluded=result.excluded, leakage=result.leakage,
    )


def run_leakage(run_id: str, *, lake: Lake) -> dict[str, Any] | None:
    """The leakage report a training run logged (None for runs of earlier releases)."""
    try:
        return json.loads(tracking.read_artifact(run_id, LEAKAGE_PATH, lake=lake))
    except ArtifactIntegrityError:
        return None


def run_model(run_id: str, *, lake: Lake) -> training.Model:
    """Load the model a training run logged (text + signature, sha256 checked by the artifact read)."""
    text = tracking.read_artifact(run_id, MODEL_PATH, lake=lake).decode("utf-8")
    signature = json.loads(tracking.read_artifact(run_id, SIGNATURE_PATH, lake=lake))
    return training.Model.from_text(text, signature)


def feature_importance(run_id: str, *, lake: Lake) -> pl.DataFrame:
    """The run's feature importance: ``feature, gain, split`` (empty when the run has none)."""
    try:
        data = tracking.read_artifact(run_id, IMPORTANCE_PATH, lake=lake)
    except ArtifactIntegrityError:
        return pl.DataFrame(schema={"feature": pl.String, "gain": pl.Float64, "split": pl.Int64})
    return pl.DataFrame(
        json.loads(data), schema={"feature": pl.String, "gain": pl.Float64, "split": pl.Int64}
    )


def reproduce(run_id: str, *, lake: Lake, settings: Settings) -> ReproduceOutcome:
    """Retrain run ``run_id`` from its recorded dataset version, params and seed; compare sha256.

    ``settings`` give ``[compute]`` (the engine the run recorded is used).

    Raises:
        RunNotFoundError: no such run.
        TrainingError: the run is not a lakeops training run (nothing to reproduce from).
    """
    info = tracking.get_run(run_id, lake=lake)
    needed = ("target", "train_params")
    if info.dataset_name is None or info.dataset_version is None or any(k not in info.params for k in needed):
        raise TrainingError(
            f"run {run_id} is not a 'lakeops train' run: it has no dataset version or training params"
        )
    sha = info.tags.get("model_sha256")
    if sha is None:
        raise TrainingError(f"run {run_id} has no model (status {info.status}); nothing to reproduce")
    outcome = train_model(
        info.dataset_name,
        target=info.params["target"],
        version=info.dataset_version,
        params=json.loads(info.params["train_params"]),
        seed=int(info.seed or 0),
        experiment=info.experiment,
        name=f"reproduce {info.name or run_id}",
        task=info.params.get("task"),
        time_column=info.params.get("time_column") or None,
        exclude=json.loads(info.params.get("exclude", "[]")),
        tags={"reproduces": run_id},
        lake=lake,
        passthrough=json.loads(info.params.get("passthrough") or "null"),
        feedback_key=info.params.get("feedback_key") or None,
        served=(info.params["served_dataset"], int(info.params["served_version"]))
        if info.params.get("split_method") == "served_holdout" else None,
        dedupe=(info.params.get("dedupe_key") or None, json.loads(info.params.get("dedupe_content") or "[]")),
        engine=info.params.get("engine") or "local", settings=settings
    )
    return ReproduceOutcome(run_id, outcome.run_id, sha, outcome.model.sha256)
