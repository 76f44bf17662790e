"""Staged rollout: a gated candidate meets live traffic beside the champion before it replaces it.

``stage`` puts a version beside the champion as the ``challenger`` (a registry event, audited and
replayed like every alias change) after a smoke test through the serving code path. In
``shadow`` mode the service scores every request with both (the champion answers); in
``canary`` mode a ``fraction`` of the traffic, chosen by a stable hash of each row's entity key,
is answered by the challenger. ``compare_live`` measures the two on live traffic since the
stage began and stores the result in ``stage_reports``: requests, the challenger's errors, the
agreement of their labels, the drift of the challenger's scores against the champion's,
latency, and, on rows with feedback labels, the realised metric of each with a confidence
interval of the difference (paired on the same rows in shadow mode, unpaired in canary mode).
``check_rollout`` (the ``rollout`` job) applies the policy's ``staging`` rules: it promotes a
challenger that passed (with automatic promotion on), withdraws one that errs or does worse,
and waits while there is too little traffic.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from core import gating, registry
from core.catalog import prediction_table
from core.config import Settings
from core.errors import ConfigError, PromotionRefusedError
from core.gating import Check, Policy, StagingPolicy
from core.ids import new_id, utcnow
from core.lake import Lake

__all__ = [
    "LiveReport",
    "RolloutOutcome",
    "SmokeResult",
    "check_rollout",
    "compare_live",
    "latest_live_pass",
    "live_reports",
    "live_scores",
    "smoke_test",
    "stage",
    "unstage",
]


@dataclass(frozen=True)
class SmokeResult:
    """A version scored through the serving code path against its offline scores."""

    version: int
    rows: int
    max_abs_diff: float
    ok: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the stage event's report)."""
        return asdict(self)


