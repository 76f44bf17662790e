"""CBPE (performance estimated before labels) against NannyML's CBPE on generated data with known truth.

A binary problem with a known ``P(y | x)`` (logistic in three features). A LightGBM model
(``core.training``) is trained on 20,000 rows; its scores on a 20,000-row holdout with labels
are the reference. Then analysis chunks of ``--chunk`` rows:

* covariate shift: the features move (the population changes, ``P(y | x)`` does not), from none
  to strong; the labels are drawn from the known ``P(y | x)``, so realised performance is known;
* label shift: the class prior moves from 30 % to 60 % positives while ``P(x | y)`` stays
  (CBPE's assumption ``P(y | x)`` fixed is broken on purpose: both implementations should be
  equally wrong, and the bench says by how much).

For every chunk and metric (ROC AUC, accuracy, precision, recall, F1) it prints ours
(``core.drift.estimate_performance`` with ``core.drift.Calibration``), NannyML's estimate and
the realised value, and sums up: max |ours - NannyML|, and how often the realised value is inside
each band (ours: ± 3 sampling errors from the scores; NannyML: ± 3 of its sampling error).

NannyML is not a lakeops dependency (it pins lightgbm 4.5 and pulls scikit-learn, xgboost, cloud
SDKs); it runs in its own virtual environment, given by ``--nannyml-python`` (default
``$LAKEOPS_NANNYML_PYTHON`` or /tmp/nannyml-venv/bin/python; make it with
``python -m venv /tmp/nannyml-venv && /tmp/nannyml-venv/bin/pip install nannyml statsmodels``:
nannyml 0.13.1 imports statsmodels without declaring it).

    python bench/cbpe.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ["auc", "accuracy", "precision", "recall", "f1"]
NML_NAMES = {"auc": "roc_auc", "accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "f1"}
BETA = np.array([1.2, -0.8, 0.6])


def _p(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(x @ BETA - 0.9 + 0.4 * np.sin(2 * x[:, 0]))))


def _covariate(n: int, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(0, 1, (n, 3))
    x[:, 0] = x[:, 0] * (1 - 0.5 * shift) + 0.8 * shift  # toward where the model is less sure
    x[:, 1] += 0.6 * shift
    return x, (rng.random(n) < _p(x)).astype(np.int64)


def _label_shift(n: int, prior: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows with P(y=1) = prior and the reference population's P(x | y) (rejection sampling)."""
    pool, labels = _covariate(20 * n, 0.0, rng)
    pos, neg = pool[labels == 1], pool[labels == 0]
    k = int(round(n * prior))
    x = np.vstack([pos[rng.choice(len(pos), k, replace=False)], neg[rng.choice(len(neg), n - k, replace=False)]])
    y = np.r_[np.ones(k, np.int64), np.zeros(n - k, np.int64)]
    order = rng.permutation(n)
    return x[order], y[order]


def _frame(x: np.ndarray, y: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "y": y})


