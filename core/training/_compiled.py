"""A model's trees compiled to machine code (lleaves, LLVM), checked against LightGBM before use.

LightGBM walks its trees as data: for a 100-row request on one thread that is ~130 us with the
trees hot in the CPU caches and ~220-300 us inside a server, where every request evicts them
(bench/serving.py). lleaves turns each tree into branches of native code: ~20 us for the same
rows (docs/architecture.md, "Compiled trees"). Serving uses it for hot models
(``core.serving.models``); training, batch scoring and every offline path keep LightGBM.

Exactness. The compiled forest sums the same leaf values in the same tree order, with the same
link function, but LLVM may fuse or reorder floating-point operations: the scores agree with
``Booster.predict`` to a few units in the last place (~1e-16 for a probability), not bit for bit.
Before a compiled model is used, ``compile_model`` scores a probe matrix with both and refuses
(``CompileRefused``, the model keeps scoring through LightGBM) when any score differs by more than
``TOLERANCE`` relative to its size (absolute for scores up to 1: a regression model's scores in the
thousands carry rounding of ~1e-12 in absolute terms). The probe puts every feature on each
side of every threshold the trees split it on (the neighbouring floats), on every categorical
level a split names and one it does not, on 0 and on NaN (missing), in random combinations:
every decision each tree can take is taken by some row, so a compiled branch that goes the other
way than LightGBM's shows up as a score difference.

Refused outright, before compiling: multi-output models (multiclass), linear trees, objectives
lleaves does not know. A model's compiled object file is cached (``cache_dir``, one file per model
sha256, lleaves/llvmlite version and host CPU), written under a temporary name and renamed into
place, so concurrent workers compile at most once each and never read a half-written file; a
cached file is checked with the probe like a fresh one (a file that fails it is deleted).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TOLERANCE", "CompileRefused", "CompiledModel", "compile_model"]

TOLERANCE = 1e-12  # the largest accepted |compiled - LightGBM| / max(1, |LightGBM|) per score
_PROBE_ROWS = 4096
_BIG_BATCH = 50_000  # rows; above this the compiled model scores on several threads
_OBJECTIVES = frozenset({"binary", "regression", "regression_l1", "huber", "fair", "quantile", "mape", "poisson",
                         "gamma", "tweedie", "cross_entropy", "xentropy"})
_lock = threading.Lock()  # LLVM's compile pipeline: one compile at a time in the process


class CompileRefused(Exception):
    """This model cannot be (or was not) compiled; it keeps scoring through LightGBM."""


class CompiledModel:
    """A compiled forest: ``predict_matrix(X)`` like ``Model.predict_matrix``, to ``TOLERANCE``.

    Attributes:
        max_diff: the largest (relative) score difference from LightGBM seen on the probe.
        seconds: how long compiling (or loading the cached file) and checking took.
        cached: whether the object file came from the cache.
    """

    __slots__ = ("_ll", "cached", "max_diff", "seconds")

    def __init__(self, ll: Any, max_diff: float, seconds: float, cached: bool) -> None:
        self._ll = ll
        self.max_diff, self.seconds, self.cached = max_diff, seconds, cached

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Score an encoded float64 matrix (rows x features); the GIL is released while it runs."""
        n = X.shape[0]
        threads = 1 if n < _BIG_BATCH else max(1, min(4, os.cpu_count() or 1))
        return np.asarray(self._ll.predict(X, n_jobs=threads), dtype=np.float64)


def _host_key() -> str:
    from importlib.metadata import version

    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    cpu = f"{llvm.get_host_cpu_name()}:{hashlib.sha256(features.encode()).hexdigest()[:12]}"
    return f"lleaves{version('lleaves')}-llvmlite{version('llvmlite')}-{cpu}"


def _refusal(dump: dict[str, Any], text: str) -> str | None:
    """Why lleaves cannot compile this model exactly (checked before compiling), or None."""
    if int(dump.get("num_tree_per_iteration", 1)) != 1:
        return "a multi-output (multiclass) model"
    objective = str(dump.get("objective") or "?").split()[0]
    if objective not in _OBJECTIVES:
        return f"objective {objective!r}, which the compiler does not implement"
    if "\nis_linear=1" in text:
        return "a linear-tree model"
    return None


