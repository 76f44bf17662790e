"""Feature views in the lake: registration (append-only, content-hashed versions), lookups, training sets.

``feature_views`` holds one row per version. Registering a definition whose content hash equals
the latest version's returns that version; any change makes the next version, and old versions
stay usable (training sets, online tables and models name the version they used). Version
numbers are claimed like model versions: append a claim, and if a rival claim of the same number
committed first, withdraw ours (a ``withdrawn`` row) and claim the next number.

A training set is a dataset version (``data/<name>``) made from a label dataset version by a
point-in-time join with one or more view versions; ``feature_lineage`` records, per view, the
view version and hash, its source dataset version and the label dataset version, so a model
trained on it can be traced back to the source rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from core import datasets
from core.config import Settings
from core.errors import (
    DatasetNotFoundError,
    FeatureViewError,
    FeatureViewNotFoundError,
    SchemaMismatchError,
)
from core.features.definitions import FeatureView, parse_view
from core.features.pit import PreparedEvents, check_label_times, check_windows, prepare, values_at
from core.ids import new_id, utcnow
from core.lake import Lake

__all__ = [
    "TrainingSet",
    "build_training_set",
    "check_view",
    "get_view",
    "lineage",
    "lineage_sql",
    "list_views",
    "load_source",
    "parse_ref",
    "register",
    "training_sets",
    "training_views",
    "versions",
    "apply_view_features",
    "view_features_needed",
    "view_schema",
    "view_values",
    "with_view_features",
]

_TABLE = "feature_views"
_LINEAGE = "feature_lineage"
_MAX_CLAIMS = 20


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` or ``"name@v3"`` / ``"name@3"`` -> ``(name, version or None)``.

    Raises:
        FeatureViewError: a version that is not a positive integer.
    """
    name, _, ver = ref.partition("@")
    if not ver:
        return name, None
    digits = ver[1:] if ver[:1] in ("v", "V") else ver
    if not digits.isdigit() or int(digits) < 1:
        raise FeatureViewError(f"{ref!r}: write name@vN with a version N >= 1")
    return name, int(digits)


