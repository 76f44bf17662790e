from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np
import polars as pl
from scipy.stats import rankdata

from core import demo


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    r = rankdata(s)
    n1 = y.sum()
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _encode(frame: pl.DataFrame, levels: dict[str, list[str]]) -> np.ndarray:
    cols = []
    for c in demo.FEATURES:
        if c in demo.CATEGORICAL:
            mapping = {v: float(i) for i, v in enumerate(levels[c])}
            cols.append(frame[c].replace_strict(mapping, default=None, return_dtype=pl.Float64).to_numpy())
        else:
            cols.append(frame[c].cast(pl.Float64).to_numpy())
    return np.column_stack(cols)


def test_schema_and_contract():
    f = demo.generate(2_000, seed=3)
    assert f.height == 2_000
    assert f.columns[:2] == ["customer_id", "signup_at"]
    assert set(demo.FEATURES) <= set(f.columns) and demo.TARGET in f.columns
    assert len(demo.FEATURES) >= 15
    assert f.schema[demo.TIME_COLUMN] == pl.Datetime("us", "UTC")
    assert f.schema[demo.TARGET] == pl.Int64
    assert set(f[demo.TARGET].unique()) == {0, 1}
    assert all(f.schema[c] == pl.String for c in demo.CATEGORICAL)
    assert all(f.schema[c].is_numeric() for c in demo.FEATURES if c not in demo.CATEGORICAL)
    assert f["customer_id"].n_unique() == f.height
    assert f[demo.TIME_COLUMN].is_sorted()
    assert 0.15 < f[demo.TARGET].mean() < 0.45


def test_deterministic_for_a_seed():
    a, b = demo.generate(3_000, seed=7), demo.generate(3_000, seed=7)
    assert a.equals(b)
    assert not a.equals(demo.generate(3_000, seed=8))


def test_start_days_and_campaign_window():
    start = datetime(2024, 6, 1, tzinfo=UTC)
    f = demo.generate(4_000, seed=1, start=start, days=30, campaign_start=start + timedelta(days=10))
    assert f[demo.TIME_COLUMN].min() >= start
    assert f[demo.TIME_COLUMN].max() < start + timedelta(days=30)
    before = f.filter(pl.col(demo.TIME_COLUMN) < start + timedelta(days=10))
    after = f.filter(pl.col(demo.TIME_COLUMN) >= start + timedelta(days=10))
    assert before.filter(pl.col("signup_channel") == "campaign").height == 0
    assert before.filter(pl.col("plan") == "promo").height == 0
    assert after.filter(pl.col("signup_channel") == "campaign").height > 0.3 * after.height
    # data drift: younger, cheaper customers after the campaign starts
    assert after["age"].mean() < before["age"].mean() - 5
    assert after["monthly_charges"].mean() < before["monthly_charges"].mean()
    no_campaign = demo.generate(2_000, seed=1, start=start, days=30, campaign_start=start + timedelta(days=60))
    assert no_campaign.filter(pl.col("signup_channel") == "campaign").height == 0


def test_pre_campaign_model_is_good_and_degrades_on_campaign_segment():
    f = demo.generate(12_000, seed=0)
    cut = f[demo.TIME_COLUMN].min() + (f[demo.TIME_COLUMN].max() - f[demo.TIME_COLUMN].min()) * 2 / 3
    pre = f.filter(pl.col(demo.TIME_COLUMN) < cut)
    campaign = f.filter((pl.col(demo.TIME_COLUMN) >= cut) & (pl.col("signup_channel") == "campaign"))
    levels = {c: sorted(f[c].unique().to_list()) for c in demo.CATEGORICAL}
    train, valid = pre.head(int(pre.height * 0.8)), pre.tail(pre.height - int(pre.height * 0.8))
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "learning_rate": 0.1, "seed": 0}
    model = lgb.train(params, lgb.Dataset(_encode(train, levels), train[demo.TARGET].to_numpy()), 40)
    auc_valid = _auc(valid[demo.TARGET].to_numpy(), model.predict(_encode(valid, levels)))
    auc_campaign = _auc(campaign[demo.TARGET].to_numpy(), model.predict(_encode(campaign, levels)))
    assert 0.72 < auc_valid < 0.92
    assert auc_campaign < auc_valid - 0.1  # concept drift for the campaign segment
    assert campaign[demo.TARGET].mean() > pre[demo.TARGET].mean()


def test_has_a_few_missing_values_and_realistic_ranges():
    f = demo.generate(20_000, seed=2)
    assert 0 < f["total_charges"].null_count() < 200
    assert f["age"].min() >= 18 and f["age"].max() <= 90
    assert f["tenure_months"].min() >= 0 and f["tenure_months"].max() <= 72
    assert f["satisfaction_score"].is_between(1, 5).all()
    assert f["monthly_charges"].min() > 0
