"""The Coder AI Tasks API (shared/seeds/001) over real HTTP, with tasks run for real by the demo agent."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.rest.coder import template_version_id
from bot.app import create_app
from bot.presets import agent_catalog
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Task
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.test_tasks import supervisor

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SEED_TASK_FIELDS = {
    "created_at", "current_state", "display_name", "id", "initial_prompt", "name", "organization_id",
    "owner_avatar_url", "owner_id", "owner_name", "status", "template_display_name", "template_icon",
    "template_id", "template_name", "template_version_id", "updated_at", "workspace_agent_health",
    "workspace_agent_id", "workspace_agent_lifecycle", "workspace_app_id", "workspace_build_number",
    "workspace_id", "workspace_name", "workspace_status",
}
# Shepherd's additions to Coder's task: its budget and what it used of it (issue 17)
BUDGET_FIELDS = {"max_turns", "max_minutes", "max_cost", "turns", "run_minutes", "cost_usd"}
TASK_FIELDS = SEED_TASK_FIELDS | BUDGET_FIELDS
ME = "/api/v2/tasks/me"


class Rig:
    """A served app over a real store, optionally with a running supervisor, and an admin token of acme."""

    def __init__(self, client: TestClient, shepherd: Shepherd, token: str, root: Path) -> None:
        self.client = client
        self.shepherd = shepherd
        self.token = token
        self.root = root
        self.supervisor: TaskSupervisor | None = None

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        h = headers if headers is not None else {"Authorization": f"Bearer {token or self.token}"}
        kwargs: dict[str, Any] = {"headers": h}
        if raw is not None:
            kwargs["data"] = raw
            h.setdefault("Content-Type", "application/json")
        elif body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def start_runner(self, **config: Any) -> None:
        cfg = replace(RunnerConfig(workspace_root=self.root / "ws", poll_s=0.1, flush_s=0.05, idle_timeout_s=30,
                                   hard_timeout_s=60, max_tasks=8), **config)
        self.supervisor = supervisor(self.shepherd, cfg)
        await self.supervisor.start()

    async def token_for(self, org: str, scopes: str = "read,write,approve,admin") -> str:
        """A token acting for a person of that name (an API token of nobody may not approve)."""
        return (await self.shepherd.tokens.create(org_id=org, user=f"{org}-{scopes}", scopes=scopes)).secret

    async def create(self, prompt: str, user: str = "me", **fields: Any) -> dict[str, Any]:
        status, body = await self.call("POST", f"/api/v2/tasks/{user}", {"input": prompt, "agent": "demo", **fields})
        assert status == 201, body
        return dict(body)

    async def get(self, ref: str, user: str = "me") -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v2/tasks/{user}/{ref}")
        assert status == 200, body
        return dict(body)

    async def until(self, ref: str, test: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        """Poll GET until `test` holds, as a client would."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            task = await self.get(ref)
            if test(task):
                return task
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gave up waiting: {task['status']} {task['current_state']}")
            await asyncio.sleep(0.05)

    async def done(self, ref: str) -> dict[str, Any]:
        return await self.until(ref, lambda t: t["current_state"]["state"] in ("complete", "failed")
                                and t["status"] != "pending")

    async def logs(self, ref: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"{ME}/{ref}/logs")
        assert status == 200, body
        return dict(body)

    async def printed(self, ref: str, text: str, timeout: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(text in e["content"] for e in (await self.logs(ref))["logs"] if e["type"] == "output"):
            assert asyncio.get_running_loop().time() < deadline, f"{text!r} never printed"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def served(db_url: str, root: Path, *, runner: bool = True, app_keys: dict[Any, Any] | None = None,
                 **config: Any) -> AsyncIterator[Rig]:
    """The app with a core of its own, a token for acme and (`runner`) a runner; `app_keys` set on the app first
    (a live stream's poll and heartbeat, made short)."""
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=root / "ws")
    await shepherd.orgs.ensure("acme")
    app = create_app(db_url, shepherd=shepherd)
    for key, value in (app_keys or {}).items():
        app[key] = value
    client = TestClient(TestServer(app))
    await client.start_server()
    rig = Rig(client, shepherd, "", root)
    rig.token = await rig.token_for("acme")
    try:
        if runner:
            await rig.start_runner(**config)
        yield rig
    finally:
        if rig.supervisor is not None:
            await rig.supervisor.stop()
        await client.close()
        await db.dispose()


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path) as r:
        yield r


