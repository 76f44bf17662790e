"""The one map from lakeops errors (and HTTP-level refusals) to RFC 9457 problem responses.

``core.errors`` knows no status codes; this module is where they are chosen. Every problem body
is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and, for input
errors, an ``errors`` list of ``{"row", "field", "message"}`` items.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core import errors as E

__all__ = ["PROBLEM_MEDIA_TYPE", "STATUS", "ProblemError", "errors_of", "problem_body", "status_for"]

PROBLEM_MEDIA_TYPE = "application/problem+json"

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