def smoke_test(model: str, version: int, *, rows: int = 200, lake: Lake) -> SmokeResult:
    """Score a sample of the version's own holdout as the API would, and compare with offline scores.

    The rows go through a JSON request body, the serving codec (validation and encoding) and the
    serving predict call; any error, a non-finite score, or a score differing from
    ``Model.predict`` on the same frame by more than 1e-9 fails it.
    """
    import msgspec

    from core import tracking, trainsets
    from core.serving.schemas import Codec  # the serving code path is the thing under test
    mv = registry.get_version(model, version, lake=lake)
    try:
        loaded = registry.load(model, version=version, alias=None, lake=lake)
        if mv.run_id is None or mv.dataset_name is None or mv.dataset_version is None:
            raise ValueError(f"{model} v{version} records no training run or dataset")
        run = tracking.get_run(mv.run_id, lake=lake)
        frames = trainsets.run_frames(dataset=mv.dataset_name, version=mv.dataset_version, params=run.params,
                                      signature=mv.signature, seed=int(run.seed or 0), lake=lake)
        sample = frames.holdout.head(rows)
        names = [f["name"] for f in mv.signature["features"]]
        body = sample.select(names).with_columns(
            [pl.col(n).cast(pl.Float64) for n, f in zip(names, mv.signature["features"], strict=True) if f["kind"] == "numeric"]
        ).to_dicts()
        codec = Codec(mv.signature, unknown_category="missing", max_rows=max(1, len(body)))
        served = loaded.model.predict_matrix(codec.decode(msgspec.json.encode(body)).X)
        offline = loaded.model.predict(sample)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return SmokeResult(version, 0, float("nan"), False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if not np.all(np.isfinite(served)):
        return SmokeResult(version, len(body), float("nan"), False, f"{int((~np.isfinite(served)).sum())} non-finite scores")
    diff = float(np.max(np.abs(served - offline))) if len(body) else 0.0
    if diff > 1e-9:
        return SmokeResult(version, len(body), diff, False, f"served scores differ from offline scores by up to {diff:.3g}")
    return SmokeResult(version, len(body), diff, True, f"{len(body)} rows scored as offline (max difference {diff:.3g})")


def _policy(model: str, settings: Settings, lake: Lake) -> Policy:
    from core.flows.promote import load_policy

    return load_policy(model, settings=settings, lake=lake)


def stage(
    model: str,
    version: int,
    *,
    mode: str,
    fraction: float = 0.0,
    reason: str,
    actor: str | None = None,
    lake: Lake,
    settings: Settings,
) -> registry.AliasChange:
    """Stage ``version`` as the challenger in ``mode`` (``shadow`` or ``canary``) after a smoke test.

    The version must have passed its gate against the current champion (``lakeops models
    evaluate``). Staging again changes the mode or the fraction of the same challenger.

    Raises:
        ConfigError: a bad mode or fraction.
        PromotionRefusedError: no passing gate against the current champion, the version is the
            champion, or the smoke test failed (its reason is given).
        RegistryError: no reason.
    """
    from core.flows.promote.evaluation import latest_gate
    from core.flows.promote.policy import _actor, _reason, authorize
    why = _reason(reason, f"staging {model!r} v{version}")
    authorize(model, "stage", settings=settings, lake=lake)
    if mode not in registry.STAGE_MODES:
        raise ConfigError(f"stage mode must be one of {', '.join(registry.STAGE_MODES)}, got {mode!r}")
    if mode == "canary" and not 0 < fraction < 1:
        raise ConfigError(f"a canary needs a traffic fraction between 0 and 1 (e.g. 0.1), got {fraction}")
    champion = registry.champion_version(model, lake)
    refusal = gating.stage_refusal(model, version, champion, latest_gate(model, version, lake=lake))
    if refusal:
        raise PromotionRefusedError(refusal)
    smoke = smoke_test(model, version, lake=lake)
    if not smoke.ok:
        raise PromotionRefusedError(f"model {model!r} v{version} failed its smoke test through the serving path: {smoke.reason}")
    return registry.set_alias(
        model, "challenger", version, actor=_actor(actor, settings), reason=why, action="stage",
        report={"mode": mode, "fraction": float(fraction) if mode == "canary" else 0.0, "smoke": smoke.to_dict(),
                "champion_version": champion},
        lake=lake,
    )


def unstage(model: str, *, reason: str, actor: str | None = None, lake: Lake,
            settings: Settings) -> registry.AliasChange:
    """End the staged rollout: the challenger leaves the traffic (the champion answers everything)."""
    from core.flows.promote.policy import _actor, _reason, authorize
    why = _reason(reason, f"ending the staged rollout of {model!r}")
    authorize(model, "stage", settings=settings, lake=lake)
    if registry.state(model, lake=lake).stage is None:
        raise PromotionRefusedError(f"model {model!r} has no staged challenger")
    return registry.set_alias(model, "challenger", None, actor=_actor(actor, settings), reason=why,
                              action="unstage", lake=lake)


@dataclass(frozen=True)
class LiveReport:
    """Champion and challenger on live traffic since the stage began (one ``stage_reports`` row)."""

    report_id: str
    model: str
    champion_version: int
    challenger_version: int
    mode: str
    since: datetime
    at: datetime
    requests: int
    challenger_rows: int
    errors: int
    error_rate: float
    agreement: float | None
    score_drift: dict[str, Any] | None
    latency_p50_ms: dict[str, float | None]
    labelled: int
    metric: str
    champion_value: float | None
    challenger_value: float | None
    comparison: dict[str, Any] | None
    checks: list[Check] = field(default_factory=list)
    passed: bool | None = None
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = asdict(self)
        out["checks"] = [asdict(c) for c in self.checks]
        return out


def _median(values: pl.Series) -> float | None:
    median = values.drop_nulls().median()  # None when nothing is left
    return float(median) if isinstance(median, int | float) else None


_LOG_SCHEMA: dict[str, Any] = {"prediction_id": pl.String, "at": pl.Datetime("us", "UTC"), "model_version": pl.Int64, "score": pl.Float64,
               "predicted_label": pl.Int64, "latency_ms": pl.Float64, "role": pl.String}


@dataclass
class _Live:
    """What one mode measured on the live traffic (``_shadow_live`` / ``_canary_live``)."""

    requests: int
    latency: dict[str, float | None]
    labelled: int = 0
    agreement: float | None = None
    score_drift: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    champion_value: float | None = None
    challenger_value: float | None = None


@dataclass(frozen=True)
class _Metric:
    """How the realised metric is computed and compared."""

    task: str
    name: str
    threshold: float
    margin: float
    alpha: float


def _score_drift(reference: np.ndarray, current: pl.Series) -> dict[str, Any]:
    from core import drift

    d = drift.check_column("__score__", drift.NumericReference.from_values(reference), current)
    return {"test": d.test, "statistic": d.statistic, "threshold": d.threshold, "drifted": d.drifted}


def _shadow_live(h: pl.DataFrame, c: pl.DataFrame, truth: pl.DataFrame, m: _Metric) -> _Live:
    """Shadow: both scored every request; compare them row by row (paired)."""
    from core import significance
    from core.training import compute_metrics

    pairs = h.join(c.select("prediction_id", pl.col("score").alias("c_score"),
                            pl.col("predicted_label").alias("c_label"), pl.col("latency_ms").alias("c_latency")),
                   on="prediction_id", how="inner").filter(pl.col("c_score").is_not_nan())
    out = _Live(requests=h.height,  # every answer the challenger was meant to score beside the champion
                latency={"champion": _median(pairs["latency_ms"]) if pairs.height else None,
                         "challenger": _median(pairs["c_latency"]) if pairs.height else None})
    if pairs.height and m.task == "binary":
        agree = (pairs["predicted_label"] == pairs["c_label"]).mean()
        out.agreement = float(agree) if isinstance(agree, int | float) else None
    if pairs.height >= 2:
        out.score_drift = _score_drift(pairs["score"].to_numpy(), pairs["c_score"])
    lab = pairs.join(truth, on="prediction_id", how="inner")
    out.labelled = lab.height
    if not out.labelled or lab["truth"].n_unique() <= 1:
        return out
    y = lab["truth"].to_numpy()
    out.champion_value = compute_metrics(m.task, y, lab["score"].to_numpy(), m.threshold).get(m.name)
    out.challenger_value = compute_metrics(m.task, y, lab["c_score"].to_numpy(), m.threshold).get(m.name)
    try:
        out.comparison = significance.compare(m.name, y, lab["c_score"].to_numpy(), lab["score"].to_numpy(),
                                              margin=m.margin, alpha=m.alpha, threshold=m.threshold).to_dict()
    except ValueError:
        out.comparison = None
    return out


def _canary_live(h: pl.DataFrame, c: pl.DataFrame, truth: pl.DataFrame, m: _Metric) -> _Live:
    """Canary: each request went to one of them; compare the two groups (unpaired)."""
    from core import significance
    from core.training import compute_metrics

    out = _Live(requests=h.height + c.height,
                latency={"champion": _median(h["latency_ms"]), "challenger": _median(c["latency_ms"])})
    lab_h = h.join(truth, on="prediction_id", how="inner")
    lab_c = c.filter(pl.col("score").is_not_nan()).join(truth, on="prediction_id", how="inner")
    out.labelled = min(lab_h.height, lab_c.height)
    if c.height >= 2 and h.height >= 2:
        out.score_drift = _score_drift(h["score"].to_numpy(), c["score"].filter(c["score"].is_not_nan()))
    if not out.labelled or lab_h["truth"].n_unique() <= 1 or lab_c["truth"].n_unique() <= 1:
        return out
    out.champion_value = compute_metrics(m.task, lab_h["truth"].to_numpy(), lab_h["score"].to_numpy(), m.threshold).get(m.name)
    out.challenger_value = compute_metrics(m.task, lab_c["truth"].to_numpy(), lab_c["score"].to_numpy(),
                                           m.threshold).get(m.name)
    out.comparison = significance.compare_unpaired(
        m.name, lab_c["truth"].to_numpy(), lab_c["score"].to_numpy(), lab_h["truth"].to_numpy(),
        lab_h["score"].to_numpy(), margin=m.margin, alpha=m.alpha, threshold=m.threshold,
    ).to_dict()
    return out


def _live_log(model: str, since: datetime, lake: Lake) -> pl.DataFrame:
    """Every answer logged since the stage began (champion, challenger and shadow rows)."""
    from core import monitoring

    if not lake.exists(prediction_table(model)):
        return pl.DataFrame(schema=_LOG_SCHEMA)
    return monitoring.log_scan(model, lake, shadow=True).filter(pl.col("at") >= since).select(*_LOG_SCHEMA).collect()


def compare_live(model: str, *, lake: Lake, settings: Settings,
                 store: bool = True) -> LiveReport:
    """Compare the challenger with the champion on the traffic since the stage began (see the module docstring).

    Raises:
        PromotionRefusedError: no staged challenger.
    """
    from core import monitoring
    st = registry.state(model, lake=lake).stage
    champ = registry.champion_version(model, lake)
    if st is None or champ is None:
        raise PromotionRefusedError(f"model {model!r} has no staged challenger to compare")
    policy = _policy(model, settings, lake)
    rules = policy.staging or StagingPolicy()
    sig = registry.get_version(model, champ, lake=lake).signature
    task = sig.get("task", "binary")
    metric = _Metric(task, (policy.beat_champion.metric if policy.beat_champion else None) or gating.default_metric(task),
                     float(sig.get("threshold", 0.5)), -rules.tolerance, policy.alpha)
    log = _live_log(model, st.since, lake)
    h = log.filter((pl.col("role") == "champion") & (pl.col("model_version") == champ))
    role = "shadow" if st.mode == "shadow" else "challenger"
    c = log.filter((pl.col("role") == role) & (pl.col("model_version") == st.version))
    errors = int(c["score"].is_nan().sum()) if c.height else 0
    if st.mode == "canary":  # rows the challenger could not take (the champion answered them) are noted as shadow
        refused = log.filter((pl.col("role") == "shadow") & (pl.col("model_version") == st.version))
        errors += refused.height
        c = pl.concat([c, refused])
    truth = monitoring.ground_truth(model, lake=lake)
    live = (_shadow_live if st.mode == "shadow" else _canary_live)(h, c, truth, metric)
    error_rate = errors / c.height if c.height else 0.0
    checks, passed, why = _live_gate(rules, st.mode, live.requests, live.labelled, error_rate, live.agreement,
                                     live.comparison, metric.name)
    report = LiveReport(
        new_id(), model, champ, st.version, st.mode, st.since, utcnow(), live.requests, c.height, errors, error_rate,
        live.agreement, live.score_drift, live.latency, live.labelled, metric.name, live.champion_value,
        live.challenger_value, live.comparison, checks, passed, why,
    )
    if store:
        lake.append("stage_reports", [{
            "report_id": report.report_id, "model": model, "champion_version": champ, "challenger_version": st.version,
            "mode": st.mode, "since": st.since, "at": report.at, "requests": live.requests, "labelled": live.labelled,
            "error_rate": error_rate, "agreement": live.agreement, "metric": metric.name,
            "champion_value": live.champion_value, "challenger_value": live.challenger_value, "passed": passed,
            "report_json": json.dumps(report.to_dict(), default=str),
        }], metadata={"model": model, "report_id": report.report_id})
    return report


def _live_gate(rules: StagingPolicy, mode: str, requests: int, labelled: int, error_rate: float,
               agreement: float | None, comparison: dict[str, Any] | None, metric: str) -> tuple[list[Check], bool | None, str]:
    """The staging policy's checks; ``passed`` is None while there is too little traffic to decide."""
    checks = [
        Check("min_requests", requests, rules.min_requests, requests >= rules.min_requests, "live requests compared"),
        Check("min_labelled", labelled, rules.min_labelled, labelled >= rules.min_labelled, "compared rows with labels"),
        Check("max_error_rate", round(error_rate, 6), rules.max_error_rate, error_rate <= rules.max_error_rate,
              "share of the challenger's rows it failed to score"),
    ]
    if mode == "shadow":
        disagree = None if agreement is None else round(1.0 - agreement, 6)
        if rules.max_disagreement is None:  # reported only: after drift, disagreeing is the point
            checks.append(Check("max_disagreement", disagree, None, True, "share of rows labelled differently (no bound set)",
                                advisory=True))
        else:
            checks.append(Check("max_disagreement", disagree, rules.max_disagreement,
                                disagree is not None and disagree <= rules.max_disagreement, "share of rows labelled differently"))
    undecided = False
    if comparison is not None:
        # non-inferiority on the labelled rows: pass when the interval's low end clears -tolerance,
        # fail when its high end is below it; in between, collect more labels (decided by the
        # point estimate once there are 5x min_labelled of them)
        lo, hi, est = comparison["ci_low"], comparison["ci_high"], comparison["improvement"]
        if lo >= -rules.tolerance:
            ok = True
        elif hi < -rules.tolerance:
            ok = False
        elif labelled >= 5 * max(rules.min_labelled, 1):
            ok = est >= -rules.tolerance
        else:
            ok, undecided = False, True
        level = f"{(1 - comparison['alpha']) * 100:g}%"
        checks.append(Check(
            f"not_worse:{metric}", est, -rules.tolerance, ok,
            f"challenger {comparison['candidate']:.4g} vs champion {comparison['champion']:.4g}: "
            f"{est:+.4g} [{level} CI {lo:+.4g}, {hi:+.4g}] on {comparison['n']} labelled rows ({comparison['method']})"
            + ("; not decided yet" if undecided else ""),
        ))
    else:
        undecided = True
        checks.append(Check(f"not_worse:{metric}", None, -rules.tolerance, False, "no labelled rows of both yet"))
    hard = [c for c in checks if c.name in ("max_error_rate", "max_disagreement") and not c.passed and requests >= rules.min_requests]
    if hard:
        return checks, False, "; ".join(f"{c.name} {c.value} over {c.threshold}" for c in hard)
    if requests < rules.min_requests or labelled < rules.min_labelled or undecided:
        return checks, None, (f"collecting traffic: {requests}/{rules.min_requests} requests, "
                              f"{labelled}/{rules.min_labelled} labelled" + ("; the metric is not decided yet" if undecided else ""))
    failed = [c for c in checks if not c.passed and not c.advisory]
    if failed:
        return checks, False, "; ".join(f"{c.name}: {c.detail}" for c in failed)
    return checks, True, "the challenger did at least as well as the champion on live traffic (within tolerance)"


def live_scores(model: str, *, lake: Lake) -> pl.DataFrame:
    """Scores since the stage began, by who scored them: ``role`` (champion / challenger / shadow),
    ``model_version``, ``score`` (for the score overlay of the Models page); empty without a stage."""
    from core import monitoring
    st = registry.state(model, lake=lake).stage
    if st is None or not lake.exists(prediction_table(model)):
        return pl.DataFrame(schema={"role": pl.String, "model_version": pl.Int64, "score": pl.Float64})
    return (monitoring.log_scan(model, lake, shadow=True).filter(pl.col("at") >= st.since)
            .select("role", "model_version", "score").filter(pl.col("score").is_not_nan()).collect())


def live_reports(model: str, *, lake: Lake) -> pl.DataFrame:
    """Every stored live comparison of ``model``, oldest first."""
    return lake.read_or_empty("stage_reports").filter(pl.col("model") == model).sort("at")


@dataclass(frozen=True)
class RolloutOutcome:
    """What the ``rollout`` job did for one model: the live report, and promote / withdraw / wait."""

    model: str
    action: str  # promoted | withdrawn | waiting | passed (awaiting a person)
    version: int
    report: LiveReport
    why: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able outputs (for ``job_runs``)."""
        return {"model": self.model, "action": self.action, "version": self.version, "why": self.why,
                "passed": self.report.passed, "requests": self.report.requests, "labelled": self.report.labelled}


def check_rollout(model: str, *, lake: Lake, settings: Settings,
                  actor: str | None = None) -> RolloutOutcome | None:
    """The live gate: compare, then promote a challenger that passed, withdraw one that failed, or wait.

    Returns None when the model has no staged challenger.
    """
    from core import monitoring
    from core.flows.promote import promote
    actor = actor or settings.actor
    st = registry.state(model, lake=lake).stage
    if st is None:
        return None
    report = compare_live(model, lake=lake, settings=settings)
    policy = _policy(model, settings, lake)
    if report.passed is False:
        unstage(model, reason=f"live gate failed: {report.why}", actor=actor, lake=lake, settings=settings)
        monitoring.raise_alert(
            "rollout", model, severity="critical", fingerprint=f"rollout:{model}:v{st.version}", model_version=st.version,
            message=f"challenger v{st.version} of {model!r} was withdrawn from {st.mode} traffic: {report.why}",
            evidence={"report_id": report.report_id, "checks": [asdict(c) for c in report.checks]},
            lake=lake, settings=settings,
        )
        return RolloutOutcome(model, "withdrawn", st.version, report, report.why)
    if report.passed is None:
        return RolloutOutcome(model, "waiting", st.version, report, report.why)
    waiting = gating.live_promotion_refusal(policy)
    if waiting:
        return RolloutOutcome(model, "passed", st.version, report, waiting)
    try:
        promote(model, st.version, reason=f"live gate passed ({st.mode}): {report.why}", actor=actor, lake=lake,
                settings=settings, policy=policy)
    except PromotionRefusedError as exc:
        return RolloutOutcome(model, "passed", st.version, report, str(exc))
    return RolloutOutcome(model, "promoted", st.version, report, f"promoted v{st.version} after its live gate")


def latest_live_pass(model: str, version: int, champion: int | None, *, lake: Lake) -> bool:
    """Whether the newest live report of ``version`` against ``champion`` passed."""
    rows = live_reports(model, lake=lake).filter(
        (pl.col("challenger_version") == version) & (pl.col("champion_version") == champion))
    return bool(rows.height and rows["passed"][-1])