@pytest.fixture
async def idle(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """No runner yet: tasks stay pending until the test starts one."""
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def test_create_get_list_with_the_seed_fields(rig: Rig) -> None:
    created = await rig.create("write the docs", display_name="Docs")
    assert set(created) == TASK_FIELDS
    assert created["initial_prompt"] == "write the docs" and created["display_name"] == "Docs"
    assert created["status"] in ("pending", "initializing", "active")
    assert created["organization_id"] == "acme" and created["owner_name"] == "acme-read,write,approve,admin"
    assert created["owner_id"].startswith("user-") and created["owner_avatar_url"] == "", "the token's person"
    assert created["template_name"] == "demo" and created["template_display_name"].startswith("Shepherd demo agent")
    assert UUID.match(created["template_id"]) and created["template_version_id"] == template_version_id("demo")
    assert created["template_id"] != created["template_version_id"] and created["template_icon"] == ""
    assert created["workspace_id"] == {"uuid": created["id"], "valid": True}
    assert created["workspace_name"] == f"shepherd-{created['name']}"
    assert created["workspace_agent_id"]["valid"] is True and created["workspace_agent_id"]["uuid"]
    assert created["workspace_app_id"] == {"uuid": "", "valid": False}
    assert ISO.match(created["created_at"]) and ISO.match(created["updated_at"])
    assert ISO.match(created["current_state"]["timestamp"]) and created["current_state"]["uri"] == ""

    done = await rig.done(created["id"])
    assert done["status"] == "active", "a finished task keeps its workspace and takes follow-ups"
    assert done["current_state"]["state"] == "complete" and done["workspace_build_number"] == 1
    assert (done["workspace_status"], done["workspace_agent_lifecycle"]) == ("running", "ready")
    assert done["workspace_agent_health"] == {"healthy": True, "reason": ""}
    assert await rig.get(created["name"]) == done, "by name as by id"

    named = await rig.create("second [fail]", name="second-one", template_version_id=done["template_version_id"])
    assert named["name"] == "second-one" and named["template_name"] == "demo"
    failed = await rig.done("second-one")
    assert (failed["status"], failed["current_state"]["state"]) == ("error", "failed")
    assert (failed["workspace_status"], failed["workspace_agent_lifecycle"]) == ("failed", "off")
    assert failed["workspace_agent_health"]["healthy"] is False and failed["workspace_agent_health"]["reason"]

    async def listed(q: str | None) -> list[str]:
        status, body = await rig.call("GET", "/api/v2/tasks" + (f"?q={quote(q)}" if q is not None else ""))
        assert status == 200, body
        assert set(body) == {"count", "tasks"} and body["count"] == len(body["tasks"])
        assert all(set(t) == TASK_FIELDS for t in body["tasks"])
        return [t["name"] for t in body["tasks"]]

    both = ["second-one", created["name"]]
    assert await listed(None) == both, "newest first"
    assert await listed("owner:me") == both
    assert await listed("owner:acme-read,write,approve,admin") == both
    assert await listed("owner:me status:active") == [created["name"]]
    assert await listed("status:error") == ["second-one"]
    assert await listed("status:paused") == [] and await listed("status:unknown") == []
    assert await listed("organization:acme status:active") == [created["name"]]
    assert await listed("organization:globex") == []
    assert await listed("owner:somebody-else") == []


@pytest.mark.parametrize("q", ["owner", "owner:", ":me", "colour:red", "status:running", "owner:me owner:you",
                               "free text"])
async def test_a_malformed_query_is_a_400_that_says_why(idle: Rig, q: str) -> None:
    status, body = await idle.call("GET", f"/api/v2/tasks?q={quote(q)}")
    assert status == 400 and body["code"] == "INVALID_QUERY" and body["error"].startswith("q: ")
    assert set(body) == {"error", "code", "status"} and body["status"] == 400


async def test_the_user_segment_must_be_the_owner_and_other_orgs_see_nothing(idle: Rig) -> None:
    task = await idle.create("mine")
    for path in (f"/api/v2/tasks/nobody/{task['id']}", f"{ME}/task-nope", f"/api/v2/tasks/nobody/{task['id']}/logs"):
        status, body = await idle.call("GET", path)
        assert (status, body["code"]) == (404, "TASK_NOT_FOUND"), path
    status, _ = await idle.call("POST", f"/api/v2/tasks/nobody/{task['id']}/send", {"input": "hi"})
    assert status == 404
    globex = await idle.token_for("globex")
    for method, path in (("GET", f"{ME}/{task['id']}"), ("GET", f"{ME}/{task['name']}/logs"),
                         ("DELETE", f"{ME}/{task['id']}"), ("POST", f"{ME}/{task['id']}/pause")):
        assert (await idle.call(method, path, token=globex))[0] == 404, path
    status, body = await idle.call("GET", "/api/v2/tasks?q=owner:me", token=globex)
    assert (status, body) == (200, {"count": 0, "tasks": []})

    # Tasks for another user: by name or id, with the admin scope only.
    alice = await idle.shepherd.users.principal_for("acme", "slack", "U1", display_name="alice",
                                                    default_role=Role.OPERATOR)
    theirs = await idle.create("for alice", user="alice")
    assert (theirs["owner_id"], theirs["owner_name"]) == (alice.user_id, "alice")
    assert (await idle.get(theirs["id"], user="alice"))["id"] == theirs["id"]
    assert (await idle.get(theirs["id"], user=alice.user_id or ""))["id"] == theirs["id"]
    assert (await idle.call("GET", f"{ME}/{theirs['id']}"))[0] == 404
    status, body = await idle.call("GET", "/api/v2/tasks?q=owner:alice")
    assert [t["id"] for t in body["tasks"]] == [theirs["id"]]
    writer = await idle.token_for("acme", "read,write")
    status, body = await idle.call("POST", "/api/v2/tasks/alice", {"input": "x", "agent": "demo"}, token=writer)
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")
    status, body = await idle.call("POST", "/api/v2/tasks/bob", {"input": "x", "agent": "demo"})
    assert (status, body["code"]) == (404, "USER_NOT_FOUND")


async def test_create_validates_its_body(idle: Rig) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "INVALID_PROMPT"),
        ({"input": ""}, "INVALID_PROMPT"),
        ({"input": 3}, "INVALID_PROMPT"),
        ({"input": "x", "name": "Not A Name"}, "INVALID_NAME"),
        ({"input": "x", "agent": "nope"}, "UNKNOWN_AGENT"),
        ({"input": "x", "template_version_id": "0ba39c92-1f1b-4c32-aa3e-9925d7713eb1"}, "UNKNOWN_TEMPLATE_VERSION"),
        ({"input": "x", "agent": "claude", "template_version_id": template_version_id("demo")}, "AGENT_MISMATCH"),
        ({"input": "x", "repo": "not a repo"}, "INVALID_REPO"),
        ({"input": "x", "branch": "a..b"}, "INVALID_BRANCH"),
        ({"input": "x", "project": "nope"}, "PROJECT_NOT_FOUND"),
    ]
    for body, code in cases:
        status, got = await idle.call("POST", ME, body)
        assert got["code"] == code and status in (400, 404), (body, got)
    await idle.create("taken", name="taken")
    status, got = await idle.call("POST", ME, {"input": "again", "name": "taken"})
    assert (status, got["code"]) == (409, "TASK_EXISTS")
    created = await idle.create("with extras", template_version_preset_id="512a53a7-30da-446e-a1fc-713c630baff1",
                                repo="acme/api", branch="main")
    assert created["status"] == "pending" and created["workspace_status"] == "pending"
    assert created["workspace_agent_lifecycle"] == "created"
    assert created["workspace_agent_health"] == {
        "healthy": False, "reason": "agent has not started: the task waits for a runner"}


