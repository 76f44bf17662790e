"""LightGBM's private API is fenced in ``core.training._lgbprivate`` and its public fallback scores the same.

With ``LAKEOPS_LGB_PRIVATE=0`` a model scores one row and small batches through ``Booster.predict``
instead of LightGBM's C API; the scores must equal the fast path's (to 1e-12) on real trained
models with categorical features, unknown levels and missing values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from core import training
from core.training import _lgbprivate
from core.training._aliases_snapshot import LIGHTGBM_VERSION

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"num_iterations": 40, "num_leaves": 15, "min_data_in_leaf": 10}


def _frame(n: int = 2000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    plan = rng.choice(["basic", "premium", "promo", "family"], size=n)
    region = rng.choice([f"r{i}" for i in range(12)], size=n)
    logit = 1.5 * x + np.where(plan == "promo", 1.2, 0.0) + np.where(region == "r3", -1.0, 0.0) - 0.3
    return pl.DataFrame(
        {
            "x": pl.Series(x).set(pl.Series(rng.random(n) < 0.08), None),
            "calls": pl.Series(rng.integers(0, 6, size=n)).set(pl.Series(rng.random(n) < 0.05), None),
            "plan": pl.Series(plan).set(pl.Series(rng.random(n) < 0.08), None),
            "region": pl.Series(region).set(pl.Series(rng.random(n) < 0.05), None),
            "churned": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def trained():
    df = _frame()
    binary = training.train(df, "churned", params=PARAMS, seed=0).model
    value = pl.col("calls").fill_null(2) * 2.0 + pl.col("x").fill_null(0) + (pl.col("plan") == "promo").cast(pl.Float64)
    reg = training.train(df.with_columns(v=value).drop("churned"), "v", params=PARAMS, seed=0).model
    return {"binary": binary, "regression": reg}


def _rows(model: training.Model) -> np.ndarray:
    """Encoded rows with missing numbers, missing categories and levels the model never saw."""
    frame = _frame(400, seed=7).with_columns(
        plan=pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.lit("never-seen")).otherwise(pl.col("plan")),
        region=pl.when(pl.int_range(pl.len()) % 11 == 0).then(pl.lit("r99")).otherwise(pl.col("region")),
    )
    X = model.encode(frame)
    assert np.isnan(X).any(axis=0).all()  # every column has missing values (nulls or unknown levels)
    return X


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_public_fallback_scores_equal_the_fast_path(trained, kind, monkeypatch):
    model = trained[kind]
    fast = training.Model.from_text(model.text, model.signature)
    assert fast.fast_path, _lgbprivate.disabled_reason()
    monkeypatch.setenv(_lgbprivate.ENV, "0")
    public = training.Model.from_text(model.text, model.signature)
    assert not public.fast_path
    monkeypatch.delenv(_lgbprivate.ENV)

    X = _rows(model)
    one_fast = np.concatenate([fast.predict_matrix(X[i]) for i in range(X.shape[0])])
    one_public = np.concatenate([public.predict_matrix(X[i : i + 1]) for i in range(X.shape[0])])
    np.testing.assert_allclose(one_public, one_fast, rtol=0, atol=1e-12)
    small_fast, small_public = fast.predict_matrix(X), public.predict_matrix(X)  # 400 rows: the small-batch path
    np.testing.assert_allclose(small_public, small_fast, rtol=0, atol=1e-12)
    np.testing.assert_allclose(small_fast, one_fast, rtol=0, atol=1e-12)
    big = np.repeat(X, 6, axis=0)  # >= 2048 rows: Booster.predict on several threads for both
    np.testing.assert_allclose(public.predict_matrix(big), np.repeat(small_fast, 6), rtol=0, atol=1e-12)
    # the fast model really went through the C API, the public one never did
    assert fast.fast_path and fast._fast._row is not None
    assert not public.fast_path and public._fast._row is None
    if kind == "binary":
        assert ((one_fast > 0) & (one_fast < 1)).all() and one_fast.std() > 0.05  # real scores, not a constant


def test_switch_off_from_the_environment_in_a_fresh_process(trained, tmp_path):
    """A process started with the private API off: aliases from the snapshot, scores from Booster.predict."""
    model = trained["binary"]
    X = _rows(model)[:50]
    (tmp_path / "model.txt").write_text(model.text)
    (tmp_path / "signature.json").write_text(json.dumps(model.signature))
    np.save(tmp_path / "X.npy", X)
    script = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from core import training\n"
        "from core.training import _params\n"
        "d = Path(sys.argv[1])\n"
        "m = training.Model.from_text((d / 'model.txt').read_text(), json.loads((d / 'signature.json').read_text()))\n"
        "X = np.load(d / 'X.npy')\n"
        "out = {'fast_path': m.fast_path, 'one': [m.predict_matrix(X[i])[0] for i in range(len(X))],\n"
        "       'small': m.predict_matrix(X).tolist(), 'aliases': _params._ALIASES,\n"
        "       'params': training.validate_params({'n_estimators': 5, 'eta': 0.1, 'num_leaves': 7})}\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, _lgbprivate.ENV: "0", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["fast_path"] is False
    fast = training.Model.from_text(model.text, model.signature)
    assert fast.fast_path, _lgbprivate.disabled_reason()
    expected = fast.predict_matrix(X)
    np.testing.assert_allclose(got["one"], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["small"], expected, rtol=0, atol=1e-12)
    assert got["params"] == {"num_iterations": 5, "learning_rate": 0.1, "num_leaves": 7}
    assert got["aliases"] == _lgbprivate.param_aliases(private=False)


def test_alias_snapshot_matches_the_installed_lightgbm():
    live, snapshot = _lgbprivate.param_aliases(private=True), _lgbprivate.param_aliases(private=False)
    assert snapshot["n_estimators"] == "num_iterations" and snapshot["eta"] == "learning_rate"
    if lgb.__version__ != LIGHTGBM_VERSION:
        # another 4.x: the parameters both know map alike (the snapshot may lack newer ones)
        shared = set(live) & set(snapshot)
        assert len(shared) > 0.9 * len(snapshot)
        assert {k: live[k] for k in shared} == {k: snapshot[k] for k in shared}
    else:
        assert live == snapshot


def test_probe_accepts_this_lightgbm_and_names_a_changed_shape():
    assert _lgbprivate.probe(lgb) is None
    assert "not 4.x" in _lgbprivate.probe(SimpleNamespace(__version__="5.0.0", basic=lgb.basic))
    assert "_LIB is missing" in _lgbprivate.probe(SimpleNamespace(__version__="4.9.0", basic=SimpleNamespace()))
    lib = SimpleNamespace(**{n: getattr(lgb.basic._LIB, n) for n in _lgbprivate._FUNCTIONS[1:]})
    why = _lgbprivate.probe(SimpleNamespace(__version__="4.9.0", basic=SimpleNamespace(_LIB=lib)))
    assert "LGBM_BoosterPredictForMatSingleRowFastInit" in why
    basic = SimpleNamespace(_LIB=lgb.basic._LIB, _C_API_DTYPE_FLOAT64=0)
    assert "_C_API_DTYPE_FLOAT64" in _lgbprivate.probe(SimpleNamespace(__version__="4.9.0", basic=basic))
