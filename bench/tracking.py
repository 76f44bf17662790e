"""Tracking figures of issue 4: runs/s, steps/s, search_runs latency (python bench/tracking.py [--quick])."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import tracking  # noqa: E402
from core.lake import Lake  # noqa: E402
from core.tracking import _reads  # noqa: E402


def _commits(lake: Lake) -> int:
    return sum(lake.version(t) + 1 for t in ("runs", "params", "tags", "metrics") if lake.exists(t))


def log_runs(lake: Lake, n: int, experiment: str, offset: int = 0) -> float:
    """n runs x (10 params, 5 tags, 20 metrics) through the public API; seconds until durable."""
    t0 = time.perf_counter()
    for i in range(offset, offset + n):
        with tracking.start_run(experiment, name=f"run-{i}", seed=i, lake=lake) as run:
            run.log_params({f"p{j}": (i + j) % 7 for j in range(9)} | {"num_leaves": 15 + 16 * (i % 4)})
            run.set_tags({f"t{j}": f"v{(i * j) % 5}" for j in range(5)})
            run.log_metrics(
                {f"m{j}": ((i * 7919 + j * 104729) % 10_000) / 10_000 for j in range(19)}
                | {"auc": (i % 1000) / 1000}
            )
    tracking.flush(lake)
    return time.perf_counter() - t0


def log_steps(lake: Lake, steps: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with tracking.start_run("steps", name="long", lake=lake) as run:
        for s in range(steps):
            run.log_metrics({"loss": 1 / (s + 1), "acc": s / steps, "lr": 0.1}, step=s)
    tracking.flush(lake)
    elapsed = time.perf_counter() - t0
    return elapsed, tracking.metric_history(run.run_id, lake=lake).height


def time_query(lake: Lake, repeat: int, **kwargs: object) -> tuple[float, float, int]:
    """(cold ms, warm median ms, rows): cold = the pivot cache dropped first."""
    _reads._cache.clear()
    t0 = time.perf_counter()
    rows = tracking.search_runs(lake=lake, **kwargs).height  # type: ignore[arg-type]
    cold = (time.perf_counter() - t0) * 1000
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        tracking.search_runs(lake=lake, **kwargs)  # type: ignore[arg-type]
        warm.append((time.perf_counter() - t0) * 1000)
    return cold, statistics.median(warm), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller run (200 runs, 2,000 steps, 2,000 runs searched)"
    )
    args = parser.parse_args()
    n_runs, n_steps, n_search = (200, 2_000, 2_000) if args.quick else (1_000, 10_000, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        tracking.flush(lake)
        elapsed = log_runs(lake, n_runs, "bench")
        print(
            f"runs: {n_runs} runs x (10 params, 5 tags, 20 metrics) in {elapsed:.2f} s "
            f"= {n_runs / elapsed:,.0f} runs/s (goal >= 100), durable; {_commits(lake)} commits in all"
        )

        elapsed, points = log_steps(lake, n_steps)
        print(
            f"steps: {n_steps} steps x 3 metrics (one log_metrics call per step) in {elapsed:.2f} s "
            f"= {n_steps / elapsed:,.0f} steps/s (goal >= 10,000), durable; {points:,} points read back "
            f"({'all' if points == 3 * n_steps else 'MISSING SOME'})"
        )

        t0 = time.perf_counter()
        log_runs(lake, n_search - n_runs, "bench", offset=n_runs)
        print(
            f"(logged {n_search - n_runs} more runs in {time.perf_counter() - t0:.1f} s for the search figures)"
        )
        cases = {
            "metric filter": {"filter": "metrics.auc > 0.5", "order_by": ["metrics.auc desc"]},
            "param filter": {"filter": "params.num_leaves = '31'", "order_by": ["metrics.m3 desc"]},
            "two clauses": {"filter": "metrics.auc > 0.2 and params.num_leaves = '47'"},
            "no filter, order by metric": {"order_by": ["metrics.m1 desc"]},
        }
        print(
            f"search_runs over {n_search:,} runs of experiment 'bench' (ms; cold = pivot rebuilt, warm = median of 20):"
        )
        for label, kwargs in cases.items():
            for top in (100, None):
                cold, warm, rows = time_query(lake, 20, experiment="bench", max_results=top, **kwargs)
                print(
                    f"  {label:28s} top {str(top or 'all'):>4s}: cold {cold:7.1f}  warm {warm:6.2f}  ({rows:,} rows)"
                )
        ttl, _reads.SEARCH_CACHE_TTL_S = _reads.SEARCH_CACHE_TTL_S, 0.0  # every call re-checks versions
        _, checked, _ = time_query(lake, 10, experiment="bench", max_results=100, **cases["metric filter"])
        _reads.SEARCH_CACHE_TTL_S = ttl
        print(
            f"  after the {ttl:g} s cache TTL, tables unchanged (version check, no rebuild): {checked:.1f} ms"
        )


if __name__ == "__main__":
    main()