NANNYML_CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    import pandas as pd
    import nannyml as nml
    warnings.filterwarnings("ignore")
    ref = pd.read_parquet(sys.argv[1]); ana = pd.read_parquet(sys.argv[2]); chunk = int(sys.argv[3])
    est = nml.CBPE(y_pred_proba="score", y_pred="pred", y_true="y", problem_type="classification_binary",
                   metrics=["roc_auc", "accuracy", "precision", "recall", "f1"], chunk_size=chunk)
    est.fit(ref)
    res = est.estimate(ana.drop(columns=["y"])).filter(period="analysis").to_df()
    out = {}
    for m in ["roc_auc", "accuracy", "precision", "recall", "f1"]:
        out[m] = {"value": res[(m, "value")].tolist(), "sampling_error": res[(m, "sampling_error")].tolist()}
    out["calibrated"] = bool(est.needs_calibration)
    print(json.dumps(out))
    """
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--nannyml-python", default=os.environ.get("LAKEOPS_NANNYML_PYTHON", "/tmp/nannyml-venv/bin/python"))
    args = ap.parse_args()
    from core import drift, training

    rng = np.random.default_rng(0)
    model = training.train(_frame(*_covariate(20000, 0.0, rng)), "y", params={"num_iterations": 150}, seed=0).model
    x_ref, y_ref = _covariate(20000, 0.0, rng)
    ref_scores = model.predict(_frame(x_ref, y_ref))
    cal = drift.Calibration.fit(ref_scores, y_ref, threshold=0.5)
    print(f"reference: 20,000 holdout rows, model AUC {training.compute_metrics('binary', y_ref, ref_scores)['auc']:.4f}; "
          f"ours calibrated: {cal.applied} (out-of-sample ECE {cal.ece_before:.4f} -> {cal.ece_after:.4f})")
    scenarios = {
        "covariate": [(f"shift {s:.2f}", *_covariate(args.chunk, s, rng)) for s in np.linspace(0, 1, 6)],
        "label": [(f"prior {p:.2f}", *_label_shift(args.chunk, p, rng)) for p in (0.3, 0.4, 0.5, 0.6)],
    }
    if not Path(args.nannyml_python).exists():
        sys.exit(f"no NannyML environment at {args.nannyml_python}; see the module docstring")
    summary = {}
    for name, chunks in scenarios.items():
        rows = []
        for label, x, y in chunks:
            scores = model.predict(_frame(x, y))
            ours = drift.estimate_performance(scores, cal)
            real = training.compute_metrics("binary", y, scores)
            rows.append((label, scores, y, ours, real))
        with tempfile.TemporaryDirectory() as tmp:
            ref_pq, ana_pq = Path(tmp) / "ref.parquet", Path(tmp) / "ana.parquet"
            pl.DataFrame({"score": ref_scores, "pred": (ref_scores >= 0.5).astype(np.int64), "y": y_ref}).write_parquet(ref_pq)
            pl.concat([pl.DataFrame({"score": s, "pred": (s >= 0.5).astype(np.int64), "y": yy}) for _, s, yy, _, _ in rows]
                      ).write_parquet(ana_pq)
            script = Path(tmp) / "nml.py"
            script.write_text(NANNYML_CHILD)
            proc = subprocess.run([args.nannyml_python, str(script), str(ref_pq), str(ana_pq), str(args.chunk)],
                                  capture_output=True, text=True, check=True)
            nml = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\n{name} shift, chunks of {args.chunk:,} rows (NannyML calibrated: {nml['calibrated']})")
        print(f"{'chunk':<12}{'metric':<10}{'ours':>8}{'± se':>8}{'NannyML':>9}{'± se':>8}{'realised':>10}")
        diffs, inside_ours, inside_nml, err_ours = [], 0, 0, []
        for i, (label, _, _, ours, real) in enumerate(rows):
            for m in METRICS:
                nv, ns = nml[NML_NAMES[m]]["value"][i], nml[NML_NAMES[m]]["sampling_error"][i]
                e = ours[m]
                print(f"{label:<12}{m:<10}{e.value:>8.4f}{e.sampling_error:>8.4f}{nv:>9.4f}{ns:>8.4f}{real[m]:>10.4f}")
                diffs.append(abs(e.value - nv))
                err_ours.append(abs(e.value - real[m]))
                inside_ours += e.lower <= real[m] <= e.upper
                inside_nml += nv - 3 * ns <= real[m] <= nv + 3 * ns
        total = len(rows) * len(METRICS)
        summary[name] = (max(diffs), float(np.mean(diffs)), max(err_ours), inside_ours, inside_nml, total)
    print("\nsummary (all chunks x 5 metrics)")
    for name, (mx, mean, err, io, inm, total) in summary.items():
        print(f"  {name:<10} |ours - NannyML| max {mx:.1e}, mean {mean:.1e}; |ours - realised| max {err:.4f}; "
              f"realised inside the band: ours {io}/{total}, NannyML {inm}/{total}")


if __name__ == "__main__":
    main()
