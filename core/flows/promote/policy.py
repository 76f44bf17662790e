"""Which policy applies to a model, and who may act on it: load, record, authorize.

Every action of ``core.flows.promote`` (and of the rollout flow) asks ``authorize`` first and
names its actor through ``_actor``; the rules themselves live in ``core.gating``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from core import auth, gating, registry
from core.config import Settings, read_toml
from core.errors import AuthenticationError, PermissionDeniedError
from core.gating import Policy
from core.lake import Lake

__all__ = ["allowed_actions", "authorize", "load_policy", "policy_with_source", "set_policy"]


def load_policy(
    model: str,
    *,
    settings: Settings,
    path: str | Path | None = None,
    lake: Lake,
) -> Policy:
    """Return the promotion policy of ``model``.

    Precedence: ``path`` (a TOML file) when given, else ``[models.<model>.policy]`` in the
    settings when present, else the policy last recorded in the lake for the model
    (``set_policy``, a ``policy`` registry event), else the defaults (see ``core.gating``).

    Raises:
        ConfigError: the file cannot be read or a key is invalid (named).
    """
    return policy_with_source(model, settings=settings, path=path, lake=lake)[0]


def policy_with_source(
    model: str,
    *,
    settings: Settings,
    path: str | Path | None = None,
    lake: Lake,
) -> tuple[Policy, str]:
    """Like ``load_policy``, also saying where the policy came from (for ``lakeops models policy``)."""
    if path is not None:
        where = f"policy file {path}"
        return gating.policy_from_dict(read_toml(path, what="policy file"), where=where, model=model), where
    section = settings.section(f"models.{model}.policy")
    if section:
        where = f"[models.{model}.policy]"
        return gating.policy_from_dict(section, where=where), f"{where} in {settings.config_path or 'settings'}"
    recorded = registry.events(model, lake=lake).filter(pl.col("action") == "policy")
    if recorded.height:
        last = recorded.row(-1, named=True)
        where = f"recorded in the lake by {last['actor']} at {last['at']:%Y-%m-%d %H:%M} UTC"
        return gating.policy_from_dict(json.loads(last["report_json"] or "{}"), where=where), where
    return gating.policy_from_dict({}, where="defaults"), "defaults"


def set_policy(
    model: str,
    policy: Mapping[str, Any],
    *,
    reason: str,
    actor: str | None = None,
    lake: Lake,
    settings: Settings,
) -> Policy:
    """Record ``model``'s promotion policy in the lake (a ``policy`` registry event).

    Every process using the lake (CLI, scheduler, API, UI) then applies it, unless a
    ``[models.<model>.policy]`` section in lakeops.toml overrides it.

    Raises:
        ConfigError: a key or value of the policy is invalid (named).
        RegistryError: no reason given.
    """
    why = _reason(reason, f"setting the policy of {model!r}")
    parsed = gating.policy_from_dict(policy, where=f"policy of {model!r}", model=model)
    authorize(model, "policy", settings=settings, lake=lake)
    registry.record_event(
        model, "policy", actor=_actor(actor, settings), reason=why, report=parsed.to_dict(), lake=lake
    )
    return parsed


def _actor(actor: str | None, settings: Settings) -> str:
    """Who an event names: the signed-in principal when auth is on (never a name passed in), else ``actor``.

    Raises:
        AuthenticationError: auth is on and nobody is signed in.
    """
    who = auth.current_principal()
    if who is not None:
        return who.name
    if auth.enabled(settings):
        raise AuthenticationError("auth is on: this change needs a signed-in principal (the CLI reads LAKEOPS_TOKEN)",
                                  "missing")
    return actor or settings.actor


_VERBS = {"evaluate": "run the gate of", "stage": "stage or unstage a challenger of", "approve": "approve or reject versions of",
          "promote": "promote versions of", "rollback": "roll back", "alias": "move aliases of",
          "policy": "change the policy of"}


def authorize(model: str, action: str, *, alias: str | None = None, settings: Settings,
              lake: Lake) -> None:
    """Refuse unless whoever acts may take ``action`` on ``model`` (only when auth is on).

    The permissions come from the policy in force (lakeops.toml, else the lake), never from a
    ``--policy`` file the caller brings. Automation (a system principal: the scheduler) passes:
    what it may do is what the policy's ``auto_promote`` and ``staging`` already allow.

    Args:
        model: the model.
        action: one of ``core.gating.PERMISSION_ACTIONS``.
        alias: the alias moved, for ``alias``.
        settings: settings (auth mode, ``[models.<m>.policy]``).
        lake: the lake.

    Raises:
        AuthenticationError: auth is on and nobody is signed in.
        PermissionDeniedError: the principal is not allowed by the policy (the message names who is).
    """
    if not auth.enabled(settings):
        return
    who = auth.current_principal()
    if who is None:
        raise AuthenticationError(f"auth is on: to {_VERBS[action]} {model!r} sign in (the CLI reads LAKEOPS_TOKEN)",
                                  "missing")
    if who.system:
        return
    perms = load_policy(model, settings=settings, lake=lake).permissions
    if not perms.allows(action, who.name, who.memberships, alias):
        raise PermissionDeniedError(
            f"{who.name} may not {_VERBS[action]} {model!r}: its policy allows {', '.join(perms.allowed(action, alias))} "
            f"(permissions.{f'aliases.{alias}' if action == 'alias' and alias in perms.aliases else action})")


def allowed_actions(model: str, *, settings: Settings, lake: Lake) -> frozenset[str]:
    """The registry actions whoever acts may take on ``model`` (every one when auth is off): for the UI."""
    out = set()
    for action in gating.PERMISSION_ACTIONS:
        try:
            authorize(model, action, settings=settings, lake=lake)
        except (AuthenticationError, PermissionDeniedError):
            continue
        out.add(action)
    return frozenset(out)


def _reason(reason: str | None, what: str) -> str:
    if reason is None or not str(reason).strip():
        from core.errors import RegistryError

        raise RegistryError(f'{what} needs a reason: pass --reason "..." (it goes into the audit trail)')
    return str(reason).strip()


