"""Batch scoring: score a dataset version with a registered model version and record the scores as a dataset version.

The output is a dataset of its own (default ``<dataset>_<model>_scores``), one version per
scoring (``replace``: earlier scorings stay reachable by version): the input's pass-through
columns the model declares (its ids and event time, so scores join back to rows), ``score`` and,
for a binary model, ``predicted_label``. Lineage is recorded twice: the output version's
``source`` names the model version, its sha256 and the input version, and a tracking run
(experiment ``score``) holds the input dataset version as its lineage and the model, model
version, sha256, output dataset and output version as tags, with the engine and its workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from core import datasets, features, registry, tracking
from core.compute import compute_config
from core.config import Settings
from core.lake import Lake

__all__ = ["ScoreOutcome", "score_dataset"]


@dataclass(frozen=True)
class ScoreOutcome:
    """A batch scoring: what was scored, with which model version, and where the scores are."""

    run_id: str
    dataset: str
    dataset_version: int
    model: str
    model_version: int
    output: str
    output_version: int
    rows: int
    engine: str


def score_dataset(
    dataset: str,
    *,
    model: str,
    model_version: int | None = None,
    alias: str | None = "champion",
    dataset_version: int | None = None,
    output: str | None = None,
    keep: Sequence[str] | None = None,
    engine: str | None = None,
    lake: Lake,
    settings: Settings,
    actor: str | None = None,
) -> ScoreOutcome:
    """Score ``dataset`` (a version, default latest) with ``model`` (a version, or the version ``alias`` names).

    Args:
        dataset: the input dataset.
        model: the registered model; ``model_version`` or ``alias`` (default ``champion``) picks the version.
        dataset_version: the input version (default latest).
        output: the output dataset (default ``<dataset>_<model>_scores``).
        keep: input columns to copy beside the scores (default: the model's pass-through fields
            the dataset has).
        engine: ``local`` or ``dask`` (default ``[compute] engine``).
        lake: the lake; ``settings`` the settings (engine, actor); ``actor`` who scores.

    Raises:
        DatasetNotFoundError, ModelNotFoundError, ModelVersionNotFoundError: unknown input.
        ArtifactIntegrityError: the model artifact fails its sha256.
        DataValidationError: the dataset lacks a feature the model needs.
        FeatureViewError: a model trained on feature views, on rows without its time column or a
            view's entity column (nothing written).
        ComputeError: the cluster lost the work.
    """
    cfg = compute_config(settings, engine=engine)
    loaded = registry.load(model, version=model_version, alias=None if model_version is not None else alias, lake=lake)
    version = dataset_version if dataset_version is not None else datasets.latest_version(dataset, lake=lake)
    out_name = output or f"{dataset}_{model}_scores"
    lake.table_uri(f"data/{out_name}")  # a bad output name fails before any work
    if keep is None:
        keep = [p["name"] for p in loaded.signature.get("passthrough") or ()]
    tags = {"model": model, "model_version": loaded.version, "model_sha256": loaded.sha256, "output_dataset": out_name,
            "engine": cfg.engine, "source": "lakeops.score"}
    if cfg.engine == "dask":
        from core.compute.frames import dataset_parts

        parts = dataset_parts(dataset, version, lake=lake)
        columns = list(parts.schema.names)
    else:
        rows = datasets.load(dataset, version, lake=lake)
        columns = rows.columns
    # a model trained on feature views: its view features as of each row's time, computed as a training
    # set computes them (the sources read and prepared once, here); missing time/entity columns refused
    # before anything is written
    needed = features.view_features_needed(columns, loaded.signature, strict=True, lake=lake)
    apply = partial(features.apply_view_features, time_column=str(loaded.signature.get("time_column") or ""))
    with tracking.start_run("score", f"{model} v{loaded.version} on {dataset}@v{version}", dataset=(dataset, version),
                            tags=tags, sync=True, lake=lake, actor=actor or settings.actor) as run:
        if cfg.engine == "dask":
            from core.compute import engine_info, session
            from core.compute.score import score_parts

            with session(cfg) as client:  # the view features beside each partition, on the workers
                scores = score_parts(client, parts, loaded.model, keep, transform=apply if needed else None, data=needed)
                run.set_tags({"workers": engine_info(client)["workers"], "partitions": len(parts)})
        else:
            from core.compute.score import score_frame

            scores = score_frame(apply(rows, needed) if needed else rows, loaded.model, keep)
        written = datasets.ingest(
            out_name, scores, mode="replace", lake=lake, settings=settings, actor=actor or settings.actor, validate=False,
            source=f"lakeops score: model {model} v{loaded.version} (sha256 {loaded.sha256}) on {dataset}@v{version}",
        )
        run.set_tags({"output_version": written.version})
        run.log_metric("rows", scores.height)
    return ScoreOutcome(run.run_id, dataset, version, model, loaded.version, out_name, written.version, scores.height,
                        cfg.engine)

