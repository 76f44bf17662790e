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
    [models.churn.policy.permissions]              # who may act, when auth is on (core.auth)
    promote = ["alice", "role:ml-lead"]            # principals by name, roles as role:<name>, "*" = anyone signed in
    rollback = ["role:oncall", "role:ml-lead"]
    stage = ["role:ml-engineer"]                   # stage and unstage the challenger
    approve = ["role:reviewer"]                    # approve and reject
    evaluate = ["role:ml-engineer"]                # run the gate (records a gate report)
    alias = ["role:ml-engineer"]                   # move other aliases (lakeops models alias)
    policy = ["alice"]                             # change this policy (permissions included)
    aliases = {shadow = ["bob"]}                   # per alias: who may move that alias instead

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

``permissions`` (used only when authentication is on): for each action, the principals (by
name) or roles (``role:<name>``; a principal's scopes count as roles, so ``role:admin`` is every
admin) allowed to take it; ``"*"`` is anyone signed in. An action the table does not name is
allowed to ``role:admin`` only, so by default a ``read`` principal can do none of them. Automation
(the scheduler) is not a person: it acts as the policy's ``auto_promote`` and ``staging`` allow.
``promote`` and ``rollback`` move the champion, ``stage`` the challenger; ``aliases`` overrides
``alias`` for one alias name.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import ConfigError
from core.sections import parse_section, section_keys