def versions(name: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """Registered feature view versions (all views, or one), newest version first.

    A claim that lost a race for its number (and was withdrawn) is left out.
    """
    rows = lake.read_or_empty(_TABLE)
    if name is not None:
        rows = rows.filter(pl.col("name") == name)
    withdrawn = rows.filter(pl.col("status") == "withdrawn")["registration_id"]
    rows = rows.filter((pl.col("status") == "registered") & ~pl.col("registration_id").is_in(withdrawn.implode()))
    # a claim whose withdrawal was never written (a crash mid-race): the first claim of a number wins
    rows = rows.sort(["name", "version", "registration_id"]).unique(["name", "version"], keep="first", maintain_order=True)
    return rows.sort(["name", "version"], descending=[False, True])


def list_views(*, lake: Lake) -> pl.DataFrame:
    """One row per view: latest version, number of versions, source, entity, features, last change."""
    rows = versions(lake=lake)
    out = rows.group_by("name", maintain_order=True).agg(
        pl.col("version").first().alias("latest_version"),
        pl.len().cast(pl.Int64).alias("versions"),
        pl.col("source").first(),
        pl.col("entity").first(),
        pl.col("event_time").first(),
        pl.col("definition_json").first().map_elements(lambda d: _count_features(json.loads(d)), return_dtype=pl.Int64)
        .alias("features"),
        pl.col("content_hash").first().str.slice(0, 12).alias("hash"),
        pl.col("created_at").first().alias("updated_at"),
        pl.col("description").first(),
    )
    return out.sort("name")


def _count_features(doc: Mapping[str, Any]) -> int:
    """Features of a stored definition: looked up and request features."""
    return len(doc["features"]) + len(doc.get("request_features") or ())


def get_view(name: str, version: int | None = None, *, lake: Lake) -> FeatureView:
    """A registered view version (the latest by default) as a ``FeatureView`` with its version.

    Raises:
        FeatureViewNotFoundError: no such view or version (naming the versions there are).
    """
    rows = versions(name, lake=lake)
    if rows.height == 0:
        known = versions(lake=lake)["name"].unique().sort().to_list()
        raise FeatureViewNotFoundError(
            f"feature view {name!r} does not exist; views: {', '.join(known) or 'none yet (lakeops features register FILE)'}"
        )
    if version is not None:
        picked = rows.filter(pl.col("version") == version)
        if picked.height == 0:
            have = ", ".join(f"v{v}" for v in sorted(rows["version"].to_list()))
            raise FeatureViewNotFoundError(f"feature view {name!r} has versions {have}; asked for v{version}")
        rows = picked
    row = rows.row(0, named=True)
    return parse_view(json.loads(row["definition_json"])).with_version(int(row["version"]))


def _view_row(name: str, version: int, *, lake: Lake) -> dict[str, Any]:
    rows = versions(name, lake=lake).filter(pl.col("version") == version)
    if rows.height == 0:
        raise FeatureViewNotFoundError(f"feature view {name!r} has no version {version}")
    return rows.row(0, named=True)


def load_source(view: FeatureView, version: int | None = None, *, lake: Lake) -> tuple[pl.DataFrame, int]:
    """The view's source dataset at ``version`` (latest by default) and that version.

    Raises:
        FeatureViewError: the source dataset does not exist (or not that version).
    """
    try:
        v = version if version is not None else datasets.latest_version(view.source, lake=lake)
        return datasets.load(view.source, v, lake=lake), v
    except DatasetNotFoundError as exc:
        raise FeatureViewError(f"feature view {view.name!r}: source {exc}") from None


def check_view(view: FeatureView, *, lake: Lake) -> dict[str, pl.DataType]:
    """Check a definition against its source's latest version (what ``register`` checks); nothing written.

    Returns:
        Each feature's output dtype.

    Raises:
        FeatureViewError: the definition does not fit the source (named).
    """
    events, _ = load_source(view, lake=lake)
    schema = view.output_schema(events.schema)
    check_windows(prepare(view, events, schema=schema))
    return schema


def register(view: FeatureView, *, lake: Lake, actor: str | None = None) -> tuple[FeatureView, bool]:
    """Register a definition: check it against its source, and record it as a new version if it changed.

    The source's latest version is read to check the definition: the entity and event-time
    columns exist (and the time is a datetime), each expression parses and references existing
    columns, no window is longer than the span of the events, and no two rows of one entity share
    an event time when the view has a latest-value feature.

    Returns:
        ``(view with its version, created)``: ``created`` is False when the latest version has
        the same content hash (nothing written).

    Raises:
        FeatureViewError: the definition does not fit the source (nothing is written).
    """
    schema = check_view(view, lake=lake)
    digest = view.content_hash()
    have = versions(view.name, lake=lake)
    if have.height and have["content_hash"][0] == digest:
        return view.with_version(int(have["version"][0])), False
    row = {
        "name": view.name, "content_hash": digest, "status": "registered",
        "definition_json": json.dumps(view.to_dict(), sort_keys=True),
        "schema_json": json.dumps({k: str(v) for k, v in schema.items()}),
        "source": view.source, "entity": view.entity, "event_time": view.event_time,
        "description": view.description, "created_by": actor,
    }
    for _ in range(_MAX_CLAIMS):
        taken = versions(view.name, lake=lake)
        top = taken["version"].max()
        number = top + 1 if isinstance(top, int) else 1
        claim = {**row, "version": number, "registration_id": new_id(), "created_at": utcnow()}
        commit = lake.append(_TABLE, [claim], metadata={"actor": actor or "", "feature_view": view.name, "action": "register"})
        before = lake.read(_TABLE, version=commit - 1, columns=["name", "version", "status"]) if commit > 0 else None
        rivals = 0 if before is None else before.filter(
            (pl.col("name") == view.name) & (pl.col("version") == number) & (pl.col("status") == "registered")).height
        if rivals == 0:
            return view.with_version(number), True
        lake.append(_TABLE, [{**claim, "status": "withdrawn", "created_at": utcnow()}],
                    metadata={"actor": actor or "", "feature_view": view.name, "action": "withdraw"})
    raise FeatureViewError(f"could not claim a version of feature view {view.name!r}: too many concurrent registrations")


def view_schema(name: str, version: int, *, lake: Lake) -> dict[str, pl.DataType]:
    """Each feature's dtype as recorded at registration."""
    row = _view_row(name, version, lake=lake)
    return {k: _DTYPES[v] for k, v in json.loads(row["schema_json"]).items()}


_DTYPES: dict[str, pl.DataType] = {"Int64": pl.Int64(), "Float64": pl.Float64(), "String": pl.String(), "Boolean": pl.Boolean()}


# ---------------------------------------------------------------------------- training sets
@dataclass(frozen=True)
class TrainingSet:
    """A training set written as a dataset version.

    Attributes:
        name: the dataset.
        version: its version.
        rows: label rows (one per row of the label dataset version).
        label_dataset: the label dataset; ``label_version`` its version.
        time_column: the label rows' event time used for the as-of join.
        views: ``{"view", "version", "source", "source_version", "features"}`` per view.
    """

    name: str
    version: int
    rows: int
    label_dataset: str
    label_version: int
    time_column: str
    views: list[dict[str, Any]]


def _label_time(labels: pl.DataFrame, name: str, time_column: str | None) -> str:
    if time_column is not None:
        check_label_times(labels, time_column)
        return time_column
    found = [c for c, t in labels.schema.items() if isinstance(t, pl.Datetime)]
    if len(found) == 1:
        check_label_times(labels, found[0])
        return found[0]
    if not found:
        raise FeatureViewError(
            f"label dataset {name!r} has no event-time column (no datetime column): a point-in-time join needs "
            "the time each label row's features must be known at"
        )
    raise FeatureViewError(f"label dataset {name!r} has several datetime columns ({', '.join(found)}); pick one with --time")


def build_training_set(
    name: str,
    *,
    labels: str,
    views: Sequence[str | tuple[str, int | None]],
    label_version: int | None = None,
    time_column: str | None = None,
    lake: Lake,
    actor: str | None = None,
    settings: Settings,
) -> TrainingSet:
    """Join a label dataset version with feature views as of each label's time; write the result as a dataset version.

    Each label row gets each view's features as they were known at the row's event time (its
    entity's source rows at or before that time: see ``core.features.pit``), never later. The
    frame (label columns, then each view's features) becomes a new version of dataset ``name``
    (replacing the previous one; validated like any ingest: rules inferred from the previous
    version plus ``[datasets.<name>]``, so the promotion gate's validated-data check applies), and
    ``feature_lineage`` records the view versions and source versions.

    Args:
        name: the training-set dataset to write.
        labels: the label dataset (entity columns, an event time, the target, request-time fields).
        views: view names, ``"name@vN"`` references or ``(name, version)`` pairs (latest by default).
        label_version: the label dataset version (latest by default).
        time_column: the label rows' event time (default: their only datetime column).
        lake: the lake.
        actor: who builds (recorded).
        settings: settings for the validation spec.

    Raises:
        DataValidationError: the frame broke a validation rule (it is quarantined, nothing written).
        FeatureViewError: no view, a label dataset without the entity column or event times, a
            feature named like a label column or like another view's feature, a window longer
            than the data, duplicate entity rows at one time; nothing is written.
        DatasetNotFoundError: no such label dataset or version.
    """
    if not views:
        raise FeatureViewError("name at least one feature view (--view NAME[@vN])")
    lv = label_version if label_version is not None else datasets.latest_version(labels, lake=lake)
    frame = datasets.load(labels, lv, lake=lake)
    if frame.height == 0:
        raise FeatureViewError(f"label dataset {labels!r} v{lv} has no rows")
    tcol = _label_time(frame, labels, time_column)
    resolved: list[tuple[FeatureView, pl.DataFrame, int, PreparedEvents]] = []
    seen: dict[str, str] = {}
    for ref in views:
        vname, vver = parse_ref(ref) if isinstance(ref, str) else ref
        view = get_view(vname, vver, lake=lake)
        for f in view.all_feature_names:
            if f in frame.columns:
                raise FeatureViewError(f"feature {f!r} of view {view.name!r} is also a column of label dataset {labels!r}; rename one")
            if f in seen:
                raise FeatureViewError(f"feature {f!r} is in views {seen[f]!r} and {view.name!r}; a training set needs unique names")
            seen[f] = view.name
        if view.entity not in frame.columns:
            raise FeatureViewError(
                f"label dataset {labels!r} has no entity column {view.entity!r} (feature view {view.name!r}); "
                f"columns: {', '.join(frame.columns)}"
            )
        absent = [n for n, _ in view.request_fields if n not in frame.columns]
        if absent:
            raise FeatureViewError(
                f"label dataset {labels!r} has no request field {absent[0]!r} (feature view {view.name!r} computes its "
                f"request features from it); columns: {', '.join(frame.columns)}"
            )
        for n, declared in view.request_fields:
            dtype = frame.schema[n]
            is_string = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
            if (declared == "String") != is_string or not (is_string or dtype.is_numeric() or dtype == pl.Boolean):
                raise FeatureViewError(
                    f"label dataset {labels!r}: request field {n!r} has type {dtype}; feature view {view.name!r} "
                    f"declares it {declared}"
                )
        events, sv = load_source(view, lake=lake)
        prepared = prepare(view, events, schema=view.output_schema(events.schema))
        check_windows(prepared)
        resolved.append((view, events, sv, prepared))
    parts = [frame]
    for view, _events, _sv, prepared in resolved:
        parts.append(view_values(prepared, frame, frame[view.entity], frame[tcol]))
    out = pl.concat(parts, how="horizontal")
    source = f"features: {labels}@v{lv} + " + ", ".join(f"{v.name}@v{v.version}" for v, *_ in resolved)
    mode: Literal["append", "replace"] = "replace" if lake.exists(datasets.table_name(name)) else "append"
    try:
        dv = datasets.ingest(name, out, mode=mode, lake=lake, source=source, actor=actor, settings=settings)
    except SchemaMismatchError as exc:
        raise FeatureViewError(
            f"training set {name!r} exists with other columns ({exc}); build into another --name"
        ) from None
    now = utcnow()
    lineage = [
        {"dataset": name, "dataset_version": dv.version, "view": v.name, "view_version": v.version,
         "view_hash": v.content_hash(), "source_dataset": v.source, "source_version": sv, "label_dataset": labels,
         "label_version": lv, "label_time_column": tcol, "rows": out.height, "at": now, "created_by": actor}
        for v, _e, sv, _p in resolved
    ]
    lake.append(_LINEAGE, lineage, metadata={"actor": actor or "", "dataset": name, "action": "build_training_set"})
    return TrainingSet(
        name, dv.version, out.height, labels, lv, tcol,
        [{"view": v.name, "version": v.version, "source": v.source, "source_version": sv, "features": v.all_feature_names}
         for v, _e, sv, _p in resolved],
    )


def training_sets(view: str | None = None, *, lake: Lake) -> pl.DataFrame:
    """The ``feature_lineage`` rows (training-set versions built from views; all, or one view's), newest first."""
    rows = lake.read_or_empty(_LINEAGE)
    if view is not None:
        rows = rows.filter(pl.col("view") == view)
    return rows.sort("at", descending=True)


def training_views(dataset: str, version: int, *, lake: Lake) -> list[dict[str, Any]]:
    """The feature view versions a training-set dataset version was built from (empty for any other dataset).

    Returns:
        ``{"view", "version", "hash", "entity", "features", "missing", "defaults", "source",
        "source_version", "time_column"}`` per view, in build order: what a model trained on the
        set records in its signature (``feature_views``) and serving needs to fill the features.
    """
    if not lake.exists(_LINEAGE):
        return []
    rows = lake.read(_LINEAGE).filter((pl.col("dataset") == dataset) & (pl.col("dataset_version") == version)).sort("view")
    out = []
    for r in rows.iter_rows(named=True):
        view = get_view(r["view"], int(r["view_version"]), lake=lake)
        out.append({
            "view": view.name, "version": view.version, "hash": r["view_hash"], "entity": view.entity,
            "features": view.all_feature_names, "missing": view.missing,
            "defaults": {f.name: f.fill for f in view.features},  # request features are computed, even then
            "source": r["source_dataset"], "source_version": int(r["source_version"]),
            "time_column": r["label_time_column"],
        })
    return out


_MODEL = re.compile(r"^[A-Za-z0-9_-]+$")


def lineage_sql(model: str) -> str:
    """The SQL that walks one prediction of ``model`` back to its source data (``?``: the prediction id).

    prediction (``predictions_<model>``) -> model version (``registered_versions``) -> run
    (``runs``) -> training set (the run's dataset version) -> feature view versions
    (``feature_lineage``, ``feature_views``) -> source dataset versions (and the label dataset version).

    Raises:
        FeatureViewError: a model name that is not a plain name.
    """
    if not _MODEL.match(model):
        raise FeatureViewError(f"model name {model!r}: use letters, digits, '_' or '-'")
    table = "predictions_" + model.replace("-", "_")
    # the run's dataset read from ``runs`` itself (one row per status change, or one per run:
    # the same columns either way), so the walk passes through the run that trained the version
    return f"""with run as (select distinct run_id, dataset_name, dataset_version from runs)
select p.prediction_id, p."at" as predicted_at, p.model_version, mv.run_id,
       r.dataset_name as training_set, r.dataset_version as training_set_version,
       l.label_dataset, l.label_version, l.view, l.view_version, fv.content_hash as view_hash,
       l.source_dataset, l.source_version
from {table} p
join registered_versions mv on mv.model = '{model}' and mv.version = p.model_version
join run r on r.run_id = mv.run_id
join feature_lineage l on l.dataset = r.dataset_name and l.dataset_version = r.dataset_version
join feature_views fv on fv.name = l.view and fv.version = l.view_version and fv.status = 'registered'
where p.prediction_id = ?
order by l.view"""


def lineage(model: str, prediction_id: str, *, lake: Lake) -> pl.DataFrame:
    """Run ``lineage_sql`` for one prediction: one row per feature view version behind it (empty if none).

    Raises:
        FeatureViewError: a bad model name.
        SqlError: a table the walk needs does not exist yet (no prediction log, no training set).
    """
    from core import sql

    return sql.query(lake, lineage_sql(model), [prediction_id])


def view_features_needed(columns: Sequence[str], signature: Mapping[str, Any], *, strict: bool = False,
                         lake: Lake) -> list[tuple[list[str], PreparedEvents]]:
    """The views whose features a model needs and rows with ``columns`` lack, each prepared for lookups.

    The first half of ``with_view_features`` (the source read and prepared once, on the client),
    so batch scoring on a cluster can ship it to the workers and run the second half,
    ``apply_view_features``, next to each partition: the same code as a training set.

    Args:
        columns: the columns the rows have.
        signature: the model's signature (its ``feature_views`` and ``time_column``).
        strict: also refuse rows without a view's entity column or a request field (batch
            scoring: every row would get the defaults or null request features, which is never
            what was meant); otherwise those rows get them.
        lake: the lake.

    Returns:
        ``(features to add, prepared source)`` per view that has something to add.

    Raises:
        FeatureViewError: the rows lack the model's time column (or, ``strict``, an entity column or a request field).
    """
    views = [v for v in signature.get("feature_views") or () if any(f not in columns for f in v["features"])]
    if not views:
        return []
    tcol = signature.get("time_column")
    if not tcol or tcol not in columns:
        raise FeatureViewError(
            f"the rows lack the time column {tcol!r} the model's feature views are computed as of "
            f"({', '.join(v['view'] + '@v' + str(v['version']) for v in views)}); columns: {', '.join(columns)}"
        )
    out = []
    for v in views:
        if strict and v["entity"] not in columns:
            raise FeatureViewError(
                f"the rows lack the entity column {v['entity']!r} feature view {v['view']!r} v{v['version']} is "
                f"looked up by; columns: {', '.join(columns)}"
            )
        fv = get_view(v["view"], int(v["version"]), lake=lake)
        absent = [n for n, _ in fv.request_fields if n not in columns]
        if strict and absent:  # else (the gate's holdout of another model) null inputs, like absent keys
            raise FeatureViewError(
                f"the rows lack the request field {absent[0]!r} feature view {fv.name!r} v{fv.version} computes its "
                f"request features from; columns: {', '.join(columns)}"
            )
        events, _ = load_source(fv, lake=lake)
        out.append(([f for f in v["features"] if f not in columns], prepare(fv, events)))
    return out


def apply_view_features(frame: pl.DataFrame, needed: Sequence[tuple[list[str], PreparedEvents]],
                        time_column: str) -> pl.DataFrame:
    """``frame`` with each view's features as known at each row's ``time_column`` (``values_at``, as a
    training set); rows without a key (or a frame without the entity column) get the defaults."""
    for names, prepared in needed:
        entity = prepared.view.entity
        keys = frame[entity] if entity in frame.columns else pl.Series(entity, [None] * frame.height)
        values = view_values(prepared, frame, keys, frame[time_column])
        frame = frame.with_columns(values[f] for f in names)
    return frame


def view_values(prepared: PreparedEvents, rows: pl.DataFrame, entities: pl.Series, times: pl.Series) -> pl.DataFrame:
    """Every feature of a view for ``rows``: ``values_at`` (as known at ``times``), then the request
    features computed from the rows' request fields and those values (``FeatureView.request_values``)."""
    values = values_at(prepared, entities, times)
    view = prepared.view
    if not view.request_features:
        return values
    inputs = {**{n: rows[n] if n in rows.columns else pl.Series(n, [None] * rows.height, dtype=pl.String if t == "String"
                                                                else pl.Float64)
                 for n, t in view.request_fields}, **values.to_dict()}
    return pl.concat([values, view.request_values(inputs, prepared.schema)], how="horizontal")


def with_view_features(frame: pl.DataFrame, signature: Mapping[str, Any], *, strict: bool = False,
                       lake: Lake) -> pl.DataFrame:
    """``frame`` with the view features a model needs and ``frame`` lacks, as known at each row's time.

    For scoring a model trained on feature views on rows that do not carry those features (batch
    scoring, or the gate scoring the champion on another model's holdout): each missing feature
    is computed exactly as a training set would (``values_at`` on the view version's source,
    latest version, at the row's ``signature["time_column"]``) by the row's entity key. Rows
    without a key get the features' defaults. A frame that has every feature is returned as it is.

    Raises:
        FeatureViewError: the frame lacks the model's time column (nothing to be "as of"), or,
            with ``strict``, a view's entity column or request field.
    """
    needed = view_features_needed(frame.columns, signature, strict=strict, lake=lake)
    return apply_view_features(frame, needed, signature["time_column"]) if needed else frame
