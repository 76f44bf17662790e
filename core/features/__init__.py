"""Feature store: versioned feature views over datasets, point-in-time training sets, online values.

- ``definitions``: a view's entity, event time and features (polars expressions, windowed
  aggregates); parsing, checks and the content hash (pure).
- ``pit``: the point-in-time engine shared by training sets and online values (pure).
- ``store``: registration in ``feature_views``, lookups, training sets with ``feature_lineage``.
- ``online``: materialisation into ``online/<view>_v<N>`` (incremental), current values, freshness.
"""

from core.features.definitions import (
    AGGREGATIONS,
    Feature,
    FeatureView,
    RequestPlan,
    compile_expr,
    load_view,
    load_views,
    parse_view,
)
from core.features.online import (
    Materialization,
    current_values,
    entity_vector,
    freshness,
    last_materialization,
    materializations,
    materialize,
    materialize_all,
    online_table,
)
from core.features.pit import check_windows, point_in_time, prepare, values_at
from core.features.store import (
    TrainingSet,
    apply_view_features,
    build_training_set,
    check_view,
    get_view,
    lineage,
    lineage_sql,
    list_views,
    load_source,
    parse_ref,
    register,
    training_sets,
    training_views,
    versions,
    view_features_needed,
    view_schema,
    view_values,
    with_view_features,
)

__all__ = [
    "AGGREGATIONS",
    "Feature",
    "FeatureView",
    "Materialization",
    "RequestPlan",
    "TrainingSet",
    "apply_view_features",
    "build_training_set",
    "check_view",
    "check_windows",
    "compile_expr",
    "current_values",
    "entity_vector",
    "freshness",
    "get_view",
    "last_materialization",
    "lineage",
    "lineage_sql",
    "list_views",
    "load_source",
    "load_view",
    "load_views",
    "materializations",
    "materialize",
    "materialize_all",
    "online_table",
    "parse_ref",
    "parse_view",
    "point_in_time",
    "prepare",
    "register",
    "training_sets",
    "training_views",
    "values_at",
    "versions",
    "view_features_needed",
    "view_schema",
    "view_values",
    "with_view_features",
]
