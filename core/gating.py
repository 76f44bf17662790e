"""Promotion policies and gate reports: pure functions, no I/O (the flows measure, this decides).

A policy comes from ``[models.<name>.policy]`` in lakeops.toml (or a ``--policy`` file with the
same keys at its top level, or under ``[policy]``)::

    [models.churn.policy]
    min = {auc = 0.80}                             # absolute floors (metric >= value)
    max = {brier = 0.20}                           # absolute ceilings (metric <= value)
    beat_champion = {metric = "auc", margin = 0.005}   # or false to skip the comparison
    require_validated_data = true                  # training data validation passed or warned
    max_size_bytes = 100_000_000                   # model file size
    max_p95_latency_ms = {1 = 50.0, 100 = 200.0}   # measured p95 per batch size (rows)
    require_approval = false                       # promote needs an `approve` event first
    auto_promote = false                           # the retrain job may promote by itself
    significance = 0.05                            # auto-promotion needs a significant improvement
    refuse_leakage = true                          # refuse a model a single feature explains
    [models.churn.policy.staging]                  # a live period before promotion (absent: none)
    mode = "shadow"                                # or "canary" (with fraction = 0.1)
    min_requests = 500                             # live requests compared
    min_labelled = 200                             # of them with feedback labels
    max_disagreement = 0.2                         # shadow: share of rows labelled differently (off by default:
                                                   # after drift the champion is the one that is wrong)
    max_error_rate = 0.01                          # share of the challenger's rows it fails to score
    tolerance = 0.01                               # non-inferiority margin of the realised metric

Defaults (every key is optional): no absolute thresholds; ``beat_champion`` on the task's main
metric (``auc`` for binary, ``rmse`` for regression) with margin 0, i.e. "not worse than the
champion"; validated data required; 100 MB; p95 latency 50 ms for 1 row and 200 ms for 100 rows;
no approval; no automatic promotion. Both sides of ``beat_champion`` are scored by the caller on
the same evaluation frame. With no champion yet that check passes with detail ``"no champion"``.

``significance``: the candidate is also compared with the champion by a one-sided paired test
on the same rows (DeLong for AUC, a paired bootstrap otherwise; ``core.significance``): H0 "it
improves by at most the margin". The ``significant:<metric>`` check reports the improvement, its
interval and the p-value; it is *advisory* for a person's promotion (who sees the interval) and
*required* for automatic promotion (the retrain job), so noise is never promoted unattended.
``significance = false`` says explicitly that automatic promotion does not need it.

``refuse_leakage``: the gate fails a candidate whose training flagged target leakage (a single
feature alone reaching AUC >= 0.99, or holding most of the gain; ``core.training``).

``staging``: a candidate that passed this gate is first *staged* beside the champion
(``core.flows.rollout``) and promoted only after its live gate passed on production traffic:
enough requests and labels, errors and (shadow) disagreement under their bounds, and the
realised metric non-inferior within ``tolerance``: the interval of (challenger - champion)
above ``-tolerance`` passes, below it fails, in between waits for more labels (decided by the
point estimate at 5x ``min_labelled``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import ConfigError

__all__ = [
    "HIGHER_IS_BETTER",
    "BeatChampion",
    "Check",
    "GateInputs",
    "GateReport",
    "Policy",
    "StagingPolicy",
    "default_metric",
    "higher_is_better",
    "policy_from_dict",
    "run_gate",
]

HIGHER_IS_BETTER: dict[str, bool] = {
    "auc": True,
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "brier": False,
    "rmse": False,
    "mae": False,
}
_VALID_DATA = ("passed", "warned")
_KEYS = {
    "min",
    "max",
    "beat_champion",
    "require_validated_data",
    "max_size_bytes",
    "max_p95_latency_ms",
    "require_approval",
    "auto_promote",
    "significance",
    "refuse_leakage",
    "staging",
}
_STAGING_KEYS = {"mode", "fraction", "min_requests", "min_labelled", "max_disagreement", "max_error_rate", "tolerance"}


def higher_is_better(metric: str) -> bool:
    """Return whether a larger value of ``metric`` is better (unknown metrics: larger is better)."""
    return HIGHER_IS_BETTER.get(metric, True)


def default_metric(task: str) -> str:
    """Return the metric ``beat_champion`` compares by default for a task."""
    return "rmse" if task == "regression" else "auc"


@dataclass(frozen=True)
class BeatChampion:
    """The candidate must beat the champion on ``metric`` by ``margin`` (None metric = task default)."""

    metric: str | None = None
    margin: float = 0.0


@dataclass(frozen=True)
class StagingPolicy:
    """The live period a candidate must pass before promotion (see the module docstring)."""

    mode: str = "shadow"
    fraction: float = 0.1
    min_requests: int = 500
    min_labelled: int = 200
    max_disagreement: float | None = None
    max_error_rate: float = 0.01
    tolerance: float = 0.01


@dataclass(frozen=True)
class Policy:
    """A model's promotion policy (see the module docstring for the TOML form and defaults)."""

    min: Mapping[str, float] = field(default_factory=dict)
    max: Mapping[str, float] = field(default_factory=dict)
    beat_champion: BeatChampion | None = field(default_factory=BeatChampion)
    require_validated_data: bool = True
    max_size_bytes: int | None = 100_000_000
    max_p95_latency_ms: Mapping[int, float] = field(default_factory=lambda: {1: 50.0, 100: 200.0})
    require_approval: bool = False
    auto_promote: bool = False
    significance: float | None = 0.05
    refuse_leakage: bool = True
    staging: StagingPolicy | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-able dict (the form ``policy_from_dict`` reads)."""
        out = asdict(self)
        out["min"], out["max"] = dict(self.min), dict(self.max)
        out["beat_champion"] = asdict(self.beat_champion) if self.beat_champion else False
        out["max_p95_latency_ms"] = {str(k): v for k, v in self.max_p95_latency_ms.items()}
        out["significance"] = False if self.significance is None else self.significance
        out["staging"] = asdict(self.staging) if self.staging else False
        return out


def _where(where: str, key: str) -> str:
    return f"{where} {key}" if where else key


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _metric_map(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table like {{auc = 0.8}}, got {value!r}")
    return {str(k): _number(v, f"{where}.{k}") for k, v in value.items()}


def policy_from_dict(data: Mapping[str, Any], *, where: str = "policy") -> Policy:
    """Parse and validate a policy from a TOML section.

    Args:
        data: the section's keys (missing keys take their defaults); a top-level ``policy``
            table is unwrapped, so a ``--policy`` file may use ``[policy]`` or bare keys.
        where: how the section is named in error messages, e.g. ``"[models.churn.policy]"``.

    Returns:
        The validated policy.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the key.
    """
    if set(data) == {"policy"} and isinstance(data["policy"], Mapping):
        data = data["policy"]
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    kw: dict[str, Any] = {}
    if "min" in data:
        kw["min"] = _metric_map(data["min"], _where(where, "min"))
    if "max" in data:
        kw["max"] = _metric_map(data["max"], _where(where, "max"))
    if "beat_champion" in data:
        bc = data["beat_champion"]
        if bc is False:
            kw["beat_champion"] = None
        elif bc is True:
            kw["beat_champion"] = BeatChampion()
        elif isinstance(bc, Mapping):
            extra = set(bc) - {"metric", "margin"}
            if extra:
                raise ConfigError(
                    f"{_where(where, 'beat_champion')}: unknown key(s) {', '.join(sorted(extra))}; use metric, margin"
                )
            metric = bc.get("metric")
            if metric is not None and not isinstance(metric, str):
                raise ConfigError(
                    f"{_where(where, 'beat_champion.metric')} must be a metric name, got {metric!r}"
                )
            margin = _number(bc.get("margin", 0.0), _where(where, "beat_champion.margin"))
            if margin < 0:
                raise ConfigError(f"{_where(where, 'beat_champion.margin')} must be >= 0, got {margin}")
            kw["beat_champion"] = BeatChampion(metric, margin)
        else:
            raise ConfigError(
                f'{_where(where, "beat_champion")} must be false or {{metric = "auc", margin = 0.005}}'
            )
    for key in ("require_validated_data", "require_approval", "auto_promote", "refuse_leakage"):
        if key in data:
            kw[key] = _bool(data[key], _where(where, key))
    if "staging" in data:
        kw["staging"] = _staging(data["staging"], _where(where, "staging"))
    if "significance" in data:
        sig = data["significance"]
        if sig is False:
            kw["significance"] = None
        else:
            level = _number(sig, _where(where, "significance"))
            if not 0 < level <= 0.5:
                raise ConfigError(f"{_where(where, 'significance')} must be a level in (0, 0.5] (e.g. 0.05) or false, got {sig!r}")
            kw["significance"] = level
    if "max_size_bytes" in data:
        size = data["max_size_bytes"]
        if size is False:
            kw["max_size_bytes"] = None
        elif isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{_where(where, 'max_size_bytes')} must be a positive integer, got {size!r}")
        else:
            kw["max_size_bytes"] = size
    if "max_p95_latency_ms" in data:
        lat = data["max_p95_latency_ms"]
        if lat is False:
            kw["max_p95_latency_ms"] = {}
        else:
            raw = _metric_map(lat, _where(where, "max_p95_latency_ms"))
            out: dict[int, float] = {}
            for k, v in raw.items():
                if not k.isdigit() or int(k) < 1:
                    raise ConfigError(
                        f"{_where(where, 'max_p95_latency_ms')}: key {k!r} must be a batch size in rows, e.g. 1 or 100"
                    )
                out[int(k)] = v
            kw["max_p95_latency_ms"] = out
    return Policy(**kw)


def _staging(value: Any, where: str) -> StagingPolicy | None:
    if value is False:
        return None
    if value is True:
        return StagingPolicy()
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be false or a table like {{mode = "shadow", min_requests = 500}}')
    unknown = sorted(set(value) - _STAGING_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_STAGING_KEYS))}")
    kw: dict[str, Any] = {}
    if "mode" in value:
        if value["mode"] not in ("shadow", "canary"):
            raise ConfigError(f"{where}.mode must be 'shadow' or 'canary', got {value['mode']!r}")
        kw["mode"] = value["mode"]
    for key in ("fraction", "max_disagreement", "max_error_rate", "tolerance"):
        if key == "max_disagreement" and value.get(key) is False:
            kw[key] = None
            continue
        if key in value:
            kw[key] = _number(value[key], f"{where}.{key}")
            if not 0 <= kw[key] <= 1:
                raise ConfigError(f"{where}.{key} must be between 0 and 1, got {value[key]!r}")
    for key in ("min_requests", "min_labelled"):
        if key in value:
            n = value[key]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"{where}.{key} must be a whole number >= 0, got {n!r}")
            kw[key] = n
    out = StagingPolicy(**kw)
    if out.mode == "canary" and not 0 < out.fraction < 1:
        raise ConfigError(f"{where}.fraction must be between 0 and 1 for a canary, got {out.fraction}")
    return out


@dataclass(frozen=True)
class Check:
    """One gate check: its name, the measured value, the threshold, and whether it passed."""

    name: str
    value: float | str | None
    threshold: float | str | None
    passed: bool
    detail: str = ""
    advisory: bool = False  # reported, not counted in ``GateReport.passed``


@dataclass(frozen=True)
class GateInputs:
    """What the caller measured for one candidate (all on the same evaluation data)."""

    model: str
    version: int
    task: str
    candidate_metrics: Mapping[str, float]
    champion_version: int | None = None
    champion_metrics: Mapping[str, float] | None = None
    champion_error: str | None = None
    validation_status: str | None = None
    size_bytes: int | None = None
    latency_p95_ms: Mapping[int, float] = field(default_factory=dict)
    eval_dataset: str | None = None
    eval_dataset_version: int | None = None
    eval_rows: int | None = None
    comparison: Mapping[str, Any] | None = None  # core.significance.Comparison.to_dict()
    leakage: Mapping[str, Any] | None = None  # the run's leakage report (core.training.leakage)


@dataclass(frozen=True)
class GateReport:
    """The result of a gate: every check, and ``passed`` when all of them passed."""

    model: str
    version: int
    passed: bool
    checks: tuple[Check, ...]
    champion_version: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    champion_metrics: Mapping[str, float] = field(default_factory=dict)
    eval_dataset: str | None = None
    eval_dataset_version: int | None = None
    eval_rows: int | None = None
    policy: Mapping[str, Any] = field(default_factory=dict)
    comparison: Mapping[str, Any] | None = None

    @property
    def failed(self) -> list[Check]:
        """The checks that did not pass (advisory ones included)."""
        return [c for c in self.checks if not c.passed and not c.advisory]

    @property
    def significant(self) -> bool | None:
        """Whether the improvement over the champion is significant (None: nothing to compare)."""
        sig = [c for c in self.checks if c.name.startswith("significant:")]
        return sig[0].passed if sig else None

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict."""
        out = asdict(self)
        out["checks"] = [asdict(c) for c in self.checks]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateReport:
        """Rebuild a report from ``to_dict`` output."""
        d = dict(data)
        d["checks"] = tuple(Check(**c) for c in d.get("checks", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def summary(self) -> str:
        """One line: PASSED/FAILED and the failed checks."""
        if self.passed:
            return f"gate PASSED for {self.model} v{self.version} ({len(self.checks)} checks)"
        names = ", ".join(c.name for c in self.failed)
        return f"gate FAILED for {self.model} v{self.version}: {names}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _threshold_checks(policy: Policy, metrics: Mapping[str, float]) -> list[Check]:
    checks = []
    for kind, bounds in (("min", policy.min), ("max", policy.max)):
        for metric, bound in bounds.items():
            value = metrics.get(metric)
            if not _finite(value):
                checks.append(
                    Check(f"{kind}:{metric}", None, bound, False, f"metric {metric!r} was not computed")
                )
                continue
            assert value is not None
            ok = value >= bound if kind == "min" else value <= bound
            checks.append(
                Check(
                    f"{kind}:{metric}",
                    value,
                    bound,
                    ok,
                    f"{metric} {'>=' if kind == 'min' else '<='} {bound:g}",
                )
            )
    return checks


def _champion_check(policy: Policy, inp: GateInputs) -> list[Check]:
    bc = policy.beat_champion
    if bc is None:
        return []
    metric = bc.metric or default_metric(inp.task)
    name = f"beat_champion:{metric}"
    cand = inp.candidate_metrics.get(metric)
    if inp.champion_version is None:
        return [Check(name, cand, None, True, "no champion")]
    if inp.champion_version == inp.version:
        return [Check(name, cand, None, True, "candidate is the champion")]
    if inp.champion_error:
        return [
            Check(
                name,
                cand,
                None,
                False,
                f"champion v{inp.champion_version} could not be scored: {inp.champion_error}",
            )
        ]
    champ = (inp.champion_metrics or {}).get(metric)
    if not _finite(cand) or not _finite(champ):
        return [Check(name, cand, None, False, f"metric {metric!r} missing for candidate or champion")]
    assert cand is not None and champ is not None
    up = higher_is_better(metric)
    threshold = champ + bc.margin if up else champ - bc.margin
    ok = cand >= threshold if up else cand <= threshold
    where = f" on {inp.eval_dataset} v{inp.eval_dataset_version}" if inp.eval_dataset else ""
    detail = f"champion v{inp.champion_version} {metric}={champ:.6g}{where}, margin {bc.margin:g}"
    checks = [Check(name, cand, threshold, ok, detail)]
    cmp = inp.comparison
    if policy.significance is not None and cmp is not None and cmp.get("metric") == metric:
        level = f"{(1 - cmp['alpha']) * 100:g}%"
        checks.append(Check(
            f"significant:{metric}", float(cmp["p_value"]), policy.significance, bool(cmp["p_value"] < policy.significance),
            f"improvement {cmp['improvement']:+.4g} [{level} CI {cmp['ci_low']:+.4g}, {cmp['ci_high']:+.4g}] over "
            f"v{inp.champion_version} on {cmp['n']} rows, one-sided p={cmp['p_value']:.3g} "
            f"({'DeLong' if cmp['method'] == 'delong' else 'paired bootstrap'}); needed for automatic promotion",
            advisory=True,
        ))
    return checks


def _other_checks(policy: Policy, inp: GateInputs) -> list[Check]:
    checks = []
    if policy.require_validated_data:
        status = inp.validation_status
        checks.append(
            Check(
                "validated_data",
                status,
                "|".join(_VALID_DATA),
                status in _VALID_DATA,
                f"training data {inp.eval_dataset} v{inp.eval_dataset_version} validation: {status or 'unknown'}",
            )
        )
    if policy.max_size_bytes is not None:
        size = inp.size_bytes
        ok = size is not None and size <= policy.max_size_bytes
        checks.append(Check("max_size_bytes", size, policy.max_size_bytes, ok, "model file size"))
    for rows, limit in sorted(policy.max_p95_latency_ms.items()):
        value = inp.latency_p95_ms.get(rows)
        ok = _finite(value) and value is not None and value <= limit
        checks.append(
            Check(f"max_p95_latency_ms:{rows}", value, limit, ok, f"p95 latency of a {rows}-row batch")
        )
    return checks


def run_gate(policy: Policy, inputs: GateInputs) -> GateReport:
    """Apply ``policy`` to measured ``inputs`` and return the gate report.

    Args:
        policy: the model's promotion policy.
        inputs: candidate (and champion) metrics on the same evaluation data, the training data's
            validation status, model size and measured latencies.

    Returns:
        A ``GateReport``; ``passed`` is True when every check passed (an empty policy passes).

    Example:
        >>> r = run_gate(Policy(min={"auc": 0.8}), GateInputs("m", 1, "binary", {"auc": 0.7}))
        >>> r.passed, r.failed[0].name
        (False, 'min:auc')
    """
    checks = _threshold_checks(policy, inputs.candidate_metrics)
    checks += _champion_check(policy, inputs)
    checks += _other_checks(policy, inputs)
    checks += _leakage_check(policy, inputs)
    return GateReport(
        model=inputs.model,
        version=inputs.version,
        passed=all(c.passed for c in checks if not c.advisory),
        checks=tuple(checks),
        champion_version=inputs.champion_version,
        metrics=dict(inputs.candidate_metrics),
        champion_metrics=dict(inputs.champion_metrics or {}),
        eval_dataset=inputs.eval_dataset,
        eval_dataset_version=inputs.eval_dataset_version,
        eval_rows=inputs.eval_rows,
        policy=policy.to_dict(),
        comparison=dict(inputs.comparison) if inputs.comparison else None,
    )


def _leakage_check(policy: Policy, inp: GateInputs) -> list[Check]:
    leak = inp.leakage
    if leak is None:
        return []
    flagged = list(leak.get("flagged") or [])
    if not flagged:
        return [Check("no_leakage", None, None, True, "no single feature explains the target", advisory=not policy.refuse_leakage)]
    first = flagged[0]
    detail = (f"feature {first['feature']!r} alone: {first['why']}; a feature this strong is usually the target "
              "in disguise (exclude it and retrain), or set refuse_leakage = false if it is legitimate")
    return [Check("no_leakage", first["feature"], None, False, detail, advisory=not policy.refuse_leakage)]
