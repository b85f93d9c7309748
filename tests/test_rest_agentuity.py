"""The Agentuity Coder hub's session routes (shared/seeds/002) over real HTTP, tasks run for real by the demo agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.rest.agentuity import CreateSession, HubSession, HubSessionFull, ParticipantOut, RepoOut
from tests.test_rest_coder import ISO, Rig, served

SEED_LIST_FIELDS = {
    "sessionId", "label", "status", "mode", "visibility", "owner", "origin", "repo", "repos", "workspace",
    "sessionKind", "parentSessionId", "coordinationJobId", "workflowMode", "loopStatus", "loopIteration",
    "createdAt", "lastActivityAt", "taskCount", "subAgentCount", "observerCount", "participantCount", "tags",
    "skills", "defaultAgent", "bucket", "runtimeAvailable", "controlAvailable", "manageAvailable",
    "wakeAvailable", "historyOnly", "liveExpected",
}
SEED_FULL_FIELDS = SEED_LIST_FIELDS | {"task", "env", "metadata", "updatedAt"}
SEED_REPO_FIELDS = {"repoId", "type", "provider", "owner", "name", "fullName", "url", "cloneUrl", "defaultBranch",
                    "branch", "ref", "commit", "path", "rootPath"}
SEED_CREATE_FIELDS = {"task", "label", "agent", "visibility", "workflowMode", "loop", "tags", "savedSkillIds",
                      "skillBucketIds", "skills", "repo", "repos", "workspaceId", "env", "metadata"}


@pytest.fixture
async def rig(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(sqlite_url, tmp_path) as r:
        yield r


@pytest.fixture
async def idle(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def _create(rig: Rig, body: dict[str, Any], token: str | None = None) -> str:
    status, created = await rig.call("POST", "/hub/session", body, token=token)
    assert status == 201, created
    return str(created["sessionId"])


async def _until(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await check()):
        assert asyncio.get_running_loop().time() < deadline, "gave up waiting"
        await asyncio.sleep(0.05)
    return found


def test_the_models_name_every_documented_field() -> None:
    """The OpenAPI document comes from these models: they must carry the seed's every key."""
    assert {f.alias or n for n, f in HubSession.model_fields.items()} == SEED_LIST_FIELDS
    assert {f.alias or n for n, f in HubSessionFull.model_fields.items()} == SEED_FULL_FIELDS
    assert {f.alias or n for n, f in RepoOut.model_fields.items()} == SEED_REPO_FIELDS
    assert {f.alias or n for n, f in CreateSession.model_fields.items()} >= SEED_CREATE_FIELDS
    assert {f.alias or n for n, f in ParticipantOut.model_fields.items()} == {
        "id", "role", "transport", "agentRole", "connectedAt", "disconnectedAt", "lastActivityAt", "metadata"}


async def test_create_with_every_field_then_read_it_back(idle: Rig) -> None:
    status, created = await idle.call("POST", "/hub/session", {
        "label": "Auth phase 2", "agent": "demo", "visibility": "organization", "workflowMode": "loop",
        "loop": {"goal": "all auth tests pass", "maxIterations": 3, "autoContinue": False, "allowDetached": True},
        "tags": ["auth", "phase-2", "auth"], "savedSkillIds": ["sk-1"], "skillBucketIds": ["b-1"],
        "skills": [{"skillId": "s1", "repo": "acme/skills", "name": "Lint"}],
        "repo": {"fullName": "acme/api", "owner": "acme", "name": "api", "branch": "dev", "commit": "abc123"},
        "repos": [{"fullName": "acme/web", "ref": "v1"}], "workspaceId": "ws-1", "env": {"TZ": "Europe/Paris"},
        "metadata": {"ticket": "AUTH-7", "nested": {"n": 1}}, "maxTurns": 4, "maxCost": 2.5,
    })
    assert status == 201, created
    assert set(created) == {"sessionId", "sandboxId", "status", "mode", "visibility"}
    assert created["sandboxId"] is None and created["status"] == "active"
    assert (created["mode"], created["visibility"]) == ("loop", "organization")
    sid = created["sessionId"]
    assert sid.startswith("sess_")

    status, got = await idle.call("GET", f"/hub/session/{sid}")
    assert status == 200, got
    assert set(got) == SEED_FULL_FIELDS
    assert got["label"] == "Auth phase 2" and got["defaultAgent"] == "demo" and got["tags"] == ["auth", "phase-2"]
    # a loop session starts its first iteration as it is created: a task of the session, waiting for a runner
    assert got["workflowMode"] == "loop" and got["loopStatus"] == "starting" and got["loopIteration"] == 1
    assert set(got["repo"]) == SEED_REPO_FIELDS and got["repo"]["fullName"] == "acme/api"
    assert got["repo"]["commit"] == "abc123" and got["repo"]["url"] is None, "every key, null where unset"
    assert [r["fullName"] for r in got["repos"]] == ["acme/api", "acme/web"] and got["repos"][1]["ref"] == "v1"
    assert got["skills"] == [{"skillId": "s1", "repo": "acme/skills", "name": "Lint", "url": None}]
    assert got["workspace"] == {"id": "ws-1", "name": "ws-1", "scope": "organization"}
    assert got["env"] == {"TZ": "Europe/Paris"}
    assert got["metadata"] == {"ticket": "AUTH-7", "nested": {"n": 1}, "savedSkillIds": ["sk-1"],
                               "skillBucketIds": ["b-1"]}
    assert got["owner"]["name"] == "acme-read,write,approve,admin" and got["owner"]["userId"].startswith("user-")
    assert got["origin"] == {"channel": "rest"} and got["sessionKind"] == "hub"
    assert got["parentSessionId"] is None and got["coordinationJobId"] is None
    assert got["taskCount"] == 1 and got["bucket"] == "provisioning" and got["historyOnly"] is False
    assert got["participantCount"] == 1 and got["observerCount"] == 0, "its owner, the lead"
    assert got["manageAvailable"] is True and got["controlAvailable"] is True and got["liveExpected"] is True
    assert got["runtimeAvailable"] is False, "no runner is up"
    assert all(ISO.match(got[k]) for k in ("createdAt", "lastActivityAt", "updatedAt"))
    row = await idle.shepherd.sessions.get(await _principal(idle), sid)
    assert (row.max_turns, row.max_cost, row.loop) == (4, 2.5, {"goal": "all auth tests pass", "maxIterations": 3,
                                                                 "autoContinue": False, "allowDetached": True})

    status, page = await idle.call("GET", "/hub/sessions")
    assert status == 200 and set(page) == {"sessions", "total"} and page["total"] == 1
    assert page["sessions"]["sandbox"] == [] and set(page["sessions"]["websocket"][0]) == SEED_LIST_FIELDS


