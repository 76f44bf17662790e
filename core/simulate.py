"""A time-compressed traffic generator: churn requests to the running API, late feedback labels, a campaign shift.

``simulate`` draws customers from ``core.demo.generate`` over a simulated period and replays them
against ``POST /v1/models/<model>/predict`` at ``speed`` simulated seconds per real second; the
ground truth (``churned``) of a share of the answered predictions is sent to
``POST /v1/models/<model>/feedback`` after a simulated delay, as labels arrive in real life. From
``campaign_after`` simulated minutes on, new customers come from the marketing-campaign
population (data and concept drift). The loop is bounded: it stops after ``duration`` simulated
minutes (or ``max_requests``) by itself.

When the champion was trained on feature views (the demo's ``churn_usage``: the signature's
``feature_views``), each request carries the customer's ``customer_id`` instead of those
features, and the simulated customers first get usage events: they are appended to the
``churn_usage`` dataset (60 days of usage before the simulation starts), the view is
materialised, and the loop waits until the API has loaded the new online values (its ``/ready``
lists them), so the API fills in their usage features as it would for real customers.

The champion was trained before the campaign, so campaign rows carry categorical levels it never
saw (``plan = "promo"``): the API's default ``[serving] unknown_category = "missing"`` scores them
as missing and counts them; with ``"error"`` those requests are refused (422, counted in ``errors``).

Each request carries its rows' *simulated* time as the model's event-time pass-through field
(the demo model's ``signup_at``), so the log keeps both: ``at`` is when the API answered, the
event time is when, in the simulated world, it happened. Charts over time
(``core.monitoring.score_over_time``, ``performance_over_time``) bucket by the event time, so 20
simulated minutes spread over 20 minutes of the chart even when they took 20 seconds to send.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from core.config import Settings
from core.errors import ConfigError

__all__ = ["SimulationStats", "simulate"]


@dataclass
class SimulationStats:
    """What a simulation sent and what the API answered."""

    requests: int = 0
    rows: int = 0
    campaign_rows: int = 0
    feedback_requests: int = 0
    labels: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    simulated_minutes: float = 0.0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON output)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _error(stats: SimulationStats, what: str) -> None:
    stats.errors += 1
    if len(stats.error_samples) < 5:
        stats.error_samples.append(what[:300])


def simulate(
    api: str,
    *,
    model: str = "churn",
    speed: float = 60.0,
    duration: float = 60.0,
    rate: float = 60.0,
    campaign_after: float | None = None,
    feedback_delay: float = 10.0,
    label_share: float = 1.0,
    batch: int | None = None,
    seed: int = 0,
    start: datetime | None = None,
    max_requests: int | None = None,
    timeout_s: float = 10.0,
    progress: Callable[[SimulationStats], Any] | None = None,
    realtime: bool = True,
    token: str | None = None,
    settings: Settings | None = None,
) -> SimulationStats:
    """Send simulated churn traffic and late labels to a running prediction API.

    Args:
        api: base URL, e.g. ``http://127.0.0.1:8000``.
        model: model name in the API path.
        speed: simulated seconds per real second (60: a simulated minute per second).
        duration: simulated minutes to run; the loop then stops by itself.
        rate: customers (rows) per simulated minute.
        campaign_after: simulated minutes before the campaign starts (None: no campaign).
        feedback_delay: simulated minutes between a prediction and its label.
        label_share: share of predictions that ever get a label (0-1).
        batch: rows per request (default: the rows due each real second).
        seed: data seed.
        start: simulated start time of the data (default: now).
        max_requests: stop after this many predict requests.
        timeout_s: HTTP timeout per request.
        progress: called after every tick with the running stats.
        realtime: pace the loop on the wall clock; False advances simulated time one tick per
            loop without sleeping (as fast as the API answers; for tests and benchmarks).
        token: a bearer token for an API with auth on (scopes ``predict`` and ``feedback``).
        settings: lakeops settings naming the API's lake (needed only when the champion uses
            feature views: the simulated customers' usage events are written there; without
            them such a champion is refused, never guessed from the environment).

    Returns:
        The stats.

    Raises:
        ConfigError: bad arguments, or the API cannot be reached at all.
    """
    import httpx

    from core import demo
    from core.ids import utcnow

    if speed <= 0 or duration <= 0 or rate <= 0:
        raise ConfigError(f"speed, duration and rate must be > 0 (got {speed}, {duration}, {rate})")
    if not 0 <= label_share <= 1:
        raise ConfigError(f"label_share must be between 0 and 1, got {label_share}")
    t0_sim = start or utcnow()
    n = max(1, int(round(duration * rate)))
    days = max(1, int(np.ceil(duration / 1440.0)))
    scale = days * 1440.0 / duration  # generator minutes per simulated minute
    campaign = t0_sim + timedelta(minutes=(campaign_after if campaign_after is not None else 10 * duration) * scale)
    data = demo.generate(n, seed=seed, start=t0_sim, days=days, campaign_start=campaign)
    t0_us = int(t0_sim.timestamp() * 1_000_000)
    offsets = (data[demo.TIME_COLUMN].dt.epoch("us").to_numpy() - t0_us) / 60e6 / scale
    features = data.select(demo.FEATURES)
    truth = data[demo.TARGET].to_numpy()
    views: list[dict[str, Any]] = []
    is_campaign = offsets >= (campaign_after if campaign_after is not None else np.inf)
    rng = np.random.default_rng(seed + 1)
    gets_label = rng.random(n) < label_share
    base = api.rstrip("/")
    stats = SimulationStats()
    pending: collections.deque[tuple[float, list[str], list[float]]] = collections.deque()
    tick_real = 1.0 if batch is None else max(0.05, batch / rate * 60.0 / speed)
    started = time.monotonic()
    sent_upto = 0
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with httpx.Client(base_url=base, timeout=timeout_s, headers=headers) as client:
        try:
            client.get("/health")
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach the API at {base}: {exc}; start it with 'lakeops serve'") from None
        detail = client.get(f"/v1/models/{model}")
        views = list(((detail.json().get("signature") or {}) if detail.status_code == 200 else {}).get("feature_views") or ())
        if views:
            data = _usage_for_views(client, data, views, t0_sim, seed, settings)
            features = data.select(*demo.FEATURES, demo.ID_COLUMN)
        event = _event_time_field(client, model)
        if event is not None:  # each row's simulated time, sent as the model's event-time pass-through
            sim_at = [t0_sim + timedelta(minutes=float(m)) for m in offsets]
            features = features.with_columns(
                pl.Series(event, [t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in sim_at], dtype=pl.String)
            )
        sim_min = 0.0
        while True:
            real = time.monotonic() - started
            sim_min = min(duration, real * speed / 60.0 if realtime else sim_min + tick_real * speed / 60.0)
            hi = int(np.searchsorted(offsets, sim_min, side="right")) if sim_min < duration else n
            while sent_upto < hi and (max_requests is None or stats.requests < max_requests):
                upto = hi if batch is None else min(hi, sent_upto + batch)
                _predict(client, model, features.slice(sent_upto, upto - sent_upto), sent_upto, truth, gets_label,
                         is_campaign, sim_min + feedback_delay, pending, stats)
                sent_upto = upto
            while pending and pending[0][0] <= sim_min:
                _, ids, labels = pending.popleft()
                _feedback(client, model, ids, labels, stats)
            stats.simulated_minutes = sim_min
            stats.elapsed_s = time.monotonic() - started
            if progress is not None:
                progress(stats)
            capped = max_requests is not None and stats.requests >= max_requests
            if sim_min >= duration or (capped and not pending):
                break
            if realtime:
                time.sleep(tick_real)
    stats.elapsed_s = time.monotonic() - started
    return stats


def _event_time_field(client: Any, model: str) -> str | None:
    """The champion's event-time pass-through field (a datetime), if it declares one."""
    import httpx

    try:
        sig = client.get(f"/v1/models/{model}").json().get("signature") or {}
    except (httpx.HTTPError, ValueError):
        return None
    for p in sig.get("passthrough") or ():
        if p.get("role") == "event_time" and p.get("type") == "datetime":
            return str(p["name"])
    return None