async def test_input_changes_before_the_start_and_follow_ups_after(idle: Rig) -> None:
    task = await idle.create("first idea")
    url = f"{ME}/{task['id']}"
    status, body = await idle.call("PATCH", f"{url}/input", {"input": "better idea"})
    assert (status, body) == (204, "")
    assert (await idle.get(task["id"]))["initial_prompt"] == "better idea"
    status, body = await idle.call("PATCH", f"{url}/input", {"input": ""})
    assert (status, body["code"]) == (400, "INVALID_INPUT")
    status, body = await idle.call("POST", f"{url}/send", {"input": "too early"})
    assert (status, body["code"]) == (409, "TASK_NOT_STARTED")
    for action in ("pause", "resume"):
        assert (await idle.call("POST", f"{url}/{action}"))[0] == 409, action

    await idle.start_runner()
    done = await idle.done(task["id"])
    assert done["current_state"]["state"] == "complete"
    status, body = await idle.call("PATCH", f"{url}/input", {"input": "too late"})
    assert (status, body["code"]) == (409, "TASK_STARTED")
    for action, code in (("pause", "TASK_NOT_RUNNING"), ("resume", "TASK_NOT_PAUSED")):
        status, body = await idle.call("POST", f"{url}/{action}")
        assert (status, body["code"]) == (409, code)

    assert (await idle.call("POST", f"{url}/send", {"input": "one more thing"}))[0] == 204
    second = await idle.until(task["id"], lambda t: t["workspace_build_number"] == 2
                              and t["current_state"]["state"] == "complete")
    assert second["status"] == "active"
    logs = (await idle.logs(task["id"]))["logs"]
    assert [e["content"] for e in logs if e["type"] == "input"] == ["better idea", "one more thing"]


