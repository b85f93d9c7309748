"""A route table that serves requests and describes itself (openapi.py reads the same table).

Each Route names its method, path, request/response models and required auth. `mount` turns the table
into aiohttp handlers that authenticate, parse and validate, call the dialect's handler, and serialize
the result; every failure leaves as the `{error, code, status}` envelope, never as a bare 500.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic_core
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from core.errors import Forbidden, ShepherdError, Unauthorized, ValidationFailed
from core.people.access import Principal
from core.shepherd import Shepherd

log = logging.getLogger(__name__)

SHEPHERD = web.AppKey("shepherd", Shepherd)
METRICS = web.AppKey("metrics_registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", "HttpMetrics")
MAX_BODY = web.AppKey("max_body_bytes", int)


class ApiModel(BaseModel):
    """Wire models: camelCase on the wire, strict types (a string is not a number)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, strict=True)


class SnakeApiModel(BaseModel):
    """Wire models for dialects that speak snake_case (Coder): the field names as they are, strict types."""

    model_config = ConfigDict(strict=True)


class ErrorEnvelope(ApiModel):
    error: str
    code: str
    status: int


@dataclass(frozen=True)
class FieldError:
    """A dialect's own code and words for a bad field (CodeSpar: INVALID_AUTONOMY_LEVEL)."""

    code: str
    message: str


@dataclass
class ApiRequest:
    http: web.Request
    principal: Principal
    shepherd: Shepherd
    body: Any = None
    query: Any = None
    data: Any = None  # the body as parsed JSON, before validation (for routes that keep it as sent)
    size: int = 0  # the body's length in bytes

    def path(self, name: str) -> str:
        return self.http.match_info[name]


@dataclass
class Result:
    """A handler's answer when it needs more than the route's default status, or extra headers."""

    body: Any
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Shaped:
    """A body already in the route's wire shape (JSON-ready values, the wire's names, absent fields left out),
    built straight from rows by a hot path: serialized once as it is, not validated again through the response
    model. The OpenAPI document still comes from the route's `response`, and the tests check the shape against it."""

    data: Any


