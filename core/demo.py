"""The demo scenario: synthetic customer-churn data hit by a marketing campaign (data + concept drift).

``generate`` draws a deterministic (per seed) table of customers who signed up over ``days`` days.
Customers who sign up from ``campaign_start`` on come from a shifted "campaign" population: a
share of them arrive through the ``campaign`` channel on a ``promo`` plan, younger, with lower
charges and shorter tenure (data drift), and for that segment the churn relation changes
(concept drift): the promo price hides the usual price/contract effects, while low engagement
(data usage), youth and support calls drive churn instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

__all__ = ["CATEGORICAL", "FEATURES", "ID_COLUMN", "NUMERIC", "TARGET", "TIME_COLUMN", "generate", "new_customers"]

TARGET = "churned"
TIME_COLUMN = "signup_at"
ID_COLUMN = "customer_id"
NUMERIC: list[str] = [
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "num_products",
    "age",
    "data_usage_gb",
    "late_payments",
    "satisfaction_score",
    "dependents",
]
CATEGORICAL: list[str] = ["plan", "contract", "region", "payment_method", "signup_channel", "paperless_billing"]
FEATURES: list[str] = NUMERIC + CATEGORICAL

_DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)

_REGIONS = (["north", "south", "east", "west", "central"], [0.22, 0.24, 0.18, 0.21, 0.15])
_PAYMENTS = ["credit_card", "bank_transfer", "electronic_check", "mailed_check"]
_CONTRACTS = ["month-to-month", "one-year", "two-year"]
_BASE_PRICE = {"basic": 29.0, "standard": 59.0, "premium": 94.0, "promo": 19.0}

# Per population: (probabilities over categories) for each categorical draw.
_MIX = {
    "normal": {
        "plan": (["basic", "standard", "premium"], [0.40, 0.40, 0.20]),
        "contract": (_CONTRACTS, [0.50, 0.28, 0.22]),
        "payment_method": (_PAYMENTS, [0.28, 0.27, 0.30, 0.15]),
        "signup_channel": (["web", "store", "partner", "referral"], [0.45, 0.30, 0.15, 0.10]),
    },
    "campaign": {
        "plan": (["basic", "standard", "premium", "promo"], [0.15, 0.12, 0.03, 0.70]),
        "contract": (_CONTRACTS, [0.80, 0.15, 0.05]),
        "payment_method": (_PAYMENTS, [0.45, 0.15, 0.35, 0.05]),
        "signup_channel": (["web", "store", "partner", "referral", "campaign"], [0.15, 0.05, 0.03, 0.02, 0.75]),
    },
}
_CAMPAIGN_SHARE = 0.65  # share of post-campaign signups drawn from the campaign population


def _pick(rng: np.random.Generator, n: int, spec: tuple[list[str], list[float]]) -> np.ndarray:
    """Draw ``n`` category codes (indexes into ``spec[0]``)."""
    values, p = spec
    return rng.choice(len(values), size=n, p=p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def generate(
    n: int = 20_000,
    *,
    seed: int = 0,
    start: datetime | None = None,
    days: int = 120,
    campaign_start: datetime | None = None,
) -> pl.DataFrame:
    """Generate the demo churn table, deterministic for ``seed``.

    Args:
        n: number of customers (rows).
        seed: random seed; the same arguments give the same frame.
        start: first signup time (aware UTC; default 2025-01-01).
        days: signups are spread uniformly over ``days`` days from ``start``.
        campaign_start: signups at or after this time come partly (65 %) from the campaign
            population; default ``start + 2/3 * days``. Pass a time past the window for no campaign.

    Returns:
        A frame sorted by ``signup_at`` with ``customer_id``, ``signup_at`` (UTC), the
        ``FEATURES`` (numeric Int64/Float64, categorical String) and ``churned`` (Int64 0/1).

    Example:
        >>> frame = generate(1_000, seed=1)
        >>> frame.height, frame["churned"].mean() > 0.1
        (1000, True)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    start = start or _DEFAULT_START
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    campaign_start = campaign_start or start + timedelta(seconds=days * 86_400 * 2 / 3)
    if campaign_start.tzinfo is None:
        campaign_start = campaign_start.replace(tzinfo=UTC)
    rng = np.random.default_rng(seed)

    start_us = int(start.timestamp() * 1_000_000)
    offsets = np.sort(rng.integers(0, days * 86_400 * 1_000_000, size=n, dtype=np.int64))
    at_us = start_us + offsets
    after = at_us >= int(campaign_start.timestamp() * 1_000_000)
    seg = after & (rng.random(n) < _CAMPAIGN_SHARE)  # the campaign population

    # Categories as integer codes (fast); the campaign vocabularies extend the normal ones.
    vocab: dict[str, list[str]] = {}
    codes: dict[str, np.ndarray] = {}
    for col in ("plan", "contract", "payment_method", "signup_channel"):
        normal = _pick(rng, n, _MIX["normal"][col])
        campaign = _pick(rng, n, _MIX["campaign"][col])
        vocab[col] = _MIX["campaign"][col][0]
        codes[col] = np.where(seg, campaign, normal)
    vocab["region"], codes["region"] = _REGIONS[0], _pick(rng, n, _REGIONS)
    vocab["paperless_billing"] = ["no", "yes"]
    codes["paperless_billing"] = (rng.random(n) < np.where(seg, 0.85, 0.55)).astype(np.int64)

    def is_(col: str, value: str) -> np.ndarray:
        return codes[col] == vocab[col].index(value)

    age = np.clip(np.where(seg, rng.normal(29, 7, n), rng.normal(46, 14, n)), 18, 90).round().astype(np.int64)
    tenure = np.where(seg, rng.integers(0, 7, n), np.minimum(rng.exponential(24, n), 72).astype(np.int64))
    tenure = tenure.astype(np.int64)
    num_products = np.clip(rng.poisson(np.where(seg, 0.4, 1.0), n) + 1, 1, 6).astype(np.int64)
    dependents = np.clip(rng.poisson(np.where(age > 30, 1.0, 0.2), n), 0, 5).astype(np.int64)
    base = np.asarray([_BASE_PRICE[p] for p in vocab["plan"]])[codes["plan"]]
    monthly = np.round(base + 6.5 * (num_products - 1) + rng.normal(0, 4.0, n), 2).clip(10, None)
    total = np.round(monthly * tenure * rng.uniform(0.92, 1.04, n) + monthly, 2)
    echeck = is_("payment_method", "electronic_check")
    late = rng.poisson(0.35 + 0.6 * echeck + 0.3 * seg, n).astype(np.int64)
    support = rng.poisson(0.9 + 0.25 * late + 0.4 * is_("plan", "basic"), n).astype(np.int64)
    usage = np.round(rng.lognormal(np.where(seg, 1.6, 2.4) + 0.25 * (num_products - 1), 0.7, n), 2)
    satisfaction = np.clip(np.round(rng.normal(3.6 - 0.35 * support + 0.1 * (num_products - 1), 0.9, n)), 1, 5)
    satisfaction = satisfaction.astype(np.int64)

    m2m = is_("contract", "month-to-month")
    two_year = is_("contract", "two-year")
    z_normal = (
        -1.55
        + 1.25 * m2m
        - 1.0 * two_year
        - 0.035 * tenure
        + 0.32 * support
        + 0.45 * late
        + 0.018 * (monthly - 60)
        + 0.55 * echeck
        - 0.3 * (num_products - 1)
        - 0.35 * (satisfaction - 3)
        - 0.012 * (age - 45)
        + 0.25 * is_("region", "south")
        - 0.2 * is_("paperless_billing", "no")
    )
    # Concept drift: promo customers leave when they do not use the service, whatever the
    # contract or price; support calls and late payments barely matter for them.
    z_campaign = (
        -0.2
        - 0.55 * (np.log(usage) - 1.6)
        - 0.045 * (age - 29)
        + 0.9 * is_("plan", "promo")
        - 0.6 * is_("signup_channel", "campaign") * (num_products - 1)
        + 0.05 * support
        - 0.02 * (monthly - 30)
    )
    p = _sigmoid(np.where(seg, z_campaign, z_normal))
    churned = (rng.random(n) < p).astype(np.int64)

    # Real exports have gaps: a few unknown total charges and usage readings.
    total_null = rng.random(n) < 0.004
    usage_null = rng.random(n) < 0.002

    frame = pl.DataFrame(
        {
            ID_COLUMN: np.arange(1, n + 1, dtype=np.int64),
            TIME_COLUMN: pl.Series(at_us, dtype=pl.Int64),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": np.where(total_null, np.nan, total),
            "support_calls": support,
            "num_products": num_products,
            "age": age,
            "data_usage_gb": np.where(usage_null, np.nan, usage),
            "late_payments": late,
            "satisfaction_score": satisfaction,
            "dependents": dependents,
            **{c: pl.Series(c, vocab[c], dtype=pl.String).gather(codes[c]) for c in CATEGORICAL},
            TARGET: churned,
        }
    )
    return frame.with_columns(
        pl.format("C{}", pl.col(ID_COLUMN).cast(pl.String).str.zfill(7)).alias(ID_COLUMN),
        pl.col(TIME_COLUMN).cast(pl.Datetime("us", "UTC")),
        pl.col("total_charges").fill_nan(None),
        pl.col("data_usage_gb").fill_nan(None),
    )


NEW_CUSTOMER_IDS_FROM = 1_000_001  # ids of exported new customers start here, after any seeded ones


def new_customers(n: int = 5_000, *, seed: int = 1, days: int = 30, now: datetime | None = None) -> pl.DataFrame:
    """Recent signups after the marketing campaign started, labelled: the "new customers" file of the walkthrough.

    The customers signed up over the ``days`` days up to ``now``, all after the campaign began
    (so about 65 % come from the campaign population), and their ids continue after the seeded
    dataset's (``C1000001`` ...), so appending them to ``churn`` adds new customers.

    Args:
        n: number of customers.
        seed: random seed (the same arguments give the same rows).
        days: signup period in days, ending at ``now``.
        now: end of the period (default: now, UTC).
    """
    from core.ids import utcnow

    end = now or utcnow()
    start = end - timedelta(days=days)
    frame = generate(n, seed=seed, start=start, days=days, campaign_start=start)
    ids = pl.int_range(NEW_CUSTOMER_IDS_FROM, NEW_CUSTOMER_IDS_FROM + frame.height, eager=True)
    return frame.with_columns(pl.format("C{}", ids.cast(pl.String)).alias(ID_COLUMN))
