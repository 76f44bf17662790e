"""Seed the demo scenario into an empty lake: churn data, usage events and their feature view, a trained model, the first champion.

The model is trained on ``churn_training``: the churn rows joined, as of each row's time, with
the ``churn_usage`` feature view over the usage events (``core.demo.USAGE_VIEW``), so it uses
four derived usage features that the API fills in from the online values by ``customer_id``;
the view is materialised once here and then by the scheduler's ``features_materialize`` job.

Idempotent and resumable: each step is skipped when its result is already in the lake, so a
second ``lakeops up`` reuses the lake and an interrupted seed picks up where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.config import Settings
from core.errors import NotFoundError
from core.ids import utcnow
from core.lake import Lake

__all__ = ["DEMO_DATASET", "DEMO_MODEL", "DEMO_POLICY", "DEMO_TRAINING_SET", "SeedOutcome", "seed_demo"]

DEMO_DATASET = "churn"
DEMO_MODEL = "churn"
DEMO_TRAINING_SET = "churn_training"
# The demo closes the loop with no human step: a retrained version that passes the gate (and
# beats the champion on the same holdout) is promoted by the retrain job. Real models default to
# awaiting approval (``auto_promote = false``); ``lakeops models policy churn --set f.toml`` changes it.
DEMO_POLICY = {"min": {"auc": 0.70}, "max": {"brier": 0.25}, "auto_promote": True}
DEMO_POLICY_REASON = "demo scenario: versions retrained after drift are promoted automatically when they pass the gate"


@dataclass(frozen=True)
class SeedOutcome:
    """What seeding created."""

    dataset_version: int
    run_id: str
    model_version: int
    metrics: dict[str, float]
    training_set: str | None = None
    training_version: int | None = None


def seed_demo(
    *,
    lake: Lake,
    settings: Settings,
    rows: int = 20_000,
    seed: int = 0,
    log: Callable[[str], Any] = lambda _m: None,
    features: bool = True,
) -> SeedOutcome | None:
    """Seed the demo if the model has no champion yet; return None when nothing was needed.

    Args:
        lake: the lake.
        settings: the settings (config sections and the actor).
        rows: demo rows to generate (pre-campaign customers).
        seed: seed of the data and of training.
        log: progress callback, one line per step.
        features: train on the usage feature view (the demo); False trains on the churn rows alone
            (a model whose requests carry every feature, e.g. for ``bench/serving.py``).
    """
    from core import datasets, demo, registry
    from core.flows import promote as promote_flow
    from core.flows.train import train_model
    try:
        if "champion" in registry.aliases(DEMO_MODEL, lake=lake):
            return None
    except NotFoundError:
        pass  # no such model yet: seed it
    if lake.exists(datasets.table_name(DEMO_DATASET)):
        version = datasets.latest_version(DEMO_DATASET, lake=lake)
        log(f"dataset {DEMO_DATASET!r} v{version} already present")
    else:
        start = utcnow() - timedelta(days=120)
        # the champion is trained before the campaign: the campaign starts after the seeded period
        # (``lakeops simulate --campaign-after`` brings it), so its traffic drifts from the reference
        frame = demo.generate(rows, seed=seed, start=start, days=120, campaign_start=start + timedelta(days=3650))
        version = datasets.ingest(DEMO_DATASET, frame, lake=lake, source="core.demo", actor=settings.actor, settings=settings).version
        log(f"ingested demo dataset {DEMO_DATASET!r} v{version} ({frame.height} rows)")
    source, source_version = DEMO_DATASET, version
    if features:
        source, source_version = DEMO_TRAINING_SET, _seed_features(lake, settings, version, log)
    outcome = train_model(source, target=demo.TARGET, version=source_version, seed=seed, experiment=DEMO_MODEL, lake=lake, settings=settings)
    log(f"trained run {outcome.run_id} (auc {outcome.metrics.get('auc', float('nan')):.3f})")
    if not settings.section(f"models.{DEMO_MODEL}.policy"):
        promote_flow.set_policy(DEMO_MODEL, DEMO_POLICY, reason=DEMO_POLICY_REASON, actor=settings.actor, lake=lake, settings=settings)
    mv = registry.register(DEMO_MODEL, outcome.run_id, description="demo model seeded by lakeops up", actor=settings.actor, lake=lake)
    report = promote_flow.evaluate(DEMO_MODEL, mv.version, actor=settings.actor, lake=lake, settings=settings)
    passed = bool(getattr(report, "passed", False))
    promote_flow.promote(
        DEMO_MODEL,
        mv.version,
        reason="initial champion of the demo scenario",
        actor=settings.actor,
        force=not passed,
        lake=lake,
        settings=settings,
    )
    log(f"registered {DEMO_MODEL!r} v{mv.version} and made it champion" + ("" if passed else " (forced: gate failed)"))
    return SeedOutcome(version, outcome.run_id, mv.version, dict(outcome.metrics),
                       source if features else None, source_version if features else None)


def _seed_features(lake: Lake, settings: Settings, churn_version: int, log: Callable[[str], Any]) -> int:
    """Usage events, the ``churn_usage`` view, the ``churn_training`` set and the first online values."""
    from core import datasets, demo
    from core import features as fs

    if lake.exists(datasets.table_name(demo.USAGE_DATASET)):
        log(f"dataset {demo.USAGE_DATASET!r} already present")
    else:
        customers = datasets.load(DEMO_DATASET, churn_version, lake=lake)
        events = demo.usage_events(customers, until=utcnow())
        dv = datasets.ingest(demo.USAGE_DATASET, events, lake=lake, source="core.demo usage events", actor=settings.actor, settings=settings)
        log(f"ingested usage events {demo.USAGE_DATASET!r} v{dv.version} ({events.height} rows)")
    view, created = fs.register(fs.parse_view(demo.USAGE_VIEW), lake=lake, actor=settings.actor)
    log(f"feature view {view.name!r} v{view.version} " + ("registered" if created else "already registered"))
    built = fs.build_training_set(DEMO_TRAINING_SET, labels=DEMO_DATASET, label_version=churn_version,
                                  views=[(view.name, view.version)], lake=lake, actor=settings.actor,
                                  settings=settings)
    log(f"built training set {built.name!r} v{built.version}: {built.rows} rows as of each signup, "
        f"features {', '.join(view.feature_names)}")
    assert view.version is not None
    if fs.last_materialization(view.name, view.version, lake=lake) is None:
        m = fs.materialize(view.name, version=view.version, lake=lake, actor=settings.actor)
        log(f"materialised {m.entities} customers' online features ({view.name} v{view.version})")
    return built.version