def _predict(client: Any, model: str, rows: pl.DataFrame, offset: int, truth: np.ndarray, gets_label: np.ndarray,
             is_campaign: np.ndarray, due: float, pending: collections.deque[tuple[float, list[str], list[float]]],
             stats: SimulationStats) -> None:
    import httpx

    if rows.height == 0:
        return
    body = {"columns": {c: rows[c].to_list() for c in rows.columns}}
    stats.requests += 1
    try:
        resp = client.post(f"/v1/models/{model}/predict", json=body)
    except httpx.HTTPError as exc:
        _error(stats, f"predict: {exc}")
        return
    if resp.status_code != 200:
        _error(stats, f"predict {resp.status_code}: {resp.text}")
        return
    out = resp.json()
    ids = out["prediction_ids"]
    stats.rows += len(ids)
    stats.versions[int(out["version"])] = stats.versions.get(int(out["version"]), 0) + len(ids)
    idx = np.arange(offset, offset + len(ids))
    stats.campaign_rows += int(is_campaign[idx].sum())
    keep = gets_label[idx]
    if keep.any():
        pending.append((due, [i for i, k in zip(ids, keep, strict=True) if k], truth[idx][keep].astype(float).tolist()))


def _feedback(client: Any, model: str, ids: list[str], labels: list[float], stats: SimulationStats) -> None:
    import httpx

    stats.feedback_requests += 1
    try:
        resp = client.post(f"/v1/models/{model}/feedback", json=[{"prediction_id": i, "label": lab} for i, lab in zip(ids, labels, strict=True)])
    except httpx.HTTPError as exc:
        _error(stats, f"feedback: {exc}")
        return
    if resp.status_code >= 300:
        _error(stats, f"feedback {resp.status_code}: {resp.text}")
        return
    stats.labels += len(ids)


