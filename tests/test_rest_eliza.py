"""The Eliza coding-agents API (shared/seeds/000): coordinator status and stop, over real HTTP with real runs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import adapters.rest.eliza
from core.clock import utcnow
from core.store.models import RunnerNode, Task
from tests.test_rest_coder import Rig, served

STATUS = "/api/coding-agents/coordinator/status"
TASK_FIELDS = {"sessionId", "agentType", "label", "originalTask", "workdir", "status", "decisionCount",
               "autoResolvedCount"}


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path) as r:
        yield r


@pytest.fixture
async def idle(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def test_status_maps_every_task_status_and_stop_cancels(rig: Rig) -> None:
    status, body = await rig.call("GET", STATUS)
    assert (status, body) == (200, {"supervisionLevel": "suggest", "taskCount": 0, "pendingConfirmations": 0,
                                    "tasks": []})

    completed = await rig.create("quick", display_name="Quick one")
    failed = await rig.create("broken [fail]")
    paused = await rig.create("to pause [long 30]")
    running = await rig.create("keeps going [long 30]")
    stopped = await rig.create("to stop [long 30]")
    await rig.done(completed["id"])
    await rig.done(failed["id"])
    for task in (paused, running, stopped):
        await rig.printed(task["id"], "tick 1")
    assert (await rig.call("POST", f"/api/v2/tasks/me/{paused['id']}/pause"))[0] == 202
    await rig.until(paused["id"], lambda t: t["status"] == "paused")

    status, body = await rig.call("POST", f"/api/coding-agents/{stopped['id']}/stop")
    assert (status, body) == (200, {"ok": True})
    assert (await rig.get(stopped["id"]))["workspace_status"] == "canceled", "cancelled when stop returns"
    status, body = await rig.call("POST", f"/api/coding-agents/{stopped['id']}/stop")
    assert (status, body) == (200, {"ok": True}), "stopping a finished task is done already"
    status, body = await rig.call("POST", "/api/coding-agents/task-nope/stop")
    assert (status, body["code"]) == (404, "TASK_NOT_FOUND")

    status, body = await rig.call("POST", "/api/agents", {"name": "coord", "type": "coordinator", "autonomyLevel": 3})
    assert status == 201
    status, body = await rig.call("GET", STATUS)
    assert status == 200 and set(body) == {"supervisionLevel", "taskCount", "pendingConfirmations", "tasks"}
    assert (body["supervisionLevel"], body["taskCount"], body["pendingConfirmations"]) == ("act", 5, 0)
    assert all(set(t) == TASK_FIELDS for t in body["tasks"])
    by_id = {t["sessionId"]: t for t in body["tasks"]}
    assert [t["sessionId"] for t in body["tasks"]] == [
        stopped["id"], running["id"], paused["id"], failed["id"], completed["id"]], "newest first"
    assert {name: by_id[t["id"]]["status"] for name, t in (
        ("completed", completed), ("failed", failed), ("paused", paused), ("running", running),
        ("cancelled", stopped))} == {
        "completed": "completed", "failed": "error", "paused": "blocked", "running": "active",
        "cancelled": "stopped"}
    one = by_id[completed["id"]]
    assert (one["agentType"], one["label"], one["originalTask"]) == ("demo", "Quick one", "quick")
    assert one["workdir"] == str(rig.root / "ws" / completed["id"]) and Path(one["workdir"]).is_dir()
    assert (one["decisionCount"], one["autoResolvedCount"]) == (0, 0)

    # Stopping a paused task ends it too.
    assert (await rig.call("POST", f"/api/coding-agents/{paused['id']}/stop")) == (200, {"ok": True})
    assert (await rig.get(paused["id"]))["workspace_status"] == "canceled"
    assert (await rig.call("POST", f"/api/coding-agents/{running['id']}/stop")) == (200, {"ok": True})


async def test_without_a_runner_status_is_empty_and_stop_is_503(idle: Rig) -> None:
    task = await idle.create("waits")
    status, body = await idle.call("GET", STATUS)
    assert (status, body) == (200, {"supervisionLevel": "suggest", "taskCount": 0, "pendingConfirmations": 0,
                                    "tasks": []})
    status, body = await idle.call("POST", f"/api/coding-agents/{task['id']}/stop")
    assert (status, body["code"]) == (503, "RUNNER_UNAVAILABLE") and body["status"] == 503

    # A runner in another process (a fresh heartbeat) makes the orchestrator available.
    async with idle.shepherd.db.write() as session:
        now = utcnow()
        session.add(RunnerNode(id="elsewhere:1", host="elsewhere", pid=os.getpid(), started_at=now,
                               heartbeat_at=now))
    status, body = await idle.call("GET", STATUS)
    assert body["taskCount"] == 1 and body["tasks"][0]["status"] == "active" and body["tasks"][0]["workdir"] == ""
    status, body = await idle.call("POST", f"/api/coding-agents/{task['id']}/stop")
    assert (status, body) == (200, {"ok": True}), "a waiting task is cancelled at once"
    assert (await idle.get(task["id"]))["workspace_status"] == "canceled"


async def test_a_stop_the_runner_never_carries_out_is_a_500(idle: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters.rest.eliza, "STOP_WAIT_S", 0.3)
    task = await idle.create("held by a runner that hangs")
    async with idle.shepherd.db.write() as session:
        now = utcnow()
        session.add(RunnerNode(id="stuck:1", host="stuck", pid=os.getpid(), started_at=now, heartbeat_at=now))
        row = await session.get(Task, task["id"])
        assert row is not None
        row.status, row.state, row.runner_id, row.turns = "running", "working", "stuck:1", 1
        session.add(row)
    status, body = await idle.call("POST", f"/api/coding-agents/{task['id']}/stop")
    assert (status, body["code"], body["status"]) == (500, "CANCEL_FAILED", 500)
    assert "did not stop within 0.3 s" in body["error"]

