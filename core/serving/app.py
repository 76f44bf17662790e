"""The Litestar app: routes, problem responses, OpenAPI from model signatures, lifespan.

Run it with ``lakeops serve`` (uvicorn, ``factory=True`` on ``core.serving.app:create_app``).
"""

from __future__ import annotations

import gc
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.enums import ParamType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Parameter, RequestBody, Schema
from litestar.openapi.spec.base import BaseSchemaObject
from litestar.params import FromPath
from litestar.types import ASGIApp

from core import registry
from core.auth import Principal, auth_config
from core.config import Settings, load_settings
from core.errors import LakeopsError
from core.lake import Lake
from core.serving.actions import PROMOTE_SCHEMA, ROLLBACK_SCHEMA, run_action
from core.serving.auth import ApiAuth
from core.serving.config import ServingConfig, serving_config
from core.serving.hosts import HostCheck
from core.serving.metrics import Metrics
from core.serving.openapi import problem_responses
from core.serving.problems import PROBLEM_MEDIA_TYPE, Problem, ProblemError, auth_headers, problem_of
from core.serving.schemas import json_schema
from core.serving.service import Service

__all__ = ["create_app"]

_log = logging.getLogger("lakeops.serving")
_JSON = "application/json"
_GC_GEN0 = 50_000


@dataclass
class _RawSchema(BaseSchemaObject):
    """A JSON schema passed to OpenAPI verbatim (Litestar would camel-case feature names)."""

    raw: dict[str, Any]

    def to_schema(self) -> dict[str, Any]:
        return self.raw


def _operation(body: dict[str, Any], *, query: bool = False) -> type[Operation]:
    params = [
        Parameter(name="name", param_in=ParamType.PATH, required=True, schema=Schema(type=OpenAPIType.STRING)),
    ]
    if query:
        params += [
            Parameter(name="version", param_in=ParamType.QUERY, required=False, schema=Schema(type=OpenAPIType.INTEGER),
                      description="score with this model version instead of the champion"),
            Parameter(name="alias", param_in=ParamType.QUERY, required=False, schema=Schema(type=OpenAPIType.STRING),
                      description="score with the version this alias points to (e.g. challenger)"),
        ]

    @dataclass
    class _WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={_JSON: OpenAPIMediaType(schema=_RawSchema(body))},  # type: ignore[arg-type]
                required=True,
            )
            self.parameters = list(params)

    return _WithBody


