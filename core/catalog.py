"""The catalog: every fixed lakeops table with its explicit Arrow schema and partitioning.

Tables named ``data/<dataset>`` and ``predictions/<model>`` are per-dataset and per-model; their
schemas are built by ``core.datasets`` and ``core.serving`` and passed to ``Lake.create``.
Every table is append-only: current state is derived by query (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = [
    "FEATURES_COLUMN",
    "PASSTHROUGH_COLUMN",
    "PREDICTION_COLUMNS",
    "TABLES",
    "TS",
    "TableSpec",
    "prediction_common_fields",
    "prediction_table",
    "spec_for",
]

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A table's name, schema and partition columns."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    description: str = ""


def _s(*fields: tuple[str, pa.DataType] | tuple[str, pa.DataType, bool]) -> pa.Schema:
    """Build a schema; a third item False marks a NOT NULL column."""
    return pa.schema([pa.field(f[0], f[1], nullable=f[2] if len(f) > 2 else True) for f in fields])


_STR = pa.string()
_I64 = pa.int64()
_F64 = pa.float64()
_BOOL = pa.bool_()

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        TableSpec(
            "datasets",
            _s(
                ("name", _STR, False),
                ("version", _I64, False),
                ("created_at", TS, False),
                ("mode", _STR),
                ("rows", _I64),
                ("total_rows", _I64),
                ("schema_json", _STR),
                ("content_hash", _STR),
                ("profile_json", _STR),
                ("validation_status", _STR),
                ("validation_json", _STR),
                ("created_by", _STR),
                ("source", _STR),
            ),
            description="one row per dataset version (the Delta version of data/<name>)",
        ),
        TableSpec(
            "quarantine",
            _s(
                ("quarantine_id", _STR, False),
                ("dataset", _STR, False),
                ("at", TS, False),
                ("rows", _I64),
                ("source", _STR),
                ("path", _STR),
                ("validation_json", _STR),
                ("created_by", _STR),
            ),
            description="batches refused by validation, kept with their report",
        ),
        TableSpec(
            "runs",
            _s(
                ("run_id", _STR, False),
                ("experiment", _STR, False),
                ("name", _STR),
                ("parent_run_id", _STR),
                ("status", _STR, False),
                ("started_at", TS),
                ("ended_at", TS),
                ("error", _STR),
                ("dataset_name", _STR),
                ("dataset_version", _I64),
                ("git_sha", _STR),
                ("git_dirty", _BOOL),
                ("seed", _I64),
                ("python_version", _STR),
                ("packages_json", _STR),
                ("host", _STR),
                ("user", _STR),
                ("at", TS, False),
            ),
            description="one row per run status change; the latest row per run_id is its state",
        ),
        TableSpec(
            "params",
            _s(("run_id", _STR, False), ("key", _STR, False), ("value", _STR), ("at", TS)),
        ),
        TableSpec(
            "metrics",
            _s(
                ("run_id", _STR, False),
                ("key", _STR, False),
                ("value", _F64),
                ("step", _I64),
                ("at", TS),
            ),
        ),
        TableSpec(
            "tags",
            _s(("run_id", _STR, False), ("key", _STR, False), ("value", _STR), ("at", TS)),
        ),
        TableSpec(
            "artifacts",
            _s(
                ("run_id", _STR, False),
                ("path", _STR, False),
                ("uri", _STR),
                ("sha256", _STR),
                ("size_bytes", _I64),
                ("at", TS),
            ),
        ),
        TableSpec(
            "model_versions",
            _s(
                ("model", _STR, False),
                ("version", _I64, False),
                ("run_id", _STR),
                ("artifact_uri", _STR),
                ("sha256", _STR),
                ("size_bytes", _I64),
                ("signature_json", _STR),
                ("metrics_json", _STR),
                ("tags_json", _STR),
                ("description", _STR),
                ("dataset_name", _STR),
                ("dataset_version", _I64),
                ("created_at", TS, False),
                ("created_by", _STR),
                ("registration_id", _STR),
            ),
            description="version claims; a claim is a version once its `register` event (event_id = registration_id) exists",
        ),
        TableSpec(
            "registry_events",
            _s(
                ("event_id", _STR, False),
                ("model", _STR, False),
                ("version", _I64),
                ("action", _STR, False),
                ("alias", _STR),
                ("actor", _STR),
                ("reason", _STR),
                ("report_json", _STR),
                ("at", TS, False),
            ),
            description="audit trail: register, gate, approve, reject, promote, rollback, archive",
        ),
        TableSpec(
            "feedback",
            _s(
                ("prediction_id", _STR, False),  # "" for a label sent by key
                ("model", _STR),
                ("label", _F64),
                ("at", TS, False),
                ("source", _STR),
                ("key", _STR),  # the model's feedback key (a pass-through field) when sent by key
                ("key_value", _STR),
            ),
        ),
        TableSpec(
            "drift_reports",
            _s(
                ("report_id", _STR, False),
                ("model", _STR, False),
                ("model_version", _I64),
                ("window_start", TS),
                ("window_end", TS),
                ("window_rows", _I64),
                ("feature", _STR, False),
                ("kind", _STR),
                ("test", _STR),
                ("statistic", _F64),
                ("p_value", _F64),
                ("threshold", _F64),
                ("drifted", _BOOL),
                ("reference_dataset", _STR),
                ("reference_version", _I64),
                ("stats_json", _STR),
                ("at", TS, False),
            ),
            description="one row per feature (plus 'score' and the '__dataset__' verdict) per drift check",
        ),
        TableSpec(
            "drift_references",
            _s(
                ("reference_id", _STR, False),
                ("kind", _STR, False),
                ("dataset", _STR),
                ("dataset_version", _I64),
                ("model", _STR),
                ("model_version", _I64),
                ("rows", _I64),
                ("columns_json", _STR),
                ("path", _STR),
                ("sha256", _STR),
                ("at", TS, False),
            ),
            description="stored reference distributions (sorted values, quantile edges, category counts)",
        ),
        TableSpec(
            "performance_estimates",
            _s(
                ("report_id", _STR, False),
                ("model", _STR, False),
                ("model_version", _I64),
                ("window_start", TS),
                ("window_end", TS),
                ("window_rows", _I64),
                ("metric", _STR, False),
                ("estimate", _F64),
                ("sampling_error", _F64),
                ("lower", _F64),
                ("upper", _F64),
                ("realised", _F64),
                ("labelled", _I64),
                ("baseline", _F64),
                ("calibrated", _BOOL),
                ("at", TS, False),
            ),
            description="one row per metric per performance estimation (CBPE): estimate, band, realised so far",
        ),
        TableSpec(
            "alerts",
            _s(
                ("alert_id", _STR, False),
                ("kind", _STR, False),
                ("severity", _STR),
                ("model", _STR),
                ("message", _STR),
                ("payload_json", _STR),
                ("fingerprint", _STR),
                ("status", _STR),
                ("at", TS, False),
                ("model_version", _I64),  # the champion version the condition was found on
            ),
        ),
        TableSpec(
            "stage_reports",
            _s(
                ("report_id", _STR, False),
                ("model", _STR, False),
                ("champion_version", _I64),
                ("challenger_version", _I64),
                ("mode", _STR),
                ("since", TS),
                ("at", TS, False),
                ("requests", _I64),
                ("labelled", _I64),
                ("error_rate", _F64),
                ("agreement", _F64),
                ("metric", _STR),
                ("champion_value", _F64),
                ("challenger_value", _F64),
                ("passed", _BOOL),
                ("report_json", _STR),
            ),
            description="live comparisons of a staged challenger with the champion (core.flows.rollout)",
        ),
        TableSpec(
            "job_runs",
            _s(
                ("job_run_id", _STR, False),
                ("job", _STR, False),
                ("trigger", _STR),
                ("status", _STR, False),
                ("started_at", TS),
                ("ended_at", TS),
                ("error", _STR),
                ("outputs_json", _STR),
                ("host", _STR),
                ("at", TS, False),
                ("pid", _I64),
            ),
            description="one row per job status change (running, then finished/failed); latest row per job_run_id wins",
        ),
        TableSpec(
            "tokens",
            _s(
                ("token_id", _STR, False),
                ("event", _STR, False),
                ("principal", _STR),
                ("scopes", pa.list_(_STR)),
                ("roles", pa.list_(_STR)),
                ("kdf", _STR),
                ("salt", _STR),
                ("hash", _STR),
                ("expires_at", TS),
                ("actor", _STR),
                ("reason", _STR),
                ("at", TS, False),
            ),
            description="API/CLI/UI token events (create, revoke): principal, scopes, roles and a salted scrypt hash of "
            "the secret (the secret itself is shown once and stored nowhere)",
        ),
        TableSpec(
            "feature_views",
            _s(
                ("name", _STR, False),
                ("version", _I64, False),
                ("content_hash", _STR, False),
                ("status", _STR, False),  # registered | withdrawn (a claim that lost a race for its number)
                ("definition_json", _STR),
                ("schema_json", _STR),  # each feature's dtype, from the source at registration
                ("source", _STR),
                ("entity", _STR),
                ("event_time", _STR),
                ("description", _STR),
                ("registration_id", _STR, False),
                ("created_at", TS, False),
                ("created_by", _STR),
            ),
            description="one row per feature view version (a content-hashed definition); append-only",
        ),
        TableSpec(
            "feature_lineage",
            _s(
                ("dataset", _STR, False),
                ("dataset_version", _I64, False),
                ("view", _STR, False),
                ("view_version", _I64, False),
                ("view_hash", _STR),
                ("source_dataset", _STR),
                ("source_version", _I64),
                ("label_dataset", _STR),
                ("label_version", _I64),
                ("label_time_column", _STR),
                ("rows", _I64),
                ("at", TS, False),
                ("created_by", _STR),
            ),
            description="training-set dataset versions built from feature views: one row per view version used",
        ),
        TableSpec(
            "feature_materializations",
            _s(
                ("materialization_id", _STR, False),
                ("view", _STR, False),
                ("view_version", _I64, False),
                ("source_dataset", _STR),
                ("source_version", _I64),
                ("as_of", TS, False),
                ("mode", _STR),  # full | incremental
                ("entities", _I64),  # rows written to the online table
                ("online_table", _STR),
                ("online_version", _I64),
                ("started_at", TS),
                ("at", TS, False),
                ("created_by", _STR),
            ),
            description="one row per materialisation of a feature view version into its online table",
        ),
        TableSpec(
            "leases",
            _s(
                ("lease", _STR, False),
                ("event", _STR, False),
                ("holder", _STR, False),
                ("epoch", _I64, False),
                ("base_version", _I64, False),
                ("acquired_at", TS),
                ("expires_at", TS, False),
                ("at", TS, False),
                ("info_json", _STR),
            ),
            description="lease events (acquire, release); an event counts only if it committed at base_version + 1 (renewals are heartbeat objects under _lakeops/leases/)",
        ),
    ]
}


FEATURES_COLUMN = "features"
"""The struct column of a ``predictions/<model>`` table holding the request's feature values,
one field per feature (float64 or string), named as in the model's signature. Features live in
their own namespace, so a feature may be called ``score``, ``day`` or ``at``."""
PASSTHROUGH_COLUMN = "passthrough"
"""The struct column holding a request's pass-through fields (entity ids, event time, segment
keys): declared in the model's signature, validated and logged, never seen by the model."""


def prediction_common_fields() -> list[pa.Field]:
    """Columns every ``predictions/<model>`` table starts with; the ``features`` struct (and the
    ``passthrough`` struct, when the model declares pass-through fields) follow them."""
    return [
        pa.field("prediction_id", _STR, nullable=False),
        pa.field("at", TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("model_version", _I64),
        pa.field("score", _F64),
        pa.field("predicted_label", _I64),
        pa.field("latency_ms", _F64),
        pa.field("role", _STR),  # champion | challenger (canary) | shadow | pinned (?version=, ?alias=)
    ]


def prediction_table(model: str) -> str:
    """The lake table holding model ``model``'s prediction log: ``predictions/<model>``."""
    return f"predictions/{model}"


PREDICTION_COLUMNS = ("prediction_id", "at", "day", "model_version", "score", "predicted_label", "latency_ms", "role")
"""The log's own columns (``label`` instead of ``predicted_label`` in tables of earlier releases)."""


def spec_for(name: str) -> TableSpec | None:
    """Return the fixed spec of table ``name``, or None for per-dataset/per-model tables."""
    return TABLES.get(name)
