"""The problem responses each route documents in the OpenAPI schema.

Every refusal is an RFC 9457 ``application/problem+json`` body (``core.serving.problems``);
these declarations make the schema say so, per route and status, with the body's shape.
"""

from __future__ import annotations

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from core.serving.problems import PROBLEM_MEDIA_TYPE

__all__ = ["Problem", "ProblemItem", "problem_responses"]


class ProblemItem(msgspec.Struct):
    """One input error: the row (0-based, for row errors), the field, and what is wrong."""

    message: str
    row: int | None = None
    field: str | None = None


class Problem(msgspec.Struct):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemItem] | None = None


_WHEN = {
    400: "bad request: a query parameter, or a Host header this API does not answer to (invalid-host)",
    404: "no such model or model version",
    413: "the request body is over the size limit",
    415: "the body is not sent as application/json",
    422: "the body is not valid input for the model: errors[] names each row and field",
    503: "not ready: no champion loaded, or the prediction log / lake is unavailable",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a route: each status documented as an ``application/problem+json`` body."""
    return {
        s: ResponseSpec(
            data_container=Problem,
            description=_WHEN.get(s, "error"),
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for s in statuses
    }