class _JsonBytes:
    """A pre-encoded answer (JSON, or Arrow) as a bare ASGI app (no header objects, no re-encoding)."""

    __slots__ = ("body", "media", "status")

    def __init__(self, body: bytes, status: int = 200, media: bytes = b"application/json") -> None:
        self.body = body
        self.status = status
        self.media = media

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.media), (b"content-length", str(len(self.body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def _query(raw: bytes) -> tuple[int | None, str | None]:
    """Parse ``?version=N`` / ``?alias=name`` (400 problem for anything else)."""
    if not raw:
        return None, None
    version: int | None = None
    alias: str | None = None
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key == "version":
            try:
                version = int(value)
            except ValueError:
                raise ProblemError(
                    400, "bad-query", f"version must be an integer, got {value!r}",
                    [{"row": None, "field": "version", "message": "not an integer"}],
                ) from None
        elif key == "alias":
            alias = value
        else:
            raise ProblemError(
                400, "bad-query", f"unknown query parameter {key!r}; use version or alias",
                [{"row": None, "field": key, "message": "unknown query parameter"}],
            )
    if version is not None and alias is not None:
        raise ProblemError(400, "bad-query", "pass either version or alias, not both")
    return version, alias


def _predict_schema(lake: Lake, config: ServingConfig) -> dict[str, Any]:
    """One request schema per registered model's champion signature (``oneOf``), read at startup."""
    variants = []
    try:
        for name in registry.list_models(lake=lake)["model"].to_list():
            try:
                sig = registry.get_version(name, registry.resolve_version(name, lake=lake), lake=lake).signature
            except LakeopsError:
                continue
            variants.append({"title": f"{name} (champion signature)", **json_schema(sig, config.max_rows)})
    except LakeopsError as exc:
        _log.warning("OpenAPI: could not read model signatures: %s", exc)
    if not variants:
        return {"description": "rows as a list of objects, or {\"columns\": {...}}", "type": ["array", "object"]}
    return variants[0] if len(variants) == 1 else {"oneOf": variants}


_FEEDBACK_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "description": (
        "Ground-truth labels: {prediction_id, label}, or {<the model's feedback key>, label} when its "
        "signature declares one (the label then applies to the newest prediction of that key). A binary "
        "model takes 0/1 (or true/false), regression a finite number; a later label for the same "
        "prediction wins."
    ),
    "items": {
        "type": "object",
        "properties": {"prediction_id": {"type": "string"}, "label": {"type": ["number", "boolean"]}},
        "required": ["label"],
    },
}


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, "body-too-large", f"the request body is over the limit of {limit:,} bytes")


ARROW = "application/vnd.apache.arrow.stream"
_ARROW_B = ARROW.encode()
_JSON_B = _JSON.encode()
_PREDICT_ROUTE = "/v1/models/{name}/predict"

Head = tuple[str | None, bool, bool, bytes | None]
"""What ``_head`` reads from a request's headers."""


def _head(scope: Any, limit: int) -> Head:
    """(body kind ``json``/``arrow``/None, Content-Length over ``limit``, the client Accepts Arrow,
    the ``Authorization`` header): the one pass over a request's headers."""
    kind: str | None = None
    too_big = arrow_out = False
    authz: bytes | None = None
    for key, value in scope["headers"]:
        if key == b"content-type":
            mt = value.split(b";", 1)[0].strip().lower()
            kind = "json" if mt == b"application/json" or mt.endswith(b"+json") else ("arrow" if mt == _ARROW_B else None)
        elif key == b"content-length" and value.isdigit() and int(value) > limit:
            too_big = True
        elif key == b"accept" and _ARROW_B in value.lower():
            arrow_out = True
        elif key == b"authorization":
            authz = value
    return kind, too_big, arrow_out, authz


async def _body(head: Head, receive: Any, limit: int, *, arrow: bool = False) -> bytes:
    """Every route's request body, straight from ASGI ``receive``, after the header checks.

    Refuses a body over ``limit`` (413: by its Content-Length, or once the chunks read pass it;
    reading stops there) and a Content-Type other than JSON (or an Arrow IPC stream, with
    ``arrow``): 415. Cheaper than Litestar's ``request.body()`` (no header object, no stream
    generator) on the hot path.
    """
    kind, too_big, _, _ = head
    if too_big:
        raise _too_large(limit)
    if kind != "json" and not (arrow and kind == "arrow"):
        raise ProblemError(415, "unsupported-media-type", (
            f"send the body as JSON (Content-Type: application/json) or as an Arrow IPC stream ({ARROW})" if arrow
            else "send the body as JSON with Content-Type: application/json"))
    msg = await receive()
    body = msg.get("body", b"")
    if msg.get("more_body"):
        chunks = [body]
        size = len(body)
        while msg.get("more_body") and size <= limit:
            msg = await receive()
            if msg["type"] != "http.request":
                break  # the client went away: nobody reads the answer
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
        body = b"".join(chunks)
    if len(body) > limit:
        raise _too_large(limit)
    return body


async def _predict(service: Service, name: str, scope: Any, receive: Any, head: Head, limit: int) -> tuple[bytes, bytes]:
    """Read, decode, score and log one predict request; return (the answer, its media type).

    The one predict path: the fast path's and Litestar's route's.
    """
    body = await _body(head, receive, limit, arrow=True)
    version, alias = _query(scope["query_string"])
    arrow_out = head[2]
    out = await service.predict(name, body, version, alias, arrow=head[0] == "arrow", arrow_out=arrow_out)
    return out, (_ARROW_B if arrow_out else _JSON_B)


def _http_problem(exc: HTTPException) -> Problem:
    """A refusal of Litestar's own (no such route, wrong method ...) as a problem."""
    extra = getattr(exc, "extra", None)
    errors = [] if not isinstance(extra, list) else [
        {"row": None, "field": e.get("key"), "message": e.get("message")} for e in extra if isinstance(e, dict)]
    return Problem(exc.status_code, f"http-{exc.status_code}", str(exc.detail), errors, auth_headers(exc.status_code))


def _problem_handler(metrics: Metrics) -> Any:
    """Litestar's exception handler: every refusal a problem (``core.serving.problems``), counted."""

    def problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        path = request.url.path
        if isinstance(exc, HTTPException) and not isinstance(exc, LakeopsError):
            p = _http_problem(exc)
        else:
            p = problem_of(exc, path)
        paths = getattr(request.scope.get("route_handler"), "paths", None)
        # the route template, never the raw path: model names must not explode label cardinality
        route = str(next(iter(paths))).replace(":str", "") if paths else "unmatched"
        metrics.error(route, p.slug)
        t0: float = request.scope.get("lakeops_t0", time.perf_counter())  # type: ignore[assignment]
        metrics.observe(route, p.status, time.perf_counter() - t0)
        return Response(content=p.body(path), status_code=p.status, media_type=PROBLEM_MEDIA_TYPE, headers=p.headers)

    return problem


def _die_with_supervisor() -> None:
    """In a ``lakeops serve --workers N`` worker: be SIGTERMed (a graceful flush) when the supervisor dies.

    uvicorn's supervisor does not take its workers down when it is killed (SIGKILL, OOM): they
    would keep serving the port and holding their WAL slots, and a restarted server would run
    beside them. Linux's ``PR_SET_PDEATHSIG`` ends them with their parent.
    """
    import ctypes
    import multiprocessing
    import os
    import signal

    if multiprocessing.parent_process() is None:
        return  # not a spawned worker (a single-process server, a test's thread)
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent or parent == 1:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _lifespan(service: Service, api_auth: ApiAuth | None) -> Any:
    """Start and stop the worker's threads (service, token poller, metrics publisher) with the app."""
    metrics = service.metrics

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        service.start()
        if api_auth is not None:
            api_auth.start()
        slot = getattr(service, "_slot", None)
        metrics.start_publishing(service.metrics_sources, worker=slot.path.name if slot is not None else None,
                                 changed=lambda: service.cache.swaps)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's
        # scans, which otherwise walk ~100k library objects on every full collection.
        gc.collect()
        gc.freeze()
        # A 100-row request allocates ~2,000 short-lived containers, nearly all freed by
        # reference counting; at CPython's default threshold (700) that is several cyclic-GC
        # passes per request (~40 % of decoding time). Collect young objects far less often.
        gc.set_threshold(_GC_GEN0, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            if api_auth is not None:
                api_auth.stop()
            metrics.stop(last=service.metrics_sources())
            service.stop()

    return lifespan


def create_app(settings: Settings | None = None, *, lake: Lake | None = None) -> Litestar:
    """Build the prediction API.

    Args:
        settings: lakeops settings; default: from the environment and lakeops.toml.
        lake: the lake; default: opened from ``settings``.

    Returns:
        The Litestar app (start/stop of the worker's threads happen in its lifespan).

    Raises:
        ConfigError: an invalid ``[serving]`` section.
    """
    _die_with_supervisor()
    settings = settings or load_settings()
    config = serving_config(settings)
    lake = lake or Lake.from_settings(settings)
    service = Service(settings, config, lake)
    metrics = service.metrics
    metrics.replica = config.replica or f"{socket.gethostname()}:{settings.api_port}"
    if settings.metrics_dir:  # a worker of `lakeops serve --workers N`: /metrics answers for all of them
        from pathlib import Path

        metrics.shared_dir = Path(settings.metrics_dir)
    limit = config.request_max_body_size
    routes = auth_config(settings)
    api_auth = ApiAuth(settings, lake, metrics, config.poll_interval_s) if routes.on else None

    @post(
        "/v1/models/{name:str}/predict",
        status_code=200,
        operation_class=_operation(_predict_schema(lake, config), query=True),
        summary="Score rows with a model (champion by default)",
        description=(
            "Body: rows as a list of objects, or {\"columns\": {feature: [values]}}; 1 to "
            f"{config.max_rows:,} rows. `?version=N` or `?alias=challenger` pins a version. Every "
            "scored row is in the prediction log (write-ahead file) before the answer is sent."
        ),
        request_max_body_size=config.request_max_body_size,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
        opt={"scope": "predict"},
    )
    async def predict(request: Request[Any, Any, Any]) -> ASGIApp:
        # The hot path: path and query parsed by hand and the answer is a bare ASGI callable,
        # which skips Litestar's parameter models and Response machinery (about a third of the
        # CPU of a 1-row request).
        t0 = time.perf_counter()
        scope = request.scope
        scope["lakeops_t0"] = t0  # type: ignore[typeddict-unknown-key]
        out, media = await _predict(service, scope["path_params"]["name"], scope, request.receive,
                                    _head(scope, limit), limit)
        metrics.observe(_PREDICT_ROUTE, 200, time.perf_counter() - t0)
        return _JsonBytes(out, media=media)

    @post(
        "/v1/models/{name:str}/feedback",
        status_code=202,
        operation_class=_operation(_FEEDBACK_SCHEMA),
        summary="Record ground-truth labels by prediction_id (batch)",
        request_max_body_size=config.request_max_body_size,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
        opt={"scope": "feedback"},
    )
    async def feedback(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        t0 = time.perf_counter()
        request.scope["lakeops_t0"] = t0  # type: ignore[typeddict-unknown-key]
        out = await service.feedback(name, await _body(_head(request.scope, limit), request.receive, limit))
        metrics.observe("/v1/models/{name}/feedback", 202, time.perf_counter() - t0)
        return Response(content=msgspec.json.encode(out), media_type=_JSON, status_code=202)

    @get("/v1/models", summary="Registered models with their champion and aliases", sync_to_thread=True,
         responses=problem_responses(400, 401, 403, 503), opt={"scope": "read"})
    def models() -> list[dict[str, Any]]:
        return registry.list_models(lake=lake).to_dicts()

    @get("/v1/models/{name:str}", summary="One model: versions, aliases, champion signature", sync_to_thread=True,
         responses=problem_responses(400, 401, 403, 404, 503), opt={"scope": "read"})
    def model_detail(name: FromPath[str]) -> dict[str, Any]:
        vs = registry.versions(name, lake=lake)
        amap = registry.aliases(name, lake=lake)
        champ = amap.get("champion")
        sig = registry.get_version(name, champ, lake=lake).signature if champ is not None else None
        served = service.cache.champions.get(name)
        staged = service.cache.stages.get(name)
        return {
            "name": name,
            "aliases": amap,
            "serving_version": served.version if served is not None else None,
            # the challenger this server is running beside the champion (shadow or canary), once loaded
            "serving_stage": (
                {"version": staged.served.version, "mode": staged.mode, "fraction": staged.fraction}
                if staged is not None else None
            ),
            "load_error": service.cache.load_errors.get(name),
            # what scores the champion in this worker: LightGBM or its compiled trees (``[serving] predictor``)
            "predictor": served.score.status() if served is not None else None,
            "signature": sig.to_dict() if sig is not None else None,
            "versions": vs.to_dicts(),
        }

    def _registry_action(action: str, schema: dict[str, Any], summary: str) -> Any:
        @post(
            f"/v1/models/{{name:str}}/{action}",
            status_code=200,
            operation_class=_operation(schema),
            summary=summary,
            description=(
                "As the token's principal (auth on): the model's policy decides who may "
                f"(`permissions.{action}`, admins only by default) and the registry event names them. "
                "403 `auth-required` when auth is off."
            ),
            responses=problem_responses(400, 401, 403, 404, 409, 415, 422, 503),
            opt={"scope": "read"},
            name=f"registry-{action}",
        )
        async def handler(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
            t0 = time.perf_counter()
            request.scope["lakeops_t0"] = t0  # type: ignore[typeddict-unknown-key]
            body = await _body(_head(request.scope, limit), request.receive, limit)
            principal: Principal | None = request.scope.get("lakeops_principal")  # type: ignore[assignment]
            out = await run_action(action, name, body, principal=principal,
                                   settings=settings, lake=lake, metrics=metrics)
            metrics.observe(f"/v1/models/{{name}}/{action}", 200, time.perf_counter() - t0)
            return Response(content=msgspec.json.encode(out), media_type=_JSON, status_code=200)

        return handler

    promote_route = _registry_action("promote", PROMOTE_SCHEMA, "Promote a version to champion (auth on; policy decides who)")
    rollback_route = _registry_action("rollback", ROLLBACK_SCHEMA, "Roll the champion back one step (auth on; policy decides who)")

    @get("/health", summary="Liveness", opt={"scope": None})
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: a champion is loaded and the prediction log is not too far behind",
         opt={"scope": routes.route_scope("ready")})
    async def ready() -> Response[bytes]:
        ok, details = service.readiness()
        return Response(content=msgspec.json.encode(details), media_type=_JSON, status_code=200 if ok else 503)

    @get("/metrics", summary="Prometheus metrics (every worker of this server, labelled with the replica)",
         media_type=MediaType.TEXT, opt={"scope": routes.route_scope("metrics")})
    async def prometheus(request: Request[Any, Any, Any]) -> Response[bytes]:
        accept = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == b"accept"), "")
        body, content_type = service.metrics_text(accept)
        return Response(content=body, media_type=content_type)

    app = Litestar(
        route_handlers=[predict, feedback, models, model_detail, promote_route, rollback_route, health, ready, prometheus],
        exception_handlers={Exception: _problem_handler(metrics)},
        lifespan=[_lifespan(service, api_auth)],
        openapi_config=OpenAPIConfig(title="lakeops prediction API", version="1"),
        guards=[api_auth.guard()] if api_auth is not None else None,
        request_max_body_size=config.request_max_body_size,
        debug=False,
    )
    app.state.service = service
    app.state.auth = api_auth
    app.asgi_handler = HostCheck(_FastPredict(app.asgi_handler, service, limit, api_auth), settings.allowed_hosts())
    return app


class _FastPredict:
    """Answers ``POST /v1/models/{name}/predict`` before Litestar's router, refusals included.

    The route stays declared in Litestar (OpenAPI, and the requests handed on below). A request
    whose headers say JSON or Arrow within the size limit is read, scored and answered here,
    and so are its refusals: through ``core.serving.problems``, with the problem bodies and the
    metrics of Litestar's handler, and without decoding the body a second time. This skips the
    router, its exception middleware and the handler signature machinery (about a quarter of a
    1-row request's CPU). Anything else (another Content-Type, a Content-Length over the limit)
    goes to Litestar's route. With auth on, only a request whose token this worker already
    verified with the ``predict`` scope is answered here (a dict lookup, ``ApiAuth.fast``); the
    guard on Litestar's route verifies, caches or refuses the rest.
    """

    __slots__ = ("auth", "inner", "limit", "metrics", "service")

    _PREFIX = "/v1/models/"
    _SUFFIX = "/predict"

    def __init__(self, inner: ASGIApp, service: Service, limit: int, auth: ApiAuth | None = None) -> None:
        self.inner = inner
        self.auth = auth
        self.service = service
        self.metrics = service.metrics
        self.limit = limit

    def _mine(self, scope: Any) -> tuple[str, Head] | None:
        """(model name, headers) of a predict request this path answers, else None."""
        path = scope.get("path") or ""
        if (scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(self._PREFIX)
                or not path.endswith(self._SUFFIX)):
            return None
        name = path[len(self._PREFIX) : -len(self._SUFFIX)]
        head = _head(scope, self.limit)
        if not name or "/" in name or head[0] is None or head[1]:
            return None
        if self.auth is not None and not self.auth.fast(head[3], "predict"):
            return None
        return name, head

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        mine = self._mine(scope)
        if mine is None:
            await self.inner(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            out, media = await _predict(self.service, mine[0], scope, receive, mine[1], self.limit)
        except Exception as exc:  # noqa: BLE001 - every refusal is answered as a problem, here
            problem = problem_of(exc, scope["path"])
            self.metrics.error(_PREDICT_ROUTE, problem.slug)
            self.metrics.observe(_PREDICT_ROUTE, problem.status, time.perf_counter() - t0)
            await problem.send(send, scope["path"])
            return
        self.metrics.observe(_PREDICT_ROUTE, 200, time.perf_counter() - t0)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", media), (b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})
