"""The one map from lakeops errors (and HTTP-level refusals) to RFC 9457 problem responses.

``core.errors`` knows no status codes; this module is where they are chosen. Every problem body
is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and, for input
errors, an ``errors`` list of ``{"row", "field", "message"}`` items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from core import errors as E

__all__ = [
    "PROBLEM_MEDIA_TYPE", "STATUS", "Problem", "ProblemError", "auth_headers", "errors_of", "problem_body", "problem_of", "status_for",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_PROBLEM_MEDIA_B = PROBLEM_MEDIA_TYPE.encode()
_log = logging.getLogger("lakeops.serving")

# Most specific class first: the first isinstance match wins.
STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (E.DataValidationError, 422, "invalid-input"),
    (E.ModelVersionNotFoundError, 404, "model-version-not-found"),
    (E.ModelNotFoundError, 404, "model-not-found"),
    (E.NotFoundError, 404, "not-found"),
    (E.ArtifactIntegrityError, 503, "artifact-integrity"),
    (E.LakeUnavailableError, 503, "lake-unavailable"),
    (E.CommitConflictError, 503, "commit-conflict"),
    (E.LakeError, 503, "lake-error"),
    (E.PromotionRefusedError, 409, "promotion-refused"),
    (E.AuthenticationError, 401, "unauthenticated"),
    (E.PermissionDeniedError, 403, "forbidden"),
    (E.SqlRefusedError, 403, "sql-refused"),
    (E.SqlError, 400, "sql-error"),
    (E.TrainingError, 400, "training-error"),
    (E.RegistryError, 400, "registry-error"),
    (E.ConfigError, 500, "config-error"),
    (E.LakeopsError, 500, "lakeops-error"),
)

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ProblemError(E.LakeopsError):
    """An HTTP-level refusal raised inside ``core.serving`` (wrong content type, body not JSON ...).

    Args:
        status: the HTTP status to answer with.
        slug: the problem type's last path segment (``"not-json"``).
        detail: one line naming the problem and the fix.
        errors: optional ``{"row", "field", "message"}`` items.
    """

    def __init__(self, status: int, slug: str, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.errors = errors or []


def status_for(exc: BaseException) -> tuple[int, str]:
    """Return ``(status, slug)`` for an exception (500 ``internal`` when it is not a lakeops error)."""
    if isinstance(exc, ProblemError):
        return exc.status, exc.slug
    for cls, status, slug in STATUS:
        if isinstance(exc, cls):
            return status, slug
    return 500, "internal"


def problem_body(
    status: int, slug: str, detail: str, *, errors: list[dict[str, Any]] | None = None, instance: str | None = None
) -> bytes:
    """Encode one RFC 9457 problem document."""
    doc: dict[str, Any] = {
        "type": f"https://lakeops.dev/problems/{slug}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        doc["instance"] = instance
    if errors:
        doc["errors"] = errors
    return msgspec.json.encode(doc)


def errors_of(exc: BaseException) -> list[dict[str, Any]]:
    """Return the field/row error items an exception carries (``ProblemError`` or a report list)."""
    if isinstance(exc, ProblemError):
        return exc.errors
    report = getattr(exc, "report", None)
    if isinstance(report, list) and all(isinstance(r, dict) for r in report):
        return report
    return []


@dataclass(frozen=True, slots=True)
class Problem:
    """One refusal, ready to answer: status, problem type, detail, field errors, extra headers."""

    status: int
    slug: str
    detail: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] | None = None

    def body(self, instance: str | None) -> bytes:
        """The problem document (``instance``: the request path)."""
        return problem_body(self.status, self.slug, self.detail, errors=self.errors, instance=instance)

    async def send(self, send: Any, instance: str | None) -> None:
        """Answer on a bare ASGI ``send`` (for code in front of Litestar's router)."""
        body = self.body(instance)
        headers = [(b"content-type", _PROBLEM_MEDIA_B), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (self.headers or {}).items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def problem_of(exc: BaseException, where: str) -> Problem:
    """The problem answering ``exc`` (raised while serving ``where``, a request path).

    An error that is not a lakeops error is a 500 whose detail says "see the server log", where
    it is logged with its traceback (its text may hold internals). A 401 says which scheme to
    use (RFC 6750), with ``error="invalid_token"`` when a token was presented.
    """
    status, slug = status_for(exc)
    internal = status >= 500 and not isinstance(exc, E.LakeopsError)
    if internal:
        _log.exception("unhandled error on %s", where, exc_info=exc)
    detail = "internal error; see the server log" if internal else str(exc)
    return Problem(status, slug, detail, errors_of(exc), auth_headers(status, getattr(exc, "reason", "missing")))


def auth_headers(status: int, reason: str = "missing") -> dict[str, str] | None:
    """A 401's ``WWW-Authenticate`` (RFC 6750: say which scheme; ``invalid_token`` when one was presented)."""
    if status != 401:
        return None
    return {"WWW-Authenticate": 'Bearer realm="lakeops"' + ("" if reason == "missing" else ', error="invalid_token"')}
