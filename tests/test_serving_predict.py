"""The single-row fast path of ``Model.predict_matrix`` gives exactly the batch path's scores."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest

from core import training

FAST = {"num_iterations": 30, "num_leaves": 7, "min_data_in_leaf": 10}


def _frame(n: int = 1500, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    plan = rng.choice(["basic", "premium", "promo"], size=n)
    logit = 1.5 * x + np.where(plan == "promo", 1.2, 0.0) - 0.3
    return pl.DataFrame(
        {
            "x": pl.Series(x).set(pl.Series(rng.random(n) < 0.05), None),
            "calls": rng.integers(0, 5, size=n),
            "plan": pl.Series(plan).set(pl.Series(rng.random(n) < 0.05), None),
            "churned": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def models():
    df = _frame()
    binary = training.train(df, "churned", params=FAST, seed=0).model
    reg = training.train(df.with_columns(v=pl.col("calls") * 2.0 + 1).drop("churned"), "v", params=FAST, seed=0).model
    return {"binary": binary, "binary_from_text": training.Model.from_text(binary.text, binary.signature), "regression": reg}


ROWS = pl.DataFrame(
    {
        "x": [0.5, None, -1.2, 3.0, None, 0.0],
        "calls": [1, 2, 0, 4, None, 3],
        "plan": ["promo", "never-seen", None, "basic", None, "premium"],
    }
)


@pytest.mark.parametrize("kind", ["binary", "binary_from_text", "regression"])
def test_single_row_scores_equal_the_batch_path_exactly(models, kind):
    model = models[kind]
    X = model.encode(ROWS)
    assert np.isnan(X[1, 0]) and np.isnan(X[1, 2]) and np.isnan(X[4]).all()  # missing + unknown level
    batch = model.predict_matrix(X)  # > 1 row: Booster.predict
    reference = model._booster.predict(X, num_threads=1)
    assert batch.tolist() == reference.tolist()
    for i in range(X.shape[0]):
        one = model.predict_matrix(X[i : i + 1])
        flat = model.predict_matrix(X[i])
        assert one.shape == (1,) and one.dtype == np.float64
        assert one.tolist() == flat.tolist() == [reference[i]]  # bit-identical, not approximate
    assert model.predict(ROWS.head(1)).tolist() == [reference[0]]


def test_single_row_path_is_safe_across_threads(models):
    model = models["binary"]
    X = model.encode(_frame(300, seed=3))
    expected = model.predict_matrix(X).tolist()
    assert expected == model._booster.predict(X, num_threads=1).tolist()  # the small-batch path too
    big = np.repeat(X, 8, axis=0)  # >= 2048 rows: Booster.predict with several threads
    assert model.predict_matrix(big).tolist() == np.repeat(model._booster.predict(X), 8).tolist()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: model.predict_matrix(X[i : i + 1])[0], range(X.shape[0])))
    assert got == expected


def test_micro_batcher_batches_concurrent_requests_and_goes_inline_when_alone(models):
    import asyncio

    from core.serving.models import _PROBE_EVERY, _SOLO_MAX, Scorer, _Batcher

    model = models["binary"]
    X = model.encode(_frame(30, seed=5))
    batcher = _Batcher(Scorer(model, "binary v1"))

    async def together():
        parts = [X[0:10], X[10:11], X[11:30]]
        return await asyncio.gather(*(batcher.submit(p) for p in parts))

    got = asyncio.run(together())
    assert np.concatenate(got).tolist() == model.predict_matrix(X).tolist()
    assert batcher.worth_it()  # the last flush found company

    async def alone():
        for i in range(_SOLO_MAX):
            assert batcher.worth_it()
            assert (await batcher.submit(X[i : i + 2])).tolist() == model.predict_matrix(X[i : i + 2]).tolist()

    asyncio.run(alone())
    decisions = [batcher.worth_it() for _ in range(2 * _PROBE_EVERY)]
    assert decisions.count(True) == 2  # inline now, with a periodic probe