async def _principal(rig: Rig) -> Any:
    return await rig.shepherd.tokens.authenticate(rig.token)


@pytest.mark.parametrize(("body", "code"), [
    ({"env": {"ANTHROPIC_API_KEY": "x"}}, "ENV_SECRET"),
    ({"env": {"SHEPHERD_DATABASE_URL": "sqlite://"}}, "ENV_SECRET"),
    ({"env": {"SLACK_BOT_TOKEN": "xoxb-1"}}, "ENV_SECRET"),
    ({"env": {"TZ": "sk-ant-api03-abcdefghijklmnop"}}, "ENV_SECRET"),
    ({"env": {"LANG": "ghp_abcdefghijklmnopqrstuvwxyz0123"}}, "ENV_SECRET"),
    ({"env": {"TERM": "${SLACK_BOT_TOKEN}"}}, "ENV_SECRET"),
    ({"env": {"LANG": "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="}}, "ENV_SECRET"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "ENV_NOT_ALLOWED"),
    ({"visibility": "public"}, "INVALID_VISIBILITY"),
    ({"workflowMode": "swarm"}, "INVALID_WORKFLOWMODE"),
    ({"loop": {"goal": "x"}}, "INVALID_LOOP"),
    ({"workflowMode": "loop"}, "INVALID_LOOP"),
    ({"tags": [f"t{i}" for i in range(40)]}, "VALIDATION_ERROR"),
    ({"tags": ["x" * 65]}, "INVALID_TAGS"),
    ({"metadata": {"blob": "x" * 20_000}}, "INVALID_METADATA"),
    ({"repo": {"fullName": "acme/api", "colour": "red"}}, "VALIDATION_ERROR"),
    ({"repo": {}}, "INVALID_REPO"),
    ({"agent": "nobody"}, "UNKNOWN_AGENT"),
    ({"maxTurns": 0}, "INVALID_BUDGET"),
    ({"label": "two\nlines"}, "VALIDATION_ERROR"),
])
async def test_bad_fields_are_refused_with_a_clear_400(idle: Rig, body: dict[str, Any], code: str) -> None:
    status, answer = await idle.call("POST", "/hub/session", {"label": "x", **body})
    assert (status, answer["code"]) == (400, code), answer
    if code == "ENV_SECRET":
        assert "secret" in answer["error"] and "sk-ant" not in answer["error"], "the value is never echoed"
    page = await idle.shepherd.sessions.list(await _principal(idle), include_archived=True)
    assert page.total == 0, "nothing was created"