def _split_values(dump: dict[str, Any], ncol: int) -> list[np.ndarray]:
    """For each feature, the values the probe draws from: both sides of every split on it."""
    numeric: list[set[float]] = [{0.0} for _ in range(ncol)]
    stack = [t["tree_structure"] for t in dump.get("tree_info", [])]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        f = int(node["split_feature"])
        if node.get("decision_type") == "==":
            cats = [float(c) for c in str(node["threshold"]).split("||") if c != ""]
            numeric[f].update(cats)
            numeric[f].update(c + 1 for c in cats)  # a level the split does not name
            numeric[f].add(-1.0)
        else:
            t = float(node["threshold"])
            numeric[f].update((t, float(np.nextafter(t, -np.inf)), float(np.nextafter(t, np.inf))))
        stack.extend((node["left_child"], node["right_child"]))
    return [np.array(sorted(v), dtype=np.float64) for v in numeric]


def _probe(dump: dict[str, Any], ncol: int) -> np.ndarray:
    rng = np.random.default_rng(20261205)
    X = np.empty((_PROBE_ROWS, ncol), dtype=np.float64)
    for j, values in enumerate(_split_values(dump, ncol)):
        X[:, j] = values[rng.integers(0, len(values), _PROBE_ROWS)]
        X[rng.random(_PROBE_ROWS) < 0.1, j] = np.nan  # missing
    return X


def _relative_diff(got: np.ndarray, expected: np.ndarray) -> float:
    """The largest ``|got - expected| / max(1, |expected|)`` (NaN where both are NaN counts as 0)."""
    both = np.isnan(expected) & np.isnan(got)
    err = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    return float(np.max(np.where(both, 0.0, err))) if len(got) else 0.0


def compile_model(model: Any, cache_dir: Path | None) -> CompiledModel:
    """Compile ``model`` (a ``core.training.Model``) with lleaves and check it on the probe.

    Args:
        model: the LightGBM model to compile.
        cache_dir: where compiled object files are kept between processes (None: no cache).

    Raises:
        CompileRefused: lleaves is not installed, the model is of a kind it cannot compile
            exactly, compiling failed, or a probe score differs from LightGBM's by more than
            ``TOLERANCE`` (the message says which and by how much).
    """
    import time

    t0 = time.perf_counter()
    try:
        import lleaves
    except ImportError as exc:
        raise CompileRefused(f"lleaves is not installed ({exc})") from None
    dump, text = model.dump(), model.prediction_text()
    reason = _refusal(dump, text)
    if reason:
        raise CompileRefused(f"not compiled: {reason}")
    ncol = len(model.feature_names)
    probe = _probe(dump, ncol)
    expected = model.predict_matrix(probe)
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"{model.sha256}-{_host_key()}.o"
    with tempfile.TemporaryDirectory(prefix="lakeops-compile-") as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(text)
        cached = cache is not None and cache.exists()
        try:
            with _lock:
                ll = lleaves.Model(model_file=str(model_file))
                if cached:
                    assert cache is not None
                    ll.compile(cache=str(cache))
                else:
                    out = Path(tmp) / "forest.o"
                    ll.compile(cache=str(out) if cache is not None else None)
                    if cache is not None and out.exists():
                        out.replace(cache)  # whole or not at all; another worker's copy is identical
        except Exception as exc:  # noqa: BLE001 - whatever LLVM raises, the model keeps LightGBM
            raise CompileRefused(f"compiling failed: {type(exc).__name__}: {exc}") from None
    compiled = CompiledModel(ll, 0.0, 0.0, cached)
    got = compiled.predict_matrix(probe)
    diff = _relative_diff(got, expected)
    if not diff <= TOLERANCE:
        if cached and cache is not None:
            cache.unlink(missing_ok=True)  # a stale or damaged file: the next attempt compiles afresh
        raise CompileRefused(f"the compiled model differs from LightGBM by {diff:.3g} on the probe (> {TOLERANCE:g})")
    compiled.max_diff, compiled.seconds = diff, time.perf_counter() - t0
    return compiled