__all__ = [
    "HIGHER_IS_BETTER",
    "BeatChampion",
    "Check",
    "GateInputs",
    "GateReport",
    "PERMISSION_ACTIONS",
    "Permissions",
    "Policy",
    "PromotionState",
    "StagingPolicy",
    "alias_refusal",
    "approval_refusal",
    "auto_promotion_refusal",
    "champion_refusal",
    "default_metric",
    "gate_refusal",
    "higher_is_better",
    "live_promotion_refusal",
    "policy_from_dict",
    "policy_table",
    "promotion_refusal",
    "reject_refusal",
    "rollback_refusal",
    "run_gate",
    "stage_refusal",
    "staging_refusal",
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
_LEVEL = 0.05  # the default significance level
PERMISSION_ACTIONS = ("evaluate", "stage", "approve", "promote", "rollback", "alias", "policy")
_DEFAULT_ALLOWED = ("role:admin",)


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
class Permissions:
    """Who may take each registry action on a model (see the module docstring).

    Attributes:
        rules: action (``PERMISSION_ACTIONS``) -> allowed entries; a missing action allows
            ``role:admin`` only.
        aliases: alias name -> allowed entries for moving that alias (instead of ``alias``).
    """

    rules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def allowed(self, action: str, alias: str | None = None) -> tuple[str, ...]:
        """The entries allowed to take ``action`` (on ``alias`` for the ``alias`` action)."""
        if action == "alias" and alias is not None and alias in self.aliases:
            return self.aliases[alias]
        return self.rules.get(action, _DEFAULT_ALLOWED)

    def allows(self, action: str, name: str, memberships: frozenset[str], alias: str | None = None) -> bool:
        """Whether a principal called ``name`` with these scopes and roles may take ``action``."""
        for entry in self.allowed(action, alias):
            if entry == "*" or entry == name or (entry.startswith("role:") and entry[5:] in memberships):
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form (``policy_from_dict`` reads it back)."""
        out: dict[str, Any] = {k: list(v) for k, v in self.rules.items()}
        if self.aliases:
            out["aliases"] = {k: list(v) for k, v in self.aliases.items()}
        return out


def _entries(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f'{where} must be a list such as ["alice", "role:ml-lead"], got {value!r}')
    out = []
    for v in value:
        if not isinstance(v, str) or not v.strip() or (v.startswith("role:") and len(v) == 5):
            raise ConfigError(f'{where}: {v!r} is not a principal name, "role:<name>" or "*"')
        out.append(v.strip())
    return tuple(out)


def _permissions(value: Any, where: str) -> Permissions:
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be a table like {{promote = ["alice"], rollback = ["role:oncall"]}}')
    unknown = sorted(set(value) - {*PERMISSION_ACTIONS, "aliases"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join([*PERMISSION_ACTIONS, 'aliases'])}")
    rules = {k: _entries(v, f"{where}.{k}") for k, v in value.items() if k != "aliases"}
    raw_aliases = value.get("aliases", {})
    if not isinstance(raw_aliases, Mapping):
        raise ConfigError(f'{where}.aliases must be a table like {{shadow = ["bob"]}}')
    aliases = {str(k): _entries(v, f"{where}.aliases.{k}") for k, v in raw_aliases.items()}
    return Permissions(rules, aliases)


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
    significance: float | None = _LEVEL
    refuse_leakage: bool = True
    staging: StagingPolicy | None = None
    permissions: Permissions = field(default_factory=Permissions)

    @property
    def alpha(self) -> float:
        """The level of the paired test against the champion: ``significance``, or the default level
        when significance is off (the comparison is still measured and reported)."""
        return _LEVEL if self.significance is None else self.significance

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-able dict (the form ``policy_from_dict`` reads)."""
        out = asdict(self)
        out["min"], out["max"] = dict(self.min), dict(self.max)
        out["beat_champion"] = asdict(self.beat_champion) if self.beat_champion else False
        out["max_p95_latency_ms"] = {str(k): v for k, v in self.max_p95_latency_ms.items()}
        out["significance"] = False if self.significance is None else self.significance
        out["staging"] = asdict(self.staging) if self.staging else False
        out["permissions"] = self.permissions.to_dict()
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


def _beat_champion(value: Any, where: str) -> BeatChampion | None:
    if value is False:
        return None
    if value is True:
        return BeatChampion()
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be false or {{metric = "auc", margin = 0.005}}')
    extra = set(value) - {"metric", "margin"}
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; use metric, margin")
    kw: dict[str, Any] = {}
    if "metric" in value:
        if value["metric"] is not None and not isinstance(value["metric"], str):
            raise ConfigError(f"{where}.metric must be a metric name, got {value['metric']!r}")
        kw["metric"] = value["metric"]
    if "margin" in value:
        kw["margin"] = _number(value["margin"], f"{where}.margin")
        if kw["margin"] < 0:
            raise ConfigError(f"{where}.margin must be >= 0, got {kw['margin']}")
    return BeatChampion(**kw)


def _significance(value: Any, where: str) -> float | None:
    if value is False:
        return None
    level = _number(value, where)
    if not 0 < level <= 0.5:
        raise ConfigError(f"{where} must be a level in (0, 0.5] (e.g. 0.05) or false, got {value!r}")
    return level


def _size(value: Any, where: str) -> int | None:
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return value


def _latency(value: Any, where: str) -> dict[int, float]:
    if value is False:
        return {}
    out: dict[int, float] = {}
    for k, v in _metric_map(value, where).items():
        if not k.isdigit() or int(k) < 1:
            raise ConfigError(f"{where}: key {k!r} must be a batch size in rows, e.g. 1 or 100")
        out[int(k)] = v
    return out


def _staging(value: Any, where: str) -> StagingPolicy | None:
    if value is False:
        return None
    if value is True:
        return StagingPolicy()
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be false or a table like {{mode = "shadow", min_requests = 500}}')
    table = {k: v for k, v in value.items() if not (k == "max_disagreement" and v is False)}
    out = parse_section(StagingPolicy, table, where=where, names={k: f"{where}.{k}" for k in section_keys(StagingPolicy)})
    if out.mode not in ("shadow", "canary"):
        raise ConfigError(f"{where}.mode must be 'shadow' or 'canary', got {out.mode!r}")
    for key in ("fraction", "max_disagreement", "max_error_rate", "tolerance"):
        share = getattr(out, key)
        if share is not None and not 0 <= share <= 1:
            raise ConfigError(f"{where}.{key} must be between 0 and 1, got {share!r}")
    for key in ("min_requests", "min_labelled"):
        if getattr(out, key) < 0:
            raise ConfigError(f"{where}.{key} must be a whole number >= 0, got {getattr(out, key)!r}")
    if out.mode == "canary" and not 0 < out.fraction < 1:
        raise ConfigError(f"{where}.fraction must be between 0 and 1 for a canary, got {out.fraction}")
    return out


# one parser per policy key: the key's TOML value -> the Policy field (absent keys keep the field default)
_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "min": _metric_map,
    "max": _metric_map,
    "beat_champion": _beat_champion,
    "require_validated_data": _bool,
    "max_size_bytes": _size,
    "max_p95_latency_ms": _latency,
    "require_approval": _bool,
    "auto_promote": _bool,
    "significance": _significance,
    "refuse_leakage": _bool,
    "staging": _staging,
    "permissions": _permissions,
}
_KEYS = set(_PARSERS)