async def test_another_org_sees_nothing_and_orgid_is_checked(idle: Rig) -> None:
    sid = await _create(idle, {"label": "ours", "visibility": "collaborate"})
    globex = await idle.token_for("globex")
    for method, path in (("GET", f"/hub/session/{sid}"), ("PATCH", f"/hub/session/{sid}"),
                         ("DELETE", f"/hub/session/{sid}"), ("POST", f"/hub/session/{sid}/archive"),
                         ("POST", f"/hub/session/{sid}/resume"), ("GET", f"/hub/session/{sid}/participants")):
        status, answer = await idle.call(method, path, {"label": "theirs"} if method == "PATCH" else None,
                                         token=globex)
        assert (status, answer["code"]) == (404, "SESSION_NOT_FOUND"), (method, path, answer)
    status, page = await idle.call("GET", "/hub/sessions", token=globex)
    assert page == {"sessions": {"websocket": [], "sandbox": []}, "total": 0}
    status, answer = await idle.call("POST", "/api/v2/tasks/me", {"input": "x", "agent": "demo", "session_id": sid},
                                     token=globex)
    assert (status, answer["code"]) == (404, "SESSION_NOT_FOUND")
    for path in ("/coder?orgId=globex", "/hub/sessions?orgId=globex", f"/hub/session/{sid}?orgId=globex"):
        status, answer = await idle.call("GET", path)
        assert (status, answer["code"]) == (403, "ORG_MISMATCH"), path
    assert (await idle.call("GET", f"/hub/session/{sid}?orgId=acme"))[0] == 200


async def test_visibility_decides_who_reads_runs_and_manages(idle: Rig) -> None:
    bob = await idle.token_for("acme", "read,write")  # an operator of the same org, not the owner
    private = await _create(idle, {"label": "mine", "visibility": "private"})
    shared = await _create(idle, {"label": "shared", "visibility": "organization"})
    team = await _create(idle, {"label": "team", "visibility": "collaborate"})

    assert (await idle.call("GET", f"/hub/session/{private}", token=bob))[0] == 404
    status, page = await idle.call("GET", "/hub/sessions", token=bob)
    assert sorted(s["label"] for s in page["sessions"]["websocket"]) == ["shared", "team"] and page["total"] == 2
    status, got = await idle.call("GET", f"/hub/session/{shared}", token=bob)
    assert status == 200 and got["manageAvailable"] is False and got["controlAvailable"] is False

    async def run_in(sid: str) -> tuple[int, Any]:
        return await idle.call("POST", "/api/v2/tasks/me", {"input": "hello", "agent": "demo", "session_id": sid},
                               token=bob)

    assert (await run_in(shared))[1]["code"] == "SESSION_NOT_COLLABORATIVE"
    status, task = await run_in(team)
    assert status == 201, task
    assert (await idle.shepherd.tasks.get(await _principal(idle), task["id"])).session_id == team
    status, answer = await idle.call("PATCH", f"/hub/session/{team}", {"label": "taken"}, token=bob)
    assert (status, answer["code"]) == (403, "NOT_SESSION_OWNER")
    assert (await idle.call("POST", f"/hub/session/{team}/archive", token=bob))[1]["code"] == "NOT_SESSION_OWNER"

    status, updated = await idle.call("PATCH", f"/hub/session/{private}", {
        "label": "now shared", "visibility": "organization", "tags": ["x"], "agent": "demo",
        "skills": [{"skillId": "s", "repo": "acme/s"}]})
    assert status == 200 and set(updated) == {"sessionId", "label", "visibility", "tags", "skills", "defaultAgent"}
    assert (updated["label"], updated["visibility"], updated["defaultAgent"]) == ("now shared", "organization", "demo")
    assert (await idle.call("GET", f"/hub/session/{private}", token=bob))[0] == 200


async def test_search_paging_and_archived(idle: Rig) -> None:
    ids = [await _create(idle, {"label": f"session {i}", "tags": ["blue" if i % 2 else "red"]}) for i in range(5)]
    await _create(idle, {"label": "50%_off"})

    async def page(query: str) -> dict[str, Any]:
        status, body = await idle.call("GET", f"/hub/sessions?{query}")
        assert status == 200, body
        return dict(body)

    first = await page("limit=2&offset=0")
    second = await page("limit=2&offset=2")
    assert first["total"] == second["total"] == 6
    assert len(first["sessions"]["websocket"]) == len(second["sessions"]["websocket"]) == 2
    assert not {s["sessionId"] for s in first["sessions"]["websocket"]} & \
        {s["sessionId"] for s in second["sessions"]["websocket"]}
    assert (await page("offset=100"))["total"] == 6, "a page past the end still says how many there are"
    assert (await page("search=blue"))["total"] == 2
    assert (await page("search=SESSION%203"))["sessions"]["websocket"][0]["label"] == "session 3"
    assert (await page("search=%25_"))["total"] == 1, "% and _ are searched for, not wildcards"
    status, archived = await idle.call("POST", f"/hub/session/{ids[0]}/archive")
    assert (status, archived) == (200, {"sessionId": ids[0], "status": "archived"})
    assert (await page(""))["total"] == 5
    listed = await page("includeArchived=true")
    assert listed["total"] == 6
    [old] = [s for s in listed["sessions"]["websocket"] if s["sessionId"] == ids[0]]
    assert old["bucket"] == "history" and old["historyOnly"] is True and old["wakeAvailable"] is True
    assert (await idle.call("GET", "/hub/sessions?limit=201"))[0] == 400


