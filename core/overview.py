"""The overview the UI's first page shows: champions, their metrics, recent traffic, open alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl

from core.errors import LakeopsError
from core.ids import utcnow
from core.lake import Lake, resolve

__all__ = ["ModelSummary", "Overview", "overview"]


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


def _prediction_counts(lake: Lake, model: str, since: Any) -> tuple[int, int, Any]:
    table = f"predictions/{model}"
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


def overview(*, lake: Lake | None = None, recent_hours: float = 24.0) -> Overview:
    """Summarise the lake: dataset and run counts, open alerts, and each model's champion.

    Args:
        lake: the lake (default: from settings).
        recent_hours: the window of "recent" predictions.
    """
    from core import registry

    lake = resolve(lake)
    since = utcnow() - timedelta(hours=recent_hours)
    n_datasets = lake.read_or_empty("datasets", columns=["name"]).n_unique() if lake.exists("datasets") else 0
    n_runs = lake.read_or_empty("runs", columns=["run_id"])["run_id"].n_unique()
    open_alerts = 0
    if lake.exists("alerts"):
        alerts = lake.read("alerts", columns=["fingerprint", "status", "at"])
        latest = alerts.sort("at").group_by("fingerprint").last()
        open_alerts = latest.filter(pl.col("status") == "open").height
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