def _usage_for_views(client: Any, data: pl.DataFrame, views: list[dict[str, Any]], at: datetime, seed: int,
                     settings: Settings | None) -> pl.DataFrame:
    """Give the simulated customers ids of their own and usage events; materialise; wait for the API.

    Returns:
        ``data`` with fresh ``customer_id`` values (unique to this run).
    """
    from core import datasets, demo
    from core import features as fs
    from core.ids import new_id
    from core.lake import Lake

    if any(v["view"] != demo.USAGE_VIEW["name"] or v["entity"] != demo.ID_COLUMN for v in views):
        names = ", ".join(f"{v['view']} v{v['version']}" for v in views)
        raise ConfigError(f"the champion uses feature views {names}; simulate only knows the demo's "
                          f"{demo.USAGE_VIEW['name']!r} (by {demo.ID_COLUMN})")
    if settings is None:
        raise ConfigError("the champion uses feature views: pass settings= naming the API's lake (the simulated "
                          "customers' usage events are written there; 'lakeops simulate' passes its own)")
    lake = Lake.from_settings(settings)
    run = new_id().replace("-", "")[-8:].upper()  # customers of this run only: their events are new
    data = data.with_columns(pl.format("S{}-{}", pl.lit(run), pl.int_range(pl.len()).cast(pl.String).str.zfill(6))
                             .alias(demo.ID_COLUMN))
    events = demo.usage_events(data, seed=seed, at=at, until=at)
    datasets.ingest(demo.USAGE_DATASET, events, lake=lake, source="core.simulate usage events", settings=settings)
    for v in views:
        m = fs.materialize(v["view"], version=int(v["version"]), lake=lake)
        key = f"{v['view']}@v{v['version']}"
        deadline = time.monotonic() + 120
        while True:
            loaded = (client.get("/ready").json().get("online_features") or {}).get(key) or {}
            if (loaded.get("table_version") or -1) >= m.online_version:
                break
            if time.monotonic() > deadline:
                raise ConfigError(f"the API did not load the online features {key} (table v{m.online_version}) within 120 s")
            time.sleep(0.2)
    return data