async def test_pause_send_resume_and_the_queued_follow_up(rig: Rig) -> None:
    task = await rig.create("count [long 3]")
    url = f"{ME}/{task['id']}"
    await rig.printed(task["id"], "tick 1")
    assert (await rig.get(task["id"]))["status"] == "active"
    assert (await rig.call("POST", f"{url}/send", {"input": "and then this"}))[0] == 204, "queued while busy"

    status, body = await rig.call("POST", f"{url}/pause")
    assert status == 202 and set(body) == {"workspace_build"}
    build = body["workspace_build"]
    assert {"id", "build_number", "created_at", "status", "transition", "workspace_id", "workspace_name",
            "workspace_owner_id", "workspace_owner_name", "initiator_id", "initiator_name", "reason",
            "template_version_id"} <= set(build)
    assert (build["transition"], build["reason"], build["workspace_id"]) == ("stop", "initiator", task["id"])
    assert build["status"] in ("stopping", "stopped") and build["build_number"] == 1 and UUID.match(build["id"])
    assert build["initiator_name"] == build["workspace_owner_name"] == task["owner_name"]
    paused = await rig.until(task["id"], lambda t: t["status"] == "paused")
    assert (paused["workspace_status"], paused["workspace_agent_lifecycle"]) == ("stopped", "off")
    assert paused["current_state"]["state"] == "idle"
    status, body = await rig.call("POST", f"{url}/pause")
    assert (status, body["code"]) == (409, "TASK_NOT_RUNNING"), "pausing a paused task is refused, as Coder does"
    status, body = await rig.call("POST", f"{url}/send", {"input": "hello?"})
    assert (status, body["code"]) == (409, "TASK_PAUSED")

    # Pausing kept a snapshot of the last messages, and logs answers from it while paused.
    logs = await rig.logs(task["id"])
    assert logs["snapshot"] is True and ISO.match(logs["snapshot_at"])
    entries = logs["logs"]
    assert [e["type"] for e in entries] == ["input", "output"], "the prompt, then one message of what it printed"
    assert entries[0]["content"] == "count [long 3]" and "tick 1" in entries[1]["content"]
    assert all(set(e) == {"id", "content", "time", "type"} and ISO.match(e["time"]) for e in entries)
    async with rig.shepherd.db.read() as session:
        stored = await session.get(Task, task["id"])
    assert stored is not None and stored.log_snapshot is not None
    assert [m["role"] for m in stored.log_snapshot["messages"]] == ["user", "agent"], "agentapi's shape"
    # A workspace agent's own upload replaces it.
    snap = f"/api/v2/workspaceagents/me/tasks/{task['id']}/log-snapshot?format=agentapi"
    message = {"id": 0, "role": "agent", "content": "uploaded", "time": "2026-01-02T03:04:05Z"}
    assert (await rig.call("POST", snap, {"messages": [message]}))[0] == 204
    logs = await rig.logs(task["id"])
    assert logs["snapshot"] is True and logs["logs"] == [
        {"id": 0, "content": "uploaded", "time": "2026-01-02T03:04:05Z", "type": "output"}]

    status, body = await rig.call("POST", f"{url}/resume")
    assert status == 202 and body["workspace_build"]["transition"] == "start"
    assert body["workspace_build"]["status"] in ("starting", "running")
    await rig.until(task["id"], lambda t: t["status"] == "active")
    status, body = await rig.call("POST", f"{url}/resume")
    assert (status, body["code"]) == (409, "TASK_NOT_PAUSED"), "resuming a running task is refused"
    done = await rig.until(task["id"], lambda t: t["workspace_build_number"] == 2
                           and t["current_state"]["state"] == "complete", timeout=30)
    assert done["status"] == "active"
    logs = await rig.logs(task["id"])
    assert logs["snapshot"] is False, "a snapshot counts only while paused"
    entries = logs["logs"]
    assert [e["content"] for e in entries if e["type"] == "input"] == ["count [long 3]", "and then this"]
    assert entries[0]["type"] == "input" and entries[1]["type"] == "output"
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    assert len({e["id"] for e in entries}) == len(entries) and all(isinstance(e["id"], int) for e in entries)
    assert all(set(e) == {"id", "content", "time", "type"} and ISO.match(e["time"]) for e in entries)
    assert any("answer" in e["content"] or "turn 2" in e["content"] for e in entries if e["type"] == "output")


