"""Shadow challenger cost: champion p50 latency and server CPU per request with and without a shadow.

Run: ``python bench/rollout.py [--duration S] [--reps N]``. Two ``lakeops serve`` processes on
127.0.0.1 over copies of one seeded demo lake: (plain) the champion alone, (shadow) the champion
with a second version staged in shadow mode (scored in a background thread, logged with role
``shadow``). wrk posts 1-row and 100-row bodies at concurrency 1; the cells run round-robin
``--reps`` times and medians are printed, with the shadow's added share of the champion's p50.
The goal (issue 16): at most +10 % p50 for 1 and 100 rows at c=1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# bench/serving.py (wrk, the lakeops server), loaded by path: bench/ is scripts, not a package
_spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "bench" / "serving.py")
assert _spec is not None and _spec.loader is not None
_serving = sys.modules["bench_serving"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serving)
build_lake, run_wrk, start_lakeops = _serving.build_lake, _serving.run_wrk, _serving.start_lakeops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from core import demo, registry
    from core.config import Settings
    from core.flows.train import train_model
    from core.lake import Lake

    root = Path(tempfile.mkdtemp(prefix="lakeops-rollout-"))
    lake = build_lake(root)
    settings = Settings(lake_uri=str(lake), actor="bench")
    out = train_model("churn", target="churned", params={"num_iterations": 120}, seed=7, lake=Lake(str(lake)), settings=settings)
    v2 = registry.register("churn", out.run_id, actor="bench", lake=Lake(str(lake))).version
    shadow_lake = root / "lake-shadow"
    shutil.copytree(lake, shadow_lake)
    registry.set_alias("churn", "challenger", v2, actor="bench", reason="bench", action="stage",
                       report={"mode": "shadow", "fraction": 0.0}, lake=Lake(str(shadow_lake)))
    frame = demo.generate(n=100, seed=7).select(demo.FEATURES)
    bodies = {}
    for n in (1, 100):
        bodies[n] = root / f"body{n}.json"
        bodies[n].write_text(json.dumps(frame.head(n).to_dicts()))
    servers = {
        "plain": start_lakeops(lake, root, "plain", {}),
        "shadow": start_lakeops(shadow_lake, root, "shadow", {}),
    }
    time.sleep(2)  # let the shadow worker load its challenger
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for _ in range(args.reps):
            for n in (1, 100):
                for name, (proc, url) in servers.items():
                    r = run_wrk(url + "/v1/models/churn/predict", bodies[n], 1, args.duration, proc)
                    results.setdefault((name, n), []).append(r)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    print("rows  server   p50 ms   p99 ms   req/s   CPU us/req")
    for n in (1, 100):
        p50 = {}
        for name in ("plain", "shadow"):
            cell = results[(name, n)]
            med = {k: float(np.median([c[k] for c in cell])) for k in ("p50", "p99", "rps", "cpu_us")}
            p50[name] = med["p50"]
            print(f"{n:>4}  {name:<7} {med['p50']:7.3f}  {med['p99']:7.3f}  {med['rps']:7.0f}  {med['cpu_us']:9.0f}")
        print(f"      shadow adds {100 * (p50['shadow'] / p50['plain'] - 1):+.1f} % to the champion's p50 at c=1")


if __name__ == "__main__":
    main()
