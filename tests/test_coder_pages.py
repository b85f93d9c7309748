"""Coder's task list and log pages read only the page: a status filter merges each status's newest rows (and
must still answer newest first across them), and a long log comes a page at a time by its entries' ids. The
answers, built by hand from rows, must be what the documented models say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update
from sqlmodel import col, select

from adapters.rest.coder import STATUS, CoderStatus, CoderTask, TaskLogs, TasksList
from bot.app import create_app
from bot.presets import agent_catalog
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Task, TaskLog, table_of
from tests.test_rest_codespar import Api, _token

# Statuses set straight in the store: these tests are about reading, and no runner needs to move them.
MIX = ["completed", "running", "failed", "awaiting", "completed", "paused", "cancelled", "running", "queued"]


@pytest.fixture
async def coder(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Api, Shepherd]]:
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=tmp_path / "ws")
    await shepherd.orgs.ensure("acme")
    client = TestClient(TestServer(create_app(db_url, shepherd=shepherd)))
    await client.start_server()
    yield Api(client, await _token(db_url, "acme", "read,write,approve,admin")), shepherd
    await client.close()
    await db.dispose()


async def _tasks(api: Api, shepherd: Shepherd, n: int) -> list[str]:
    ids = []
    for i in range(n):
        status, body = await api.call("POST", "/api/v2/tasks/me", {"input": f"job {i}"})
        assert status == 201, body
        CoderTask.model_validate(body, strict=False)
        ids.append(body["id"])
    tasks = table_of(Task)
    async with shepherd.db.write() as session:
        conn = await session.connection()
        for i, task_id in enumerate(ids):
            await conn.execute(update(tasks).where(tasks.c.id == task_id).values(status=MIX[i % len(MIX)]))
    return ids


async def test_a_status_filter_lists_the_newest_of_every_matching_status_in_order(
        coder: tuple[Api, Shepherd]) -> None:
    api, shepherd = coder
    await _tasks(api, shepherd, 20)
    async with shepherd.db.read() as session:
        newest_first = list(await session.exec(
            select(Task.id, Task.status).order_by(col(Task.created_at).desc(), col(Task.id).desc())))
    for word in ("active", "pending", "error", "paused", "initializing"):
        status, body = await api.call("GET", f"/api/v2/tasks?q=status:{word}")
        assert status == 200, body
        TasksList.model_validate(body, strict=False)
        wanted = [i for i, s in newest_first if STATUS[s].value == word]  # type: ignore[index]
        assert [t["id"] for t in body["tasks"]] == wanted and body["count"] == len(wanted), word
    status, body = await api.call("GET", "/api/v2/tasks")
    assert [t["id"] for t in body["tasks"]] == [i for i, _ in newest_first]
    assert CoderStatus.ACTIVE.value in {t["status"] for t in body["tasks"]}


async def _log(shepherd: Shepherd, task_id: str, n: int) -> None:
    async with shepherd.db.write() as session:
        for i in range(n):
            session.add(TaskLog(task_id=task_id, type="input" if i % 5 == 0 else "output", content=f"line {i}"))


async def _walk(api: Api, path: str) -> tuple[list[str], int]:
    contents: list[str] = []
    pages = 0
    while True:
        async with api.client.get(path, headers={"Authorization": f"Bearer {api.token}"}) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
            TaskLogs.model_validate(body, strict=False)
            assert body["snapshot"] is False and "snapshot_at" not in body
            contents += [e["content"] for e in body["logs"]]
            pages += 1
            if "Link" not in resp.headers:
                assert "X-Next-Cursor" not in resp.headers
                return contents, pages
            path = resp.headers["Link"][1:resp.headers["Link"].index(">")]


async def test_a_long_log_comes_a_page_at_a_time_in_order(coder: tuple[Api, Shepherd]) -> None:
    api, shepherd = coder
    first, second = await _tasks(api, shepherd, 2)
    await _log(shepherd, first, 12)
    await _log(shepherd, second, 5)  # interleaved ids of another task's log are no part of this one
    await _log(shepherd, first, 13)
    everything = [f"line {i}" for i in range(12)] + [f"line {i}" for i in range(13)]
    path = f"/api/v2/tasks/me/{first}/logs"
    assert await _walk(api, path) == (everything, 1), "without a limit: every entry, one page"
    assert await _walk(api, path + "?limit=10") == (everything, 3)
    status, body = await api.call("GET", path + "?limit=10")
    after = body["logs"][-1]["id"]
    status, body = await api.call("GET", path + f"?after_id={after}&limit=100")
    assert [e["content"] for e in body["logs"]] == everything[10:]
    for bad in ("?limit=0", "?limit=10001", "?after_id=-1", "?cursor=abc"):
        status, body = await api.call("GET", path + bad)
        assert (status, body["code"]) == (400, "VALIDATION_ERROR"), bad