Handler = Callable[[ApiRequest], Awaitable[Any]]
Guard = Callable[[ApiRequest], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    response: Any = None  # a model, list[Model], or None for no body
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    tag: str = "api"
    auth: bool = True
    # A route with its own credentials (the task token of `shepherd ask`) checks them here: after the path,
    # before the query and the body are read, so that nobody unauthenticated gets Shepherd to parse anything.
    guard: Guard | None = None
    field_errors: Mapping[str, FieldError] = field(default_factory=dict)
    operation_id: str = ""
    produces: str = "application/json"  # a handler for another type returns its own web.Response
    max_body: int | None = None  # a route that takes bigger bodies than the app's limit (a bundle of files)
    # what a path parameter may match (a regex for the router alone; the OpenAPI path keeps `{name}`), where a
    # literal path beside it would be taken for a value (`/coding-containers/promotions` is no container)
    patterns: Mapping[str, str] = field(default_factory=dict)

    @property
    def adapter(self) -> TypeAdapter[Any] | None:
        return _adapter(self.response) if self.response is not None else None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # orjson: 16 µs for a page of 50 agents, against 51 µs (pydantic_core.to_json) and 177 µs (json.dumps)
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def next_page_headers(req: ApiRequest, cursor: str) -> dict[str, str]:
    """X-Next-Cursor, and the next page's address as RFC 8288 has it (the same query, the cursor for offset)."""
    query = {k: v for k, v in req.http.rel_url.query.items() if k not in ("offset", "cursor", "after_id")}
    query["cursor"] = cursor
    return {"X-Next-Cursor": cursor, "Link": f'<{req.http.rel_url.with_query(query)}>; rel="next"'}


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": message, "code": code, "status": status}, status=status)


# --- authentication ------------------------------------------------------------------------------

TOKEN_HEADERS = ("x-api-key", "coder-session-token")  # Coder clients send their own header


def token_from(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization must be `Bearer <token>`", code="UNAUTHORIZED")
        return value.strip()
    for name in TOKEN_HEADERS:
        if request.headers.get(name):
            return request.headers[name].strip()
    raise Unauthorized(
        "missing API token: send Authorization: Bearer <token>, x-api-key: <token> or Coder-Session-Token: <token>"
    )


async def authenticate(request: web.Request, shepherd: Shepherd) -> Principal:
    principal = await shepherd.tokens.authenticate(token_from(request))
    org = request.headers.get("x-org-id")
    if org is not None and org != principal.org_id:
        raise Forbidden("x-org-id does not match this token's org", code="ORG_MISMATCH")
    return principal


# --- parsing -------------------------------------------------------------------------------------


def _field_error(route: Route, exc: ValidationError) -> ShepherdError:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        for key, special in route.field_errors.items():
            if loc == key or loc.startswith(key + "."):
                return ValidationFailed(special.message, code=special.code)
        problems.append(f"{loc or 'body'}: {err['msg']}")
    return ValidationFailed("; ".join(problems[:5]), code="VALIDATION_ERROR")


def _nul_at(data: Any) -> str | None:
    """Where a NUL hides in parsed JSON (a key or a string, at any depth), as a dotted path; None if nowhere."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where or "body"
        elif isinstance(item, dict):
            for key, value in item.items():
                path = f"{where}.{key}" if where else str(key)
                if "\x00" in key:
                    return path.replace("\x00", "\\x00")  # named, not echoed
                stack.append((path, value))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", value) for i, value in enumerate(item))
    return None


def refuse_nul(value: str, what: str) -> str:
    """Text holding a NUL is refused at the door: no argv, file name or PostgreSQL column can hold one."""
    if "\x00" in value:
        raise ValidationFailed(f"{what} contains a NUL character", code="VALIDATION_ERROR")
    return value


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, with pydantic's parser (the one validation uses): strict UTF-8, no lone
    surrogates, no NaN, and nesting capped (json.loads recurses until RecursionError: a 500 for `[[[[…`)."""
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise ValidationFailed("malformed JSON: nested too deeply (arrays and objects inside each other, "
                                   "about 200 levels at most)", code="INVALID_JSON") from None
        raise ValidationFailed(f"malformed JSON: {exc}", code="INVALID_JSON") from None


async def _read_body(request: web.Request, route: Route, api: ApiRequest) -> Any:
    assert route.body is not None
    limit = route.max_body or request.app.get(MAX_BODY)
    try:  # the app reads up to the largest route's limit: each route holds its body to its own
        raw = await (request.clone(client_max_size=limit) if limit else request).read()
    except web.HTTPRequestEntityTooLarge:
        raise ShepherdError(f"request body too large (limit {limit} bytes)", code="PAYLOAD_TOO_LARGE",
                            status=413) from None
    if not raw.strip():
        raise ValidationFailed("request body must be a JSON object", code="INVALID_JSON")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", code="INVALID_JSON")
    where = _nul_at(data)
    if where is not None:
        raise ValidationFailed(f"{where}: contains a NUL character", code="VALIDATION_ERROR")
    api.data, api.size = data, len(raw)
    try:
        # JSON-mode validation: strict about types ("3" is not 3) yet reads enum values from strings.
        return route.body.model_validate_json(raw)
    except ValidationError as exc:
        raise _field_error(route, exc) from None


def _read_query(request: web.Request, route: Route) -> Any:
    assert route.query is not None
    values = {key: refuse_nul(value, f"query parameter {key}") for key, value in request.query.items()}
    try:
        # Query values are text: validate in lax mode so "50" is the number 50.
        return route.query.model_validate(values, strict=False)
    except ValidationError as exc:
        raise _field_error(route, exc) from None


# --- serving -------------------------------------------------------------------------------------


def _serialize(route: Route, result: Any) -> web.Response:
    headers: Mapping[str, str] = {}
    status = route.status
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, Result):
        headers, status, result = result.headers, result.status or route.status, result.body
    if isinstance(result, Shaped):
        return json_response(result.data, status=status, headers=headers)
    if route.adapter is None or result is None:
        return web.Response(status=status, headers=headers)
    body = route.adapter.dump_json(result, by_alias=True, exclude_none=True)
    return json_response(body, status=status, headers=headers)


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        shepherd = request.app[SHEPHERD]
        principal = await authenticate(request, shepherd) if route.auth else _ANONYMOUS
        for name, value in request.match_info.items():
            refuse_nul(value, f"path segment {{{name}}}")
        api = ApiRequest(http=request, principal=principal, shepherd=shepherd)
        if route.guard is not None:
            await route.guard(api)
        if route.query is not None:
            api.query = _read_query(request, route)
        if route.body is not None:
            api.body = await _read_body(request, route, api)
        return _serialize(route, await route.handler(api))

    return handle


_ANONYMOUS = Principal(org_id="", name="anonymous", scopes=frozenset(), channel="http")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "shepherd_http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "shepherd_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            registry=registry,
        )


_STATUS_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
}


@web.middleware
async def envelope_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every answer is measured, and every failure answers in the envelope."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route_label = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except ShepherdError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "HTTP_ERROR")
        message = "no such endpoint" if exc.status == 404 else exc.reason
        if exc.status == 413:
            limit = request.app.get(MAX_BODY)
            message = f"request body too large (limit {limit} bytes)" if limit else "request body too large"
        response = error_response(exc.status, code, message)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
    except ConnectionResetError:
        # The client went away before we read its request: nobody to answer, nothing to report.
        log.debug("client closed the connection on %s %s", request.method, request.path)
        response = web.Response(status=499)
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("unhandled error on %s %s (ref %s)", request.method, request.path, ref)
        response = error_response(500, "INTERNAL", f"internal error (ref {ref}); it is logged")
    metrics = request.app.get(HTTP_METRICS)
    if metrics is not None:
        metrics.requests.labels(request.method, route_label, str(response.status)).inc()
        metrics.latency.labels(request.method, route_label).observe(time.perf_counter() - started)
    return response


def mount(app: web.Application, routes: list[Route]) -> None:
    for route in routes:
        path = route.path
        for name, pattern in route.patterns.items():
            path = path.replace(f"{{{name}}}", f"{{{name}:{pattern}}}")
        app.router.add_route(route.method, path, _handler(route), name=route.operation_id or None)
