"""Seed the demo scenario into an empty lake: churn data, a trained model, the first champion.

Idempotent and resumable: each step is skipped when its result is already in the lake, so a
second ``lakeops up`` reuses the lake and an interrupted seed picks up where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.config import Settings, load_settings
from core.errors import NotFoundError
from core.ids import utcnow
from core.lake import Lake, resolve

__all__ = ["DEMO_DATASET", "DEMO_MODEL", "DEMO_POLICY", "SeedOutcome", "seed_demo"]

DEMO_DATASET = "churn"
DEMO_MODEL = "churn"
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


def seed_demo(
    *,
    lake: Lake | None = None,
    settings: Settings | None = None,
    rows: int = 20_000,
    seed: int = 0,
    log: Callable[[str], Any] = lambda _m: None,
) -> SeedOutcome | None:
    """Seed the demo if the model has no champion yet; return None when nothing was needed.

    Args:
        lake: the lake (default: from settings).
        settings: settings (default: from the environment).
        rows: demo rows to generate (pre-campaign customers).
        seed: seed of the data and of training.
        log: progress callback, one line per step.
    """
    from core import datasets, demo, registry
    from core.flows import promote as promote_flow
    from core.flows.train import train_model

    lake = resolve(lake)
    settings = settings or load_settings()
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
        version = datasets.ingest(DEMO_DATASET, frame, lake=lake, source="core.demo", actor=settings.actor).version
        log(f"ingested demo dataset {DEMO_DATASET!r} v{version} ({frame.height} rows)")
    outcome = train_model(DEMO_DATASET, target=demo.TARGET, version=version, seed=seed, experiment=DEMO_MODEL, lake=lake)
    log(f"trained run {outcome.run_id} (auc {outcome.metrics.get('auc', float('nan')):.3f})")
    if not settings.section(f"models.{DEMO_MODEL}.policy"):
        promote_flow.set_policy(DEMO_MODEL, DEMO_POLICY, reason=DEMO_POLICY_REASON, actor=settings.actor, lake=lake)
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
    return SeedOutcome(version, outcome.run_id, mv.version, dict(outcome.metrics))
