"""Bad input never reaches a 5xx, on any route: a pass over the whole route table (the one that serves the API
and describes it) with what broke it before: JSON nested 100,000 deep, bodies that are not UTF-8, NUL bytes in
path segments, query values and body strings (PostgreSQL stores no NUL), on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import update
from sqlmodel import col

from adapters.rest.framework import Route
from bot.app import all_routes
from core.autonomy.questions import new_task_token
from core.people.access import Principal, Role
from core.store.models import Task
from tests.test_confirmations import started_task
from tests.test_rest_coder import Rig, served

ALICE = Principal.for_role("acme", "alice", Role.ADMIN, "console", user_id="user-alice")
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_IN_AN_OBJECT = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
ROUTES = [r for r in all_routes() if r.path not in ("/metrics", "/openapi.json")]
BODY_ROUTES = [r for r in ROUTES if r.body is not None]


def _id(route: Route) -> str:
    return f"{route.method} {route.path}"


def _path(route: Route, value: str = "x") -> str:
    return re.sub(r"{\w+}", value, route.path)


def _no_5xx(route: Route, status: int, body: Any) -> None:
    # a documented 503 (no runner is up to stop a task) is the service's state, not a failure on bad input
    assert status < 500 or (status == 503 and 503 in route.errors), (_id(route), status, body)


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def _task_token(rig: Rig) -> tuple[str, str]:
    """A running task and its callback token, as `shepherd ask` holds it."""
    task = await started_task(rig.shepherd, ALICE, status="running")
    token, digest = new_task_token()
    async with rig.shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == task.id).values(callback_hash=digest))
    return task.id, token


async def test_json_nested_100k_deep_is_a_400_on_every_json_route(rig: Rig) -> None:
    task_id, task_token = await _task_token(rig)
    for route in BODY_ROUTES:
        path = _path(route, task_id if "{taskId}" in route.path else "x")
        headers = {"Authorization": f"Bearer {task_token}"} if route.guard else None
        for raw in (DEEP, DEEP_IN_AN_OBJECT):
            status, body = await rig.call(route.method, path + "?format=agentapi", raw=raw, headers=headers)
            assert (status, body["code"]) == (400, "INVALID_JSON"), (_id(route), status, body)
            assert "nested too deeply" in body["error"], body


async def test_the_task_token_routes_authenticate_before_they_parse(rig: Rig) -> None:
    task_id, _ = await _task_token(rig)
    for route in [r for r in ROUTES if r.guard is not None]:
        path = _path(route, task_id)
        for headers in ({}, {"Authorization": f"Bearer {rig.token}"}, {"Authorization": "Bearer sht_forged"}):
            for raw in (DEEP, b"\xff\xfe not json"):
                status, body = await rig.call(route.method, path + "?wait=nope", raw=raw, headers=dict(headers))
                assert status == 401, (_id(route), headers, status, body)
                assert body["code"] in ("UNAUTHORIZED", "INVALID_TASK_TOKEN"), body


@pytest.mark.parametrize("raw, fragment", [
    (b'{"name": "\xff\xfe"}', "malformed JSON"),            # not UTF-8
    (b'{"name": "\\ud800"}', "malformed JSON"),             # a lone surrogate: no store can keep it
    (b'{"level": NaN}', "malformed JSON"),
    (b"\x00", "malformed JSON"),
    (b"[1, 2]", "must be a JSON object"),
])
async def test_malformed_bodies_are_invalid_json_on_every_json_route(rig: Rig, raw: bytes, fragment: str) -> None:
    task_id, task_token = await _task_token(rig)
    for route in BODY_ROUTES:
        path = _path(route, task_id if "{taskId}" in route.path else "x")
        headers = {"Authorization": f"Bearer {task_token}"} if route.guard else None
        status, body = await rig.call(route.method, path + "?format=agentapi", raw=raw, headers=headers)
        assert (status, body["code"]) == (400, "INVALID_JSON"), (_id(route), status, body)
        assert fragment in body["error"], body


async def test_a_nul_anywhere_in_a_body_is_refused_with_where_it_is(rig: Rig) -> None:
    task_id, task_token = await _task_token(rig)
    for route in BODY_ROUTES:
        path = _path(route, task_id if "{taskId}" in route.path else "x")
        headers = {"Authorization": f"Bearer {task_token}"} if route.guard else None
        for raw, where in ((b'{"name": "a\\u0000b"}', "name"), (b'{"x": {"deep": ["ok", "\\u0000"]}}', "x.deep[1]"),
                           (b'{"ke\\u0000y": 1}', "ke\\x00y")):
            status, body = await rig.call(route.method, path + "?format=agentapi", raw=raw, headers=headers)
            assert (status, body["code"]) == (400, "VALIDATION_ERROR"), (_id(route), status, body)
            assert body["error"].startswith(where) and "NUL" in body["error"], body


async def test_a_nul_in_a_path_segment_or_a_query_value_is_a_400_on_every_route(rig: Rig) -> None:
    task_id, task_token = await _task_token(rig)
    for route in ROUTES:
        if "{" in route.path:
            status, body = await rig.call(route.method, _path(route, "a%00b"), {})
            assert (status, body["code"]) == (400, "VALIDATION_ERROR"), (_id(route), status, body)
            assert "NUL" in body["error"] and "path segment" in body["error"], body
        if route.query is not None:
            path = _path(route, task_id if "{taskId}" in route.path else "x")
            headers = {"Authorization": f"Bearer {task_token}"} if route.guard else None
            for name, field in route.query.model_fields.items():
                key = field.alias or name
                status, body = await rig.call(route.method, f"{path}?{key}={quote('a')}%00b", {}, headers=headers)
                assert (status, body["code"]) == (400, "VALIDATION_ERROR"), (_id(route), key, status, body)
                assert f"query parameter {key}" in body["error"], body


async def test_nothing_odd_sent_anywhere_answers_5xx(rig: Rig) -> None:
    """The sweep: every route, every odd body, with and without a token: a 4xx (or the route's answer)."""
    odd = [DEEP, b"", b"{}", b"null", b"\xff", b'{"a": "\\u0000"}', b'"\\ud83d"', b"{" * 1000, b"1e999999"]
    for route in ROUTES:
        for raw in odd:
            for headers in (None, {}):
                status, body = await rig.call(route.method, _path(route, "%00") + "?q=%00&limit=%00", raw=raw,
                                              headers=headers)
                _no_5xx(route, status, body)
                status, body = await rig.call(route.method, _path(route, "x%FF%ED%A0%80"), raw=raw, headers=headers)
                _no_5xx(route, status, body)
