"""The demo seed `lakeops up` runs: data, a trained champion, the demo policy; a second run reuses it."""

from __future__ import annotations

from core import datasets, registry
from core.flows import promote
from core.flows.seed import DEMO_MODEL, seed_demo


def test_seed_creates_a_champion_once_and_reuses_the_lake(lake, settings):
    lines: list[str] = []
    first = seed_demo(lake=lake, settings=settings, rows=3000, log=lines.append)
    assert first is not None and first.model_version == 1 and first.metrics["auc"] > 0.6
    assert registry.aliases(DEMO_MODEL, lake=lake) == {"champion": 1}
    assert datasets.latest_version("churn", lake=lake) == first.dataset_version
    policy, source = promote.policy_with_source(DEMO_MODEL, settings=settings, lake=lake)
    assert policy.auto_promote and "recorded in the lake" in source
    assert any("champion" in line for line in lines)
    assert seed_demo(lake=lake, settings=settings, rows=3000) is None
    assert registry.versions(DEMO_MODEL, lake=lake).height == 1
