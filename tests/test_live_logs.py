"""A Coder task's logs followed live (`GET /api/v2/tasks/{user}/{task}/logs?follow=true`): Server-Sent Events read
by aiohttp's client while the demo agent prints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sse import events
from tests.test_rest_coder import ME, Rig, served


@pytest.fixture
async def rig(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(sqlite_url, tmp_path) as r:  # the follow's poll stays at its default: output wakes it
        yield r


async def test_logs_follow_shows_lines_as_they_are_written_and_ends_with_the_status(rig: Rig) -> None:
    task = await rig.create("count [long 1.5] [noedit]")
    headers = {"Authorization": f"Bearer {rig.token}"}
    async with rig.client.get(f"{ME}/{task['name']}/logs", params={"follow": "true"}, headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        got = []
        live = False
        async for event in events(resp):
            got.append(event)
            if event.event == "log" and event.data["content"].startswith("tick") and not live:
                # the line arrived while the agent was still working: followed, not read afterwards
                live = (await rig.get(task["id"]))["current_state"]["state"] == "working"
    assert live
    logs = [e for e in got if e.event == "log"]
    assert logs[0].data["type"] == "input" and logs[0].data["content"] == "count [long 1.5] [noedit]"
    assert [int(e.id or 0) for e in logs] == sorted({int(e.id or 0) for e in logs}), "each entry once, in order"
    assert {"id", "content", "time", "type"} == set(logs[1].data)
    end = got[-1]
    assert end.event == "end" and end.data["state"] == "complete" and end.data["outcome"] == "succeeded"
    # the same entries as the JSON answer, which stays as it was without follow
    assert [e.data for e in logs] == (await rig.logs(task["id"]))["logs"]


async def test_following_a_finished_task_gives_its_log_and_ends_at_once(rig: Rig) -> None:
    task = await rig.create("done [noedit]")
    await rig.done(task["id"])
    headers = {"Authorization": f"Bearer {rig.token}"}
    async with rig.client.get(f"{ME}/{task['id']}/logs?follow=true&after_id=0", headers=headers) as resp:
        got = [e async for e in events(resp)]
    assert got[-1].event == "end" and got[-1].data["status"] == "active" and got[-1].data["state"] == "complete"
    assert any(e.event == "log" and "reading the prompt" in e.data["content"] for e in got)
    # a client resuming from the last entry it had gets no entry again, only the end
    last = max(int(e.id or 0) for e in got if e.event == "log")
    async with rig.client.get(f"{ME}/{task['id']}/logs?follow=true&after_id={last}", headers=headers) as resp:
        resumed = [e async for e in events(resp)]
    assert [e.event for e in resumed] == ["end"], resumed
    status, body = await rig.call("GET", f"{ME}/nope/logs?follow=true")
    assert status == 404 and body["code"] == "TASK_NOT_FOUND"
