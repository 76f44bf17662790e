"""Registry figures: champion polling cost (what serving pays every 1-2 s), register, load, evaluate.

Run: ``python bench/registry.py [--quick]``. Prints milliseconds; the machine may be shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import datasets, demo, registry  # noqa: E402
from core.config import Settings  # noqa: E402
from core.flows import promote  # noqa: E402
from core.flows.train import train_model  # noqa: E402
from core.lake import Lake  # noqa: E402


def _ms(fn, repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_events = 50 if args.quick else 300
    lake = Lake(Path(tempfile.mkdtemp()) / "lake")
    settings = Settings(lake_uri=lake.uri, actor="bench")
    datasets.ingest("churn", demo.generate(n=3000), lake=lake, settings=Settings())
    run_id = train_model("churn", target="churned", params={"num_iterations": 50}, lake=lake, settings=settings).run_id

    t0 = time.perf_counter()
    for _ in range(3):
        registry.register("churn", run_id, lake=lake, actor="bench")
    print(f"register: {(time.perf_counter() - t0) / 3 * 1000:.0f} ms per version")
    for i in range(n_events):  # a long alias history (one commit per event)
        registry.set_alias("churn", "champion", 1 + i % 3, actor="bench", reason="bench", lake=lake)
    print(f"registry_events commits: {lake.version('registry_events')}")

    p50, p95 = _ms(lambda: registry.champion_version("churn", lake), 50)
    print(f"champion_version, nothing changed (cached): p50 {p50:.1f} ms, p95 {p95:.1f} ms")

    def changed() -> None:
        registry.record_event("churn", "approve", version=1, actor="bench", reason="poke", lake=lake)
        t = time.perf_counter()
        registry.champion_version("churn", lake)
        changed.samples.append((time.perf_counter() - t) * 1000)  # type: ignore[attr-defined]

    changed.samples = []  # type: ignore[attr-defined]
    for _ in range(10):
        changed()
    s = changed.samples  # type: ignore[attr-defined]
    print(f"champion_version, after a new event (replay): p50 {np.percentile(s, 50):.1f} ms, max {max(s):.1f} ms")

    p50, p95 = _ms(lambda: registry.load("churn", version=1, alias=None, lake=lake), 10)
    print(f"load (sha256 checked): p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    t0 = time.perf_counter()
    report = promote.evaluate("churn", 2, lake=lake, actor="bench", settings=settings)
    print(f"evaluate (holdout 600 rows, champion rescored, latency measured): {(time.perf_counter() - t0) * 1000:.0f} ms")
    for c in report.checks:
        if c.name.startswith("max_p95_latency_ms"):
            print(f"  {c.name}: {c.value:.3f} ms")


if __name__ == "__main__":
    main()