def policy_table(data: Mapping[str, Any], model: str | None = None) -> Mapping[str, Any]:
    """The policy keys of a document: ``[models.<model>.policy]`` when ``model`` is given and the
    document has it, else a lone ``[policy]`` table, else the document's top level (bare keys).

    The one nesting rule of every policy source: lakeops.toml sections, ``--policy`` files and
    ``lakeops models policy --set`` files, policies recorded in the lake.
    """
    models = data.get("models")
    if model is not None and isinstance(models, Mapping):
        entry = models.get(model)
        if isinstance(entry, Mapping) and isinstance(entry.get("policy"), Mapping):
            return entry["policy"]
    if set(data) == {"policy"} and isinstance(data["policy"], Mapping):
        return data["policy"]
    return data


def policy_from_dict(data: Mapping[str, Any], *, where: str = "policy", model: str | None = None) -> Policy:
    """Parse and validate a policy.

    Args:
        data: the policy's keys (missing keys take their defaults), or a document holding them
            (``policy_table``: ``[models.<model>.policy]``, ``[policy]`` or bare keys).
        where: how the section is named in error messages, e.g. ``"[models.churn.policy]"``.
        model: the model whose ``[models.<model>.policy]`` table a document may hold.

    Returns:
        The validated policy.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the key.
    """
    data = policy_table(data, model)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    return Policy(**{key: _PARSERS[key](value, _where(where, key)) for key, value in data.items()})


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


# ---------------------------------------------------------------------------- refusal rules
# When a candidate may not move: plain functions over what the flows read from the registry.
# Each returns the refusal (one sentence naming the model, the version and the fix) or None.
@dataclass(frozen=True)
class PromotionState:
    """What the registry says about a candidate when someone asks to promote it.

    Attributes:
        model, version: the candidate.
        champion: the current champion version (None: no champion yet).
        report: the candidate's latest gate report (None: never evaluated).
        decision: the latest approve/reject decision: ``approved``, ``rejected`` or None.
        live_passed: whether its latest live gate against ``champion`` passed (read only when
            the policy has ``staging``).
    """

    model: str
    version: int
    champion: int | None
    report: GateReport | None = None
    decision: str | None = None
    live_passed: bool = False