async def test_delete_answers_202_then_the_task_is_gone(rig: Rig) -> None:
    quick = await rig.create("quick")
    await rig.done(quick["id"])
    status, body = await rig.call("DELETE", f"{ME}/{quick['id']}")
    assert (status, body) == (202, "")
    assert (await rig.call("GET", f"{ME}/{quick['id']}"))[0] == 404
    assert (await rig.call("DELETE", f"{ME}/{quick['id']}"))[0] == 404

    busy = await rig.create("busy [long 30]")
    await rig.printed(busy["id"], "tick 1")
    assert (await rig.call("DELETE", f"{ME}/{busy['name']}"))[0] == 202
    deadline = asyncio.get_running_loop().time() + 15
    while (await rig.call("GET", f"{ME}/{busy['id']}"))[0] != 404:
        assert asyncio.get_running_loop().time() < deadline, "a running task is stopped, then deleted"
        await asyncio.sleep(0.05)


async def test_log_snapshot_upload(idle: Rig) -> None:
    task = await idle.create("snap")
    base = f"/api/v2/workspaceagents/me/tasks/{task['id']}/log-snapshot"
    status, body = await idle.call("POST", base, {"messages": []})
    assert (status, body["code"]) == (400, "INVALID_FORMAT")
    status, body = await idle.call("POST", f"{base}?format=plain", {"messages": []})
    assert (status, body["code"]) == (400, "INVALID_FORMAT")
    status, body = await idle.call("POST", f"{base}?format=agentapi", raw=b"[1, 2]")
    assert (status, body["code"]) == (400, "INVALID_JSON")
    status, body = await idle.call("POST", f"{base}?format=agentapi", raw=b"{nope")
    assert (status, body["code"]) == (400, "INVALID_JSON")
    message = {"id": 0, "role": "agent", "content": "hello", "time": "2026-01-02T03:04:05Z"}
    for bad in ({}, {"messages": {}}, {"messages": [{**message, "role": "robot"}]}, {"messages": [{"id": 0}]}):
        status, body = await idle.call("POST", f"{base}?format=agentapi", bad)
        assert (status, body["code"]) == (400, "INVALID_SNAPSHOT"), bad
    big = {"messages": [{**message, "content": "x" * 70_000}]}
    status, body = await idle.call("POST", f"{base}?format=agentapi", big)
    assert (status, body["code"]) == (413, "SNAPSHOT_TOO_LARGE")
    status, body = await idle.call("POST", "/api/v2/workspaceagents/me/tasks/task-nope/log-snapshot?format=agentapi",
                                   {"messages": []})
    assert (status, body["code"]) == (404, "TASK_NOT_FOUND")
    status, body = await idle.call("POST", f"{base}?format=agentapi", {"messages": [], "nested": {"a": [1]}})
    assert (status, body) == (204, "")
    async with idle.shepherd.db.read() as session:
        stored = await session.get(Task, task["id"])
    assert stored is not None and stored.log_snapshot == {"messages": [], "nested": {"a": [1]}}
    logs = await idle.logs(task["id"])
    assert logs == {"logs": [], "snapshot": False}, "not paused: no snapshot is shown"
    hostile = {"messages": [{**message, "content": "done\x1b[2J\x07"}]}
    status, body = await idle.call("POST", f"{base}?format=agentapi", hostile)
    assert (status, body["code"]) == (400, "VALIDATION_ERROR") and "messages[0].content" in body["error"]
    # another person's task is not theirs to rewrite (an admin's is: the rig's own token is an admin's)
    someone = await idle.token_for("acme", "read,write")
    status, body = await idle.call("POST", f"{base}?format=agentapi", {"messages": []}, token=someone)
    assert (status, body["code"]) == (404, "TASK_NOT_FOUND")


async def test_coder_session_token_authenticates(idle: Rig) -> None:
    status, body = await idle.call("GET", "/api/v2/tasks", headers={"Coder-Session-Token": idle.token})
    assert (status, body) == (200, {"count": 0, "tasks": []})
    status, body = await idle.call("GET", "/api/v2/tasks", headers={})
    assert status == 401 and "Coder-Session-Token" in body["error"]
    status, body = await idle.call("GET", "/api/v2/tasks", headers={"Coder-Session-Token": "shp_wrong"})
    assert (status, body["code"]) == (401, "INVALID_TOKEN")
