"""/openapi.json, derived from the route table that serves requests, so the two cannot drift."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from adapters.rest.framework import ErrorEnvelope, Route

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    400: "Malformed JSON or invalid fields", 401: "Missing or invalid token", 403: "Not allowed (scope or org)",
    404: "Not found", 409: "Conflicts with the current state", 413: "Request body too large",
    503: "Not ready",
}


def _schemas(routes: list[Route]) -> tuple[dict[tuple[int, str], Any], dict[str, Any]]:
    """JSON schemas of every model the routes use, keyed by (route index, role)."""
    items: list[tuple[tuple[int, str], TypeAdapter[Any], Any]] = []
    for i, route in enumerate(routes):
        if route.body is not None:
            items.append(((i, "body"), TypeAdapter(route.body), "validation"))
        if route.query is not None:
            items.append(((i, "query"), TypeAdapter(route.query), "validation"))
        if route.adapter is not None:
            items.append(((i, "response"), route.adapter, "serialization"))
    items.append(((-1, "error"), TypeAdapter(ErrorEnvelope), "serialization"))
    keyed, defs = _adapters_json_schema(items)
    return keyed, defs


def _adapters_json_schema(
    items: list[tuple[tuple[int, str], TypeAdapter[Any], Any]],
) -> tuple[dict[tuple[int, str], Any], dict[str, Any]]:
    # TypeAdapter.json_schemas builds one shared set of definitions for many types.
    schemas, top = TypeAdapter.json_schemas(
        [(key, mode, adapter) for key, adapter, mode in items], ref_template=_REF
    )
    return {key: schema for (key, _mode), schema in schemas.items()}, top.get("$defs", {})


def _parameters(route: Route, query: dict[str, Any] | None) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if query is not None:
        required = set(query.get("required", []))
        for name, prop in query.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if route.auth:
        params.append({
            "name": "x-org-id", "in": "header", "required": False,
            "description": "Must equal the token's org when sent", "schema": {"type": "string"},
        })
    return params


def _deref(schema: dict[str, Any] | None, defs: dict[str, Any]) -> dict[str, Any] | None:
    if schema is not None and "$ref" in schema:
        return defs[schema["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    return schema


def build_openapi(routes: list[Route], *, title: str, version: str) -> dict[str, Any]:
    keyed, defs = _schemas(routes)
    error = keyed[(-1, "error")]
    paths: dict[str, dict[str, Any]] = {}
    for i, route in enumerate(routes):
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": route.summary}
        if (i, "response") in keyed:
            ok["content"] = {"application/json": {"schema": keyed[(i, "response")]}}
        if route.produces != "application/json":  # with a response model too: a page, or followed as a stream
            # a stream's events each carry a JSON document as their data (schemathesis checks every event's data
            # against this schema: a plain `string` refused them all)
            streamed = route.produces == "text/event-stream"
            ok.setdefault("content", {})[route.produces] = {"schema": (
                {"description": "Server-Sent Events: each event's data is a JSON document"} if streamed
                else {"type": "string"})}
        responses[str(route.status)] = ok
        for status in route.errors:
            responses[str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": error}},
            }
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.operation_id or f"{route.method.lower()}{route.path}",
            "tags": [route.tag],
            "parameters": _parameters(route, _deref(keyed.get((i, "query")), defs)),
            "responses": responses,
        }
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": keyed[(i, "body")]}}}
        op["security"] = [{"bearer": []}, {"apiKey": []}] if route.auth else []
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