def _v(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def champion_refusal(model: str, version: int, champion: int | None) -> str | None:
    """Refused even with ``force``: the version already is the champion."""
    if champion == version:
        return f"model {model!r} v{version} is already the champion"
    return None


def gate_refusal(state: PromotionState) -> str | None:
    """Refused: no gate report, a failed gate, or a gate measured against another champion."""
    model, version, report = state.model, state.version, state.report
    fix = f"run 'lakeops models evaluate {model} {version}'"
    if report is None:
        return f"model {model!r} v{version} has no gate report; {fix} first"
    if not report.passed:
        failed = ", ".join(f"{c.name} (value {c.value}, threshold {c.threshold})" for c in report.failed)
        return f"model {model!r} v{version} failed its gate: {failed}; retrain, or use --force with a reason"
    if report.champion_version != state.champion:
        return (
            f"model {model!r} v{version} was gated against champion {_v(report.champion_version)}, but the champion "
            f"is now {_v(state.champion)}; {fix} again"
        )
    return None


def staging_refusal(policy: Policy, state: PromotionState) -> str | None:
    """Refused: the policy asks for a live period and the candidate's live gate has not passed."""
    if policy.staging is None or state.live_passed:
        return None
    return (
        f"the policy of {state.model!r} requires a live period first: 'lakeops models stage {state.model} "
        f"{state.version} --mode {policy.staging.mode} --reason ...', then its live gate must pass "
        f"(lakeops models rollout {state.model})"
    )


def approval_refusal(policy: Policy, state: PromotionState) -> str | None:
    """Refused: the candidate was rejected, or the policy requires an approval it lacks."""
    if state.decision == "rejected":
        return f"model {state.model!r} v{state.version} was rejected; approve it again or use --force with a reason"
    if policy.require_approval and state.decision != "approved":
        return (f"the policy of {state.model!r} requires approval: run 'lakeops models approve {state.model} "
                f"{state.version} --reason ...' first")
    return None


def promotion_refusal(policy: Policy, state: PromotionState) -> str | None:
    """Why an unforced promotion of ``state.version`` is refused, or None when it is allowed.

    In order: the gate (present, passed, against the current champion), the live period the
    policy's ``staging`` asks for, then rejection and required approval.

    Example:
        >>> promotion_refusal(Policy(), PromotionState("m", 2, None))
        "model 'm' v2 has no gate report; run 'lakeops models evaluate m 2' first"
    """
    return gate_refusal(state) or staging_refusal(policy, state) or approval_refusal(policy, state)


def auto_promotion_refusal(policy: Policy, report: GateReport) -> str | None:
    """Why the retrain job leaves a freshly gated version for a person, or None when it may go on.

    Going on means staging it (when the policy has ``staging``) or promoting it.
    """
    if not report.passed:
        return report.summary()
    if not policy.auto_promote:
        return "gate passed; auto_promote is off, awaiting a manual promotion"
    if policy.significance is not None and report.significant is False:
        detail = next(c.detail for c in report.checks if c.name.startswith("significant:"))
        return (f"gate passed, but the improvement is not significant at {policy.significance:g} ({detail}); not "
                "promoted automatically (promote by hand with a reason if you mean it, or set significance = false)")
    if policy.require_approval:
        return "gate passed; the policy requires approval before promotion"
    return None


def live_promotion_refusal(policy: Policy) -> str | None:
    """Why a challenger that passed its live gate waits for a person instead of being promoted, or None."""
    if not policy.auto_promote or policy.require_approval:
        return "live gate passed; awaiting a manual promotion"
    return None


def stage_refusal(model: str, version: int, champion: int | None, report: GateReport | None) -> str | None:
    """Why ``version`` may not be staged beside the champion (it is the champion, or lacks a passing gate)."""
    if champion == version:
        return f"model {model!r} v{version} is the champion; stage another version"
    if report is None or not report.passed or report.champion_version != champion:
        return (f"model {model!r} v{version} needs a passing gate against the current champion before it meets "
                f"traffic: run 'lakeops models evaluate {model} {version}'")
    return None


def reject_refusal(model: str, version: int, champion: int | None) -> str | None:
    """The current champion cannot be rejected: it keeps serving until the alias moves."""
    if champion == version:
        return (f"model {model!r} v{version} is the champion and keeps serving until the alias moves; "
                "roll back or promote another version first, then reject it")
    return None


def rollback_refusal(model: str, champion_stack: Sequence[int]) -> str | None:
    """A rollback needs a previous champion (``champion_stack``: the champions, oldest first)."""
    if len(champion_stack) < 2:
        held = ", ".join(f"v{v}" for v in champion_stack) or "none"
        return f"model {model!r} has no previous champion to roll back to (champion history: {held})"
    return None


def alias_refusal(name: str) -> str | None:
    """The champion alias moves only through the gated ``promote`` or ``rollback``."""
    if name == "champion":
        return "the champion alias moves only through 'promote' (gated) or 'rollback'"
    return None