async def test_discovery_names_this_server(idle: Rig) -> None:
    status, body = await idle.call("GET", "/coder")
    assert status == 200 and body == {"url": str(idle.client.make_url("")).rstrip("/")}
    assert (await idle.call("GET", "/coder", headers={}))[0] == 401


async def test_a_standard_session_runs_its_task_and_archive_and_delete_stop_what_runs(rig: Rig) -> None:
    me = await _principal(rig)
    sid = await _create(rig, {"task": "first [long 30]", "agent": "demo"})
    [task] = await rig.shepherd.sessions.tasks_of(me, sid)
    assert (task.prompt, task.runtime) == ("first [long 30]", "demo")

    async def bucket() -> str | None:
        status, got = await rig.call("GET", f"/hub/session/{sid}")
        return got["bucket"] if got["bucket"] == "running" else None

    await _until(bucket)
    status, got = await rig.call("GET", f"/hub/session/{sid}")
    assert got["taskCount"] == 1 and got["liveExpected"] is True and got["runtimeAvailable"] is True
    assert got["subAgentCount"] == 1

    status, archived = await rig.call("POST", f"/hub/session/{sid}/archive")
    assert archived == {"sessionId": sid, "status": "archived"}

    async def stopped() -> bool:
        return (await rig.shepherd.tasks.get(me, task.id)).status == "cancelled"

    await _until(stopped)
    status, refused = await rig.call("POST", "/api/v2/tasks/me", {"input": "more", "agent": "demo",
                                                                   "session_id": sid})
    assert (status, refused["code"]) == (409, "SESSION_ARCHIVED")
    status, refused = await rig.call("POST", f"/api/v2/tasks/me/{task.id}/send", {"input": "go on"})
    assert (status, refused["code"]) == (409, "SESSION_ARCHIVED"), "no follow-up runs in an archived session"
    status, resumed = await rig.call("POST", f"/hub/session/{sid}/resume")
    assert resumed == {"sessionId": sid, "status": "active"}

    status, second = await rig.call("POST", "/api/v2/tasks/me", {"input": "second [long 30]", "agent": "demo",
                                                                  "session_id": sid})
    assert status == 201, second
    await rig.printed(second["id"], "tick")  # it runs
    status, deleted = await rig.call("DELETE", f"/hub/session/{sid}")
    assert (status, deleted) == (200, {"sessionId": sid, "status": "deleted"})

    async def second_stopped() -> bool:
        return (await rig.shepherd.tasks.get(me, second["id"])).status == "cancelled"

    await _until(second_stopped)
    kept = await rig.shepherd.tasks.get(me, second["id"])
    assert kept.session_id == sid, "its tasks stay as history"
    assert (await rig.call("GET", f"/hub/session/{sid}"))[0] == 404
    async with rig.shepherd.db.read() as session:
        from sqlmodel import select

        from core.store.models import Event
        names = [e.name for e in await session.exec(select(Event).where(Event.session_id == sid)
                                                    .order_by(Event.id))]  # type: ignore[arg-type]
    assert names == ["session.created", "session.archived", "session.resumed", "session.deleted"]


async def test_participants_are_the_owner_and_the_threads_that_watch(idle: Rig) -> None:
    me = await _principal(idle)
    sid = await _create(idle, {"label": "watched", "visibility": "collaborate"})
    view = await idle.shepherd.tasks.create(me, prompt="watch me", runtime="demo", session_id=sid,
                                            thread=("slack", "C1/1700000000.0001"))
    assert view.task.session_id == sid
    status, body = await idle.call("GET", f"/hub/session/{sid}/participants")
    assert status == 200 and body["sessionId"] == sid
    lead, observer = body["participants"]
    assert (lead["role"], lead["transport"], lead["id"]) == ("lead", "rest", me.identity)
    assert (observer["role"], observer["transport"]) == ("observer", "slack")
    assert observer["metadata"] == {"channel": "slack", "address": "C1/1700000000.0001"}
    assert observer["disconnectedAt"] is None and ISO.match(observer["connectedAt"]) and observer["agentRole"] is None
    status, got = await idle.call("GET", f"/hub/session/{sid}")
    assert (got["participantCount"], got["observerCount"]) == (2, 1)
    status, body = await idle.call("GET", f"/hub/session/{sid}/participants?limit=1&includeDisconnected=true")
    assert [p["role"] for p in body["participants"]] == ["lead"]
