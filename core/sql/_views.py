"""The SQL views of the lake: one per table, derived views, and the names they go by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.lake import Lake

__all__ = [
    "DERIVED_VIEWS", "LABELLED_VIEWS", "PRED_COMMON", "DerivedView", "lake_tables", "predictions_view", "view_name",
    "views",
]

_RENAMED = {"runs": "runs_history", "job_runs": "job_runs_history"}  # raw tables whose obvious name is the safe derived view
_ALIAS_ACTIONS = "'promote', 'rollback', 'alias', 'unalias', 'stage', 'unstage'"  # core.registry ALIAS_ACTIONS

PRED_COMMON = 'prediction_id, "at", day, model_version, score, {label} as predicted_label, latency_ms, {role} as role'
"""The ``predictions`` view's columns (``at`` quoted: a DuckDB keyword). Tables of earlier releases
call the predicted class ``label`` and have no ``role`` (every row an answer by the champion)."""

@dataclass(frozen=True)
class DerivedView:
    """A view defined in SQL over lake tables; created only when every table it needs exists."""

    sql: str
    requires: tuple[str, ...]
    description: str = ""


# The alias map replayed like core.registry does: an alias event carrying report.expected applies
# only when the alias still pointed there (a compare-and-swap), so "the last event" is not enough.
_ALIASES_SQL = f"""with recursive ev as (
        select model, alias, action, version, "at",
               coalesce(json_exists(report_json, '$.expected'), false) as checked,
               try_cast(json_extract(report_json, '$.expected') as bigint) as expected,
               row_number() over (partition by model, alias order by "at", event_id) as n
        from registry_events where action in ({_ALIAS_ACTIONS}) and coalesce(alias, '') <> ''
    ),
    step as (
        select e.*, case when e.action in ('unalias', 'unstage') then null else e.version end as target from ev e
    ),
    state(model, alias, n, version, since) as (
        select distinct model, alias, 0::bigint, null::bigint, null::timestamptz from ev
        union all
        select e.model, e.alias, e.n,
               case when not e.checked or e.expected is not distinct from s.version then e.target else s.version end,
               case when (not e.checked or e.expected is not distinct from s.version)
                         and e.target is distinct from s.version then e."at" else s.since end
        from state s join step e on e.model = s.model and e.alias = s.alias and e.n = s.n + 1
    )
    , final as (
        select model, alias, version, since from state s
        where version is not null and n = (select max(n) from ev where ev.model = s.model and ev.alias = s.alias)
    )
    -- a challenger promoted to champion is no longer a challenger (its staged rollout ended)
    select f.* from final f where not (f.alias = 'challenger' and exists (
        select 1 from final c where c.model = f.model and c.alias = 'champion' and c.version = f.version
            and c.since >= f.since))"""

_LATEST_RUNS = """select * exclude (rn) from (
        select r.*, row_number() over (partition by run_id order by r."at" desc) as rn from runs_history r
    ) where rn = 1"""

# name -> view; "predictions" is built from the per-model tables at query time.
DERIVED_VIEWS: dict[str, DerivedView] = {
    "runs": DerivedView(
        _LATEST_RUNS,
        ("runs",),
        "one row per run: its latest state (status, ended_at ...); every status change is in runs_history",
    ),
    "job_runs": DerivedView(
        """select * exclude (rn) from (
               select j.*, row_number() over (partition by job_run_id order by j."at" desc) as rn from job_runs_history j
           ) where rn = 1""",
        ("job_runs",),
        "one row per job execution: its latest state (running, finished, failed, interrupted); every change is in "
        "job_runs_history",
    ),
    "metrics_latest": DerivedView(
        """select run_id, key, arg_max(value, (step, "at")) as value, max(step) as step
           from metrics group by run_id, key""",
        ("metrics",),
        "the last value of each run's metrics (highest step, then latest time)",
    ),
    "runs_wide": DerivedView(
        f"""select r.*, m.metrics, p.params, t.tags from ({_LATEST_RUNS}) r
           left join (select run_id, map_from_entries(list((key, value))) as metrics from (
               select run_id, key, arg_max(value, (step, "at")) as value from metrics group by run_id, key
           ) group by run_id) m using (run_id)
           left join (select run_id, map_from_entries(list((key, value))) as params from (
               select run_id, key, arg_max(value, "at") as value from params group by run_id, key
           ) group by run_id) p using (run_id)
           left join (select run_id, map_from_entries(list((key, value))) as tags from (
               select run_id, key, arg_max(value, "at") as value from tags group by run_id, key
           ) group by run_id) t using (run_id)""",
        ("runs", "metrics", "params", "tags"),
        "each run's latest state with metrics/params/tags maps: metrics['auc'], params['num_leaves']",
    ),
    "registered_versions": DerivedView(
        """select v.* from model_versions v where exists (
               select 1 from registry_events e where e.action = 'register' and e.event_id = v.registration_id
                   and e.model = v.model and e.version = v.version
           )""",
        ("model_versions", "registry_events"),
        "model versions that completed registration (model_versions also holds lost version claims)",
    ),
    "model_aliases": DerivedView(
        _ALIASES_SQL,
        ("registry_events",),
        "every alias now (model, alias, version, since): champion, challenger ...",
    ),
    "champions": DerivedView(
        f"select * from ({_ALIASES_SQL}) where alias = 'champion'",
        ("registry_events",),
        "each model's champion now: model, alias, version, since (when it took the alias)",
    ),
}


def view_name(table: str) -> str:
    """Return the SQL view name of lake table ``table`` (``data/churn`` -> ``data_churn``).

    ``runs`` is the exception: its raw rows (one per status change) are ``runs_history``, and
    ``runs`` is the derived view of each run's latest state.
    """
    return _RENAMED.get(table) or table.replace("/", "_").replace("-", "_")


def lake_tables(lake: Lake) -> list[str]:
    """The lake's tables plus ``artifacts`` (a table whose folder also holds the artifact files,
    so ``Lake.tables()``, which maintenance walks, leaves it out)."""
    tables = lake.tables()
    if "artifacts" not in tables and lake.exists("artifacts"):
        tables = sorted([*tables, "artifacts"])
    return tables


def views(lake: Lake) -> dict[str, str]:
    """Return every queryable view name mapped to what it is (a table name or a description)."""
    tables = lake_tables(lake)
    out = {view_name(t): t for t in tables}
    if any(t.startswith("predictions/") for t in tables):
        out["predictions"] = "every model's prediction log (common columns, with a model column)"
    for name, view in DERIVED_VIEWS.items():
        if all(r in tables for r in view.requires):
            out[name] = view.description
    if "predictions" in out and "feedback" in tables:
        out["labelled_predictions"] = "answers with their latest ground truth (true_label, labelled_at), by prediction id"
        out["performance_by_version"] = "labelled rows, AUC (ties at midrank), accuracy and Brier score per model version"
    return dict(sorted(out.items()))


# Labelled predictions: the answers (not shadow rows) joined to their latest ground truth by
# prediction id. Labels sent by a feedback key are resolved by core.monitoring.ground_truth (an
# as-of join on each model's own pass-through field), not here.
LABELLED_VIEWS: dict[str, str] = {
    "labelled_predictions": """
        with labels as (
            select prediction_id, label as true_label, "at" as labelled_at from feedback
            where coalesce(prediction_id, '') <> ''
            qualify row_number() over (partition by prediction_id order by "at" desc) = 1
        )
        select p.model, p.prediction_id, p."at", p.model_version, p.role, p.score, p.predicted_label,
               l.true_label, l.labelled_at
        from predictions p join labels l using (prediction_id)
        where coalesce(p.role, 'champion') <> 'shadow'""",
    "performance_by_version": """
        with r as (
            select model, model_version, true_label, score, predicted_label,
                   rank() over (partition by model, model_version order by score) as rk,
                   count(*) over (partition by model, model_version, score) as ties
            from labelled_predictions
        ), ranked as (
            select *, rk + (ties - 1) / 2.0 as midrank from r
        )
        select model, model_version, count(*) as labelled,
               sum(true_label) as positives,
               (sum(case when true_label = 1 then midrank else 0 end) - sum(true_label) * (sum(true_label) + 1) / 2.0)
                 / nullif(sum(true_label) * (count(*) - sum(true_label)), 0) as auc,
               avg(case when predicted_label = true_label then 1.0 else 0.0 end) as accuracy,
               avg((score - true_label) * (score - true_label)) as brier
        from ranked group by all order by model, model_version""",
}
"""Derived from ``predictions`` and ``feedback``: ``labelled_predictions`` (one row per answer with a
label: ``true_label``, ``labelled_at``) and ``performance_by_version`` (labelled rows, AUC with ties
at their midrank, accuracy and Brier score per model version, for binary models)."""


def predictions_view(tables: list[str], columns: dict[str, list[str]] | None = None) -> str | None:
    """The ``predictions`` view: every model's log on the common columns, with a ``model`` column.

    Args:
        tables: the lake's tables.
        columns: each prediction table's column names (to read tables of earlier releases).
    """
    preds = [t for t in tables if t.startswith("predictions/")]
    if not preds:
        return None
    cols = columns or {}

    def select(t: str) -> str:
        names = cols.get(t, [])
        label = "predicted_label" if "predicted_label" in names or not names else "label"
        role = "role" if "role" in names or not names else "'champion'"
        return f"select '{t.split('/', 1)[1]}' as model, {PRED_COMMON.format(label=label, role=role)} from {view_name(t)}"

    return " union all ".join(select(t) for t in preds)
