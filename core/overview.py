"""The overview the UI's first page shows: champions, their story, recent traffic, open alerts.

Per model: which version is champion, since when, by whom and why (its last applied
``champion`` alias event); its live metric on labelled predictions (``core.monitoring``'s
performance check, read only: nothing is written) against the gate-time value and the alert
threshold (gate value minus the policy's tolerance); the last drift check's verdict; open and
acknowledged alerts; and the last registry and alert events as one timeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from core.catalog import prediction_table
from core.config import Settings
from core.errors import LakeopsError
from core.ids import utcnow
from core.lake import Lake

__all__ = ["ModelStory", "ModelSummary", "Overview", "TIMELINE_SCHEMA", "model_story", "overview"]

TIMELINE_SCHEMA = pl.Schema({
    "at": pl.Datetime("us", "UTC"), "source": pl.String(), "event": pl.String(), "version": pl.Int64(),
    "actor": pl.String(), "detail": pl.String(),
})


@dataclass(frozen=True)
class ModelSummary:
    """One registered model as the overview shows it."""

    name: str
    champion_version: int | None
    aliases: dict[str, int]
    metrics: dict[str, float]
    predictions_total: int
    predictions_recent: int
    last_prediction_at: Any = None


@dataclass(frozen=True)
class Overview:
    """Counts and per-model summaries of the whole lake."""

    lake_uri: str
    datasets: int
    runs: int
    open_alerts: int
    models: list[ModelSummary] = field(default_factory=list)
    recent_hours: float = 24.0


@dataclass(frozen=True)
class ModelStory:
    """What happened to one model lately, for the Overview.

    Attributes:
        champion_since, champion_by, champion_reason: the champion alias's last applied move.
        metric, live_value, labelled, gate_value, alert_below: the live metric on labelled
            predictions of the champion (None until ``min_labels`` labels exist), its gate-time
            value and the value past which the performance alert opens (for a metric where
            higher is better; ``alert_above`` otherwise).
        last_check_at, last_check_drifted, last_check_share: the latest drift verdict.
        open_alerts: open or acknowledged alerts (fingerprint, kind, status, message, opened_at).
        timeline: the latest registry and alert events, newest first (``TIMELINE_SCHEMA``).
    """

    model: str
    champion: int | None
    champion_since: datetime | None = None
    champion_by: str | None = None
    champion_reason: str | None = None
    metric: str | None = None
    live_value: float | None = None
    labelled: int = 0
    gate_value: float | None = None
    alert_below: float | None = None
    alert_above: float | None = None
    last_check_at: datetime | None = None
    last_check_drifted: bool | None = None
    last_check_share: float | None = None
    open_alerts: pl.DataFrame = field(default_factory=pl.DataFrame)
    timeline: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=TIMELINE_SCHEMA))


def _prediction_counts(lake: Lake, model: str, since: Any) -> tuple[int, int, Any]:
    table = prediction_table(model)
    if not lake.exists(table):
        return 0, 0, None
    row = (
        lake.scan(table)
        .select(
            pl.len().alias("total"),
            (pl.col("at") >= since).sum().alias("recent"),
            pl.col("at").max().alias("last"),
        )
        .collect()
        .row(0, named=True)
    )
    return int(row["total"]), int(row["recent"] or 0), row["last"]


def overview(*, lake: Lake, recent_hours: float = 24.0) -> Overview:
    """Summarise the lake: dataset and run counts, open alerts, and each model's champion.

    Args:
        lake: the lake.
        recent_hours: the window of "recent" predictions.
    """
    from core import registry
    since = utcnow() - timedelta(hours=recent_hours)
    n_datasets = lake.read_or_empty("datasets", columns=["name"]).n_unique() if lake.exists("datasets") else 0
    n_runs = lake.read_or_empty("runs", columns=["run_id"])["run_id"].n_unique()
    open_alerts = 0
    if lake.exists("alerts"):
        alerts = lake.read("alerts", columns=["fingerprint", "status", "at"])
        latest = alerts.sort("at").group_by("fingerprint").last()
        open_alerts = latest.filter(pl.col("status").is_in(["open", "acknowledged"])).height
    models = []
    names = registry.list_models(lake=lake)["model"].to_list() if lake.exists("model_versions") else []
    for name in names:
        try:
            aliases = registry.aliases(name, lake=lake)
        except LakeopsError:
            aliases = {}
        champion = aliases.get("champion")
        metrics: dict[str, float] = {}
        if champion is not None:
            mv = registry.get_version(name, champion, lake=lake)
            metrics = {
                k: float(v)
                for k, v in (mv.metrics or {}).items()
                if isinstance(v, (int, float)) and not k.startswith("train_") and k != "best_iteration"
            }
        total, recent, last = _prediction_counts(lake, name, since)
        models.append(ModelSummary(name, champion, aliases, metrics, total, recent, last))
    return Overview(lake.uri, n_datasets, n_runs, open_alerts, models, recent_hours)


def model_story(
    model: str, *, lake: Lake, settings: Settings, events: int = 12
) -> ModelStory:
    """Tell one model's recent story (see ``ModelStory``); reads only.

    Args:
        model: a registered model.
        lake: the lake.
        settings: settings (monitoring config: metric, tolerance, min_labels).
        events: how many timeline events to keep.

    Raises:
        ModelNotFoundError: no such model.
    """
    from core import monitoring, registry
    from core.gating import higher_is_better
    hist = registry.history(model, "champion", lake=lake).filter(pl.col("applied"))
    champion = registry.champion_version(model, lake)
    last = hist.row(-1, named=True) if hist.height and champion is not None else None
    story: dict[str, Any] = {"model": model, "champion": champion}
    if last is not None:
        story |= {"champion_since": last["at"], "champion_by": last["actor"], "champion_reason": last["reason"]}
        try:
            perf = monitoring.measure_performance(model, lake=lake, settings=settings)
        except LakeopsError:
            perf = None
        if perf is not None:
            story |= {"metric": perf.metric, "live_value": perf.value, "labelled": perf.labelled,
                      "gate_value": perf.baseline}
            if perf.baseline is not None:
                up = higher_is_better(perf.metric)
                story["alert_below" if up else "alert_above"] = perf.baseline + (-perf.tolerance if up else perf.tolerance)
    checks = monitoring.drift_history(model, last=1, lake=lake).filter(pl.col("feature") == monitoring.DATASET_ROW)
    if checks.height:
        row = checks.row(-1, named=True)
        story |= {"last_check_at": row["at"], "last_check_drifted": row["drifted"], "last_check_share": row["statistic"]}
    alerts = monitoring.alerts(model, status=None, lake=lake)
    story["open_alerts"] = alerts.filter(pl.col("status").is_in(["open", "acknowledged"])).select(
        "fingerprint", "kind", "severity", "status", "message", "opened_at")
    story["timeline"] = _timeline(model, lake, events)
    return ModelStory(**story)


def _timeline(model: str, lake: Lake, n: int) -> pl.DataFrame:
    from core import monitoring, registry

    ev = registry.events(model, lake=lake).filter(pl.col("action") != "claim") if lake.exists("registry_events") else None
    parts = []
    if ev is not None and ev.height:
        parts.append(ev.tail(n).select(
            "at", pl.lit("registry").alias("source"), pl.col("action").alias("event"), pl.col("version").cast(pl.Int64),
            pl.col("actor").cast(pl.String), pl.col("reason").cast(pl.String).str.slice(0, 300).alias("detail")))
    al = monitoring.alert_history(model, lake=lake).tail(n)
    if al.height:
        handled = [json.loads(p or "{}").get(monitoring.HANDLED_KEY, {}).get("actor") for p in al["payload_json"].to_list()]
        parts.append(al.select(
            "at", pl.lit("alert").alias("source"), pl.format("{} {}", "kind", "status").alias("event"),
            pl.lit(None, dtype=pl.Int64).alias("version"), pl.Series("actor", handled, dtype=pl.String),
            pl.col("message").str.slice(0, 300).alias("detail")))
    if not parts:
        return pl.DataFrame(schema=TIMELINE_SCHEMA)
    return pl.concat([p.cast(TIMELINE_SCHEMA) for p in parts]).sort("at", descending=True).head(n)
