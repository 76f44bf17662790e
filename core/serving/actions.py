"""Registry actions over the API: promote and roll back a model's champion as the token's principal.

``POST /v1/models/{name}/promote`` (``{"version": 2, "reason": "...", "force": false}``) and
``POST /v1/models/{name}/rollback`` (``{"reason": "..."}``) call the same ``core.flows.promote``
functions as the CLI and the UI, inside ``core.auth.acting_as(principal)``: the model's policy
decides who may (``permissions.promote`` / ``rollback``; admins only by default), the gate and
approval still apply, and the registry event names the authenticated principal (a name in the
body is refused, not trusted). The routes need only a valid token with ``read`` at the guard;
the policy is the real check, so a refusal is a 403 problem naming who and what the policy
allows. With auth off they answer 403 ``auth-required``: an unauthenticated caller would have
to declare who acts, which is what the audit trail must not trust.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec

from core import auth
from core.config import Settings
from core.errors import PermissionDeniedError
from core.lake import Lake
from core.serving.metrics import Metrics
from core.serving.problems import ProblemError

__all__ = ["PROMOTE_SCHEMA", "ROLLBACK_SCHEMA", "run_action"]

PROMOTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Move the champion alias to `version` (the gate and approval apply unless `force`, which is "
                   "recorded as forced). Who may is the model's policy (`permissions.promote`).",
    "properties": {"version": {"type": "integer", "minimum": 1}, "reason": {"type": "string", "minLength": 1},
                   "force": {"type": "boolean", "default": False}},
    "required": ["version", "reason"],
    "additionalProperties": False,
}
ROLLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Return the champion alias to the previous champion. Who may is the model's policy "
                   "(`permissions.rollback`).",
    "properties": {"reason": {"type": "string", "minLength": 1}},
    "required": ["reason"],
    "additionalProperties": False,
}


class _Promote(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    reason: str
    force: bool = False


class _Rollback(msgspec.Struct, forbid_unknown_fields=True):
    reason: str


_PATH = re.compile(r"\$\.(\w+)")
_UNKNOWN = re.compile(r"unknown field `(\w+)`")


def _decode(body: bytes, kind: type[msgspec.Struct]) -> Any:
    """Decode the body as ``kind``; a 422 problem naming the field otherwise."""
    try:
        value: Any = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = _UNKNOWN.search(text) or _PATH.search(text)
        field = m.group(1) if m else None
        if field is None and "missing required field" in text:
            field = text.split("`")[1]
        raise ProblemError(422, "invalid-input", f"request body: {text}",
                           [{"row": None, "field": field, "message": text}]) from None
    except msgspec.DecodeError as exc:
        raise ProblemError(400, "not-json", f"the body is not valid JSON: {exc}") from None
    if not value.reason.strip():
        raise ProblemError(422, "invalid-input", "reason must say why (it goes into the audit trail)",
                           [{"row": None, "field": "reason", "message": "empty"}])
    if isinstance(value, _Promote) and value.version < 1:
        raise ProblemError(422, "invalid-input", f"version must be >= 1, got {value.version}",
                           [{"row": None, "field": "version", "message": "must be >= 1"}])
    return value


async def run_action(action: str, model: str, body: bytes, *, principal: auth.Principal | None, settings: Settings,
                     lake: Lake, metrics: Metrics | None = None) -> dict[str, Any]:
    """Run ``promote`` or ``rollback`` on ``model`` as ``principal``; return the alias change.

    A refusal by the policy is counted as a failed attempt (``lakeops_auth_failures_total{reason="forbidden"}``).

    Raises:
        ProblemError: auth is off (403 ``auth-required``), or the body does not fit (400/422 naming the field).
        PermissionDeniedError: the model's policy does not allow the principal (403).
        PromotionRefusedError: the gate, approval or a concurrent change refused it (409).
        ModelNotFoundError, ModelVersionNotFoundError: no such model or version (404).
    """
    from core.flows import promote as flows

    if principal is None or not auth.enabled(settings):
        raise ProblemError(403, "auth-required",
                           f"{action} through the API needs authentication, so the registry event names who acted: "
                           "turn tokens on ([auth] mode = \"tokens\" or LAKEOPS_AUTH=tokens) or use "
                           f"'lakeops models {action}'")
    args = _decode(body, _Promote if action == "promote" else _Rollback)

    def call() -> Any:
        # the context variable is set in the worker thread itself: core.flows reads it there
        with auth.acting_as(principal):
            if action == "promote":
                return flows.promote(model, args.version, reason=args.reason, force=args.force, lake=lake,
                                     settings=settings)
            return flows.rollback(model, reason=args.reason, lake=lake, settings=settings)

    try:
        change = await asyncio.to_thread(call)
    except PermissionDeniedError:
        if metrics is not None:
            metrics.auth_failed("forbidden")
        raise
    return {"model": change.model, "alias": change.alias, "version": change.version,
            "previous_version": change.previous_version, "action": change.action, "actor": change.actor,
            "reason": change.reason, "at": change.at.isoformat(), "event_id": change.event_id,
            "forced": bool(change.report.get("forced", False))}
