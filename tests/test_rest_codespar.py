"""The CodeSpar agent API (shared/seeds/004) over real HTTP: every endpoint, example, field and code."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from core.shepherd import Shepherd
from core.store.db import Database

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Api:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        h = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": h}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as resp:
            data = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, data


async def _token(url: str, org: str, scopes: str) -> str:
    db = Database(url)
    try:
        return (await Shepherd(db).tokens.create(org_id=org, name=f"{org}-{scopes}", scopes=scopes)).secret
    finally:
        await db.dispose()


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    client = TestClient(TestServer(create_app(db_url, max_body_bytes=4096)))
    await client.start_server()
    api = Api(client, await _token(db_url, "org-acme-corp", "read,write,approve,admin"))
    api.db_url = db_url  # type: ignore[attr-defined]
    yield api
    await client.close()


async def _project(api: Api, name: str = "codespar") -> str:
    status, body = await api.call("POST", "/api/projects", {"name": name, "repo": "codespar/codespar"})
    assert status == 201, body
    return str(body["id"])


async def test_seed_create_get_list_delete(api: Api) -> None:
    project_id = await _project(api)
    status, created = await api.call(
        "POST", "/api/agents",
        {"name": "api-gateway-agent", "type": "project", "projectId": project_id, "autonomyLevel": 2},
    )
    assert status == 201
    assert set(created) == {"id", "name", "type", "status", "autonomyLevel", "projectId", "createdAt"}
    assert created["id"].startswith("agent-proj-") and created["status"] == "ACTIVE"
    assert (created["autonomyLevel"], created["projectId"]) == (2, project_id) and ISO.match(created["createdAt"])

    status, task = await api.call("POST", "/api/agents", {"name": "t", "type": "task"})
    assert status == 201 and task["autonomyLevel"] == 1 and "projectId" not in task

    status, agents = await api.call("GET", "/api/agents")
    assert status == 200 and [a["id"] for a in agents] == [created["id"], task["id"]]
    proj = agents[0]
    assert {"id", "type", "status", "autonomyLevel", "projectId", "uptime", "lastActivity", "channels"} <= set(proj)
    assert proj["channels"] == [] and isinstance(proj["uptime"], int) and ISO.match(proj["lastActivity"])
    assert "channels" not in agents[1], "channels are for project agents only"

    status, details = await api.call("GET", f"/api/agents/{created['id']}")
    assert status == 200
    assert details["project"] == {
        "id": project_id, "name": "codespar", "repo": "codespar/codespar", "defaultBranch": "main"
    }
    assert set(details["stats"]) == {
        "messagesProcessed", "tasksCompleted", "reviewsPerformed", "deploysTriggered", "incidentsHandled"
    }
    assert set(details["memory"]) == {"embeddings", "storageMB"}

    status, deleted = await api.call("DELETE", f"/api/agents/{created['id']}")
    assert (status, deleted) == (200, {"id": created["id"], "deleted": True, "message": "Agent removed"})
    status, missing = await api.call("GET", f"/api/agents/{created['id']}")
    assert (status, missing) == (404, {"error": "Agent not found", "code": "AGENT_NOT_FOUND", "status": 404})
    assert (await api.call("DELETE", f"/api/agents/{created['id']}"))[1]["code"] == "AGENT_NOT_FOUND"


async def test_seed_actions(api: Api) -> None:
    agent = (await api.call("POST", "/api/agents", {"name": "c", "type": "coordinator"}))[1]["id"]
    url = f"/api/agents/{agent}/action"

    status, body = await api.call("POST", url, {"action": "suspend"})
    assert status == 200
    assert set(body) == {"id", "action", "previousStatus", "currentStatus", "timestamp"}
    assert (body["id"], body["action"], body["previousStatus"], body["currentStatus"]) == (
        agent, "suspend", "ACTIVE", "SUSPENDED")

    status, body = await api.call("POST", url, {"action": "resume"})
    assert (body["previousStatus"], body["currentStatus"]) == ("SUSPENDED", "ACTIVE")

    status, body = await api.call("POST", url, {"action": "restart"})
    assert (body["previousStatus"], body["currentStatus"], body["uptime"]) == ("ACTIVE", "ACTIVE", 0)

    status, body = await api.call("POST", url, {"action": "set_autonomy", "params": {"level": 3}})
    assert status == 200
    assert set(body) == {"id", "action", "previousLevel", "currentLevel", "timestamp"}
    assert (body["previousLevel"], body["currentLevel"]) == (1, 3)
    assert (await api.call("GET", f"/api/agents/{agent}"))[1]["autonomyLevel"] == 3


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"action": "explode"}, 400, "INVALID_ACTION",
         "Invalid action. Must be one of: suspend, resume, restart, set_autonomy"),
        ({}, 400, "INVALID_ACTION", "Invalid action. Must be one of: suspend, resume, restart, set_autonomy"),
        ({"action": "set_autonomy", "params": {"level": 6}}, 400, "INVALID_AUTONOMY_LEVEL",
         "Autonomy level must be between 0 and 5"),
        ({"action": "set_autonomy", "params": {"level": -1}}, 400, "INVALID_AUTONOMY_LEVEL",
         "Autonomy level must be between 0 and 5"),
        ({"action": "set_autonomy", "params": {"level": "3"}}, 400, "INVALID_AUTONOMY_LEVEL",
         "Autonomy level must be between 0 and 5"),
        ({"action": "set_autonomy", "params": {"level": 2.5}}, 400, "INVALID_AUTONOMY_LEVEL",
         "Autonomy level must be between 0 and 5"),
    ],
)
async def test_seed_action_errors(api: Api, body: dict[str, Any], status: int, code: str, message: str) -> None:
    agent = (await api.call("POST", "/api/agents", {"name": "c", "type": "coordinator"}))[1]["id"]
    got_status, got = await api.call("POST", f"/api/agents/{agent}/action", body)
    assert (got_status, got) == (status, {"error": message, "code": code, "status": status})


async def test_set_autonomy_without_level_names_the_problem(api: Api) -> None:
    agent = (await api.call("POST", "/api/agents", {"name": "c", "type": "coordinator"}))[1]["id"]
    status, body = await api.call("POST", f"/api/agents/{agent}/action", {"action": "set_autonomy"})
    assert status == 400 and body["code"] == "INVALID_AUTONOMY_LEVEL" and "params.level" in body["error"]
    status, body = await api.call("POST", "/api/agents/agent-nope/action", {"action": "suspend"})
    assert (status, body["code"]) == (404, "AGENT_NOT_FOUND")


async def test_agent_types(api: Api) -> None:
    status, types = await api.call("GET", "/api/agent-types")
    assert status == 200
    assert types[0] == {"type": "project", "lifecycle": "persistent", "description": "Monitors repo, CI/CD, channels"}
    assert [t["type"] for t in types] == ["project", "task", "review", "deploy", "incident", "coordinator"]
    status, added = await api.call(
        "POST", "/api/agent-types", {"type": "audit", "lifecycle": "ephemeral", "description": "Dependency audit"})
    assert status == 201 and added["type"] == "audit"
    assert (await api.call("GET", "/api/agent-types"))[1][-1]["type"] == "audit"
    status, body = await api.call("POST", "/api/agents", {"name": "x", "type": "audit"})
    assert status == 201 and body["id"].startswith("agent-audit-")
    assert (await api.call("POST", "/api/agent-types",
                           {"type": "audit", "lifecycle": "ephemeral", "description": "again"}))[0] == 409


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "type": "wizard"}, "INVALID_AGENT_TYPE"),
        ({"name": "x", "type": "task", "autonomyLevel": 9}, "INVALID_AUTONOMY_LEVEL"),
        ({"name": "x", "type": "project"}, "PROJECT_REQUIRED"),
        ({"type": "task"}, "VALIDATION_ERROR"),
        ({"name": 5, "type": "task"}, "VALIDATION_ERROR"),
    ],
)
async def test_create_errors(api: Api, body: dict[str, Any], code: str) -> None:
    status, got = await api.call("POST", "/api/agents", body)
    assert status == 400 and got["code"] == code and got["status"] == 400 and got["error"]


async def test_auth(api: Api) -> None:
    async with api.client.get("/api/agents") as resp:
        assert resp.status == 401 and (await resp.json())["code"] == "UNAUTHORIZED"
    assert (await api.call("GET", "/api/agents", token="shp_wrong"))[1]["code"] == "INVALID_TOKEN"
    async with api.client.get("/api/agents", headers={"x-api-key": api.token}) as resp:
        assert resp.status == 200
    async with api.client.get("/api/agents", headers={"Authorization": f"Basic {api.token}"}) as resp:
        assert resp.status == 401
    status, body = await api.call("GET", "/api/agents", headers={"x-org-id": "org-acme-corp"})
    assert status == 200
    status, body = await api.call("GET", "/api/agents", headers={"x-org-id": "org-globex"})
    assert (status, body["code"]) == (403, "ORG_MISMATCH")


async def test_scopes(api: Api) -> None:
    agent = (await api.call("POST", "/api/agents", {"name": "c", "type": "coordinator"}))[1]["id"]
    reader = await _token(api.db_url, "org-acme-corp", "read")  # type: ignore[attr-defined]
    writer = await _token(api.db_url, "org-acme-corp", "read,write")  # type: ignore[attr-defined]
    assert (await api.call("GET", f"/api/agents/{agent}", token=reader))[0] == 200
    status, body = await api.call("POST", f"/api/agents/{agent}/action", {"action": "suspend"}, token=reader)
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert (await api.call("POST", f"/api/agents/{agent}/action", {"action": "suspend"}, token=writer))[0] == 200
    raise_level = {"action": "set_autonomy", "params": {"level": 4}}
    assert (await api.call("POST", f"/api/agents/{agent}/action", raise_level, token=writer))[0] == 403
    assert (await api.call("POST", f"/api/agents/{agent}/action", raise_level))[0] == 200


async def test_another_orgs_agent_is_not_found(api: Api) -> None:
    agent = (await api.call("POST", "/api/agents", {"name": "c", "type": "coordinator"}))[1]["id"]
    rival = await _token(api.db_url, "org-globex", "read,write,approve,admin")  # type: ignore[attr-defined]
    for method, path, body in (
        ("GET", f"/api/agents/{agent}", None),
        ("DELETE", f"/api/agents/{agent}", None),
        ("POST", f"/api/agents/{agent}/action", {"action": "suspend"}),
    ):
        status, got = await api.call(method, path, body, token=rival)
        assert (status, got["code"]) == (404, "AGENT_NOT_FOUND")
    assert (await api.call("GET", "/api/agents", token=rival))[1] == []
    assert (await api.call("GET", f"/api/agents/{agent}"))[1]["status"] == "ACTIVE"


async def test_malformed_and_oversized_bodies(api: Api) -> None:
    for raw, code in ((b"{", "INVALID_JSON"), (b"", "INVALID_JSON"), (b"[1,2]", "INVALID_JSON"),
                      (b"\xff\xfe", "INVALID_JSON"), (b'{"name": "x", "type": null}', "VALIDATION_ERROR")):
        status, body = await api.call("POST", "/api/agents", raw=raw)
        assert (status, body["code"]) == (400, code), raw
    status, body = await api.call("POST", "/api/agents", raw=b'{"name": "' + b"x" * 10_000 + b'"}')
    assert (status, body["code"]) == (413, "PAYLOAD_TOO_LARGE")
    assert "4096" in body["error"]


async def test_pagination_and_filters(api: Api) -> None:
    for i in range(5):
        await api.call("POST", "/api/agents", {"name": f"t{i}", "type": "task"})
    await api.call("POST", "/api/agents", {"name": "c", "type": "coordinator"})
    async with api.client.get("/api/agents?limit=2&offset=1", headers={"x-api-key": api.token}) as resp:
        page = await resp.json()
        assert resp.headers["X-Total-Count"] == "6" and [a["name"] for a in page] == ["t1", "t2"]
    status, body = await api.call("GET", "/api/agents?type=coordinator")
    assert [a["name"] for a in body] == ["c"]
    status, body = await api.call("GET", "/api/agents?limit=0")
    assert (status, body["code"]) == (400, "VALIDATION_ERROR")
    status, body = await api.call("GET", "/api/agents?status=SLEEPING")
    assert status == 400


async def test_projects_api(api: Api) -> None:
    status, created = await api.call("POST", "/api/projects", {"name": "web", "repo": "acme/web",
                                                               "defaultBranch": "trunk"})
    assert status == 201 and created["defaultBranch"] == "trunk"
    assert (await api.call("GET", "/api/projects"))[1][0]["id"] == created["id"]
    assert (await api.call("GET", "/api/projects/web"))[1]["id"] == created["id"]
    assert (await api.call("POST", "/api/projects", {"name": "web"}))[1]["code"] == "PROJECT_EXISTS"
    assert (await api.call("POST", "/api/projects", {"name": "x", "repo": "nope"}))[1]["code"] == "INVALID_REPO"
    assert (await api.call("GET", "/api/projects/nope"))[1]["code"] == "PROJECT_NOT_FOUND"


async def test_the_seeds_own_example_names_its_project_and_every_project_reference_takes_id_or_name(
        api: Api) -> None:
    """Seed 004's example sends `"projectId": "proj-001"`: on a fresh server, after a project of that name."""
    status, body = await api.call("POST", "/api/agents", {"name": "api-gateway-agent", "type": "project",
                                                          "projectId": "proj-001", "autonomyLevel": 2})
    assert (status, body["code"]) == (404, "PROJECT_NOT_FOUND")
    status, project = await api.call("POST", "/api/projects", {"name": "proj-001"})
    assert status == 201 and project["id"] != "proj-001"
    status, agent = await api.call("POST", "/api/agents", {"name": "api-gateway-agent", "type": "project",
                                                           "projectId": "proj-001", "autonomyLevel": 2})
    assert status == 201, agent
    assert (agent["type"], agent["status"], agent["autonomyLevel"]) == ("project", "ACTIVE", 2)
    assert agent["projectId"] == project["id"], "the reference resolved to the project it names"
    status, body = await api.call("POST", "/api/agents", {"name": "again", "type": "project",
                                                          "projectId": project["id"]})
    assert (status, body["code"]) == (409, "PROJECT_AGENT_EXISTS"), "by id, the same project"
    await api.call("POST", "/api/agents", {"name": "elsewhere", "type": "coordinator"})
    for ref in ("proj-001", project["id"]):
        status, listed = await api.call("GET", f"/api/agents?projectId={ref}")
        assert [a["id"] for a in listed] == [agent["id"]], ref
    status, listed = await api.call("GET", "/api/agents?projectId=no-such-project")
    assert (status, listed) == (200, [])
    status, details = await api.call("GET", f"/api/agents/{agent['id']}")
    assert details["project"]["name"] == "proj-001"
    status, explained = await api.call("GET", "/api/policy/explain?action=pr.open&project=proj-001")
    assert status == 200 and explained["level"] == 1
    status, task = await api.call("POST", "/api/v2/tasks/me", {"input": "x", "agent": "demo", "project": "proj-001"})
    assert status == 201 and task["status"] == "pending"


async def test_operations_endpoints(api: Api) -> None:
    async with api.client.get("/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
    async with api.client.get("/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"
    await api.call("GET", "/api/agents")
    async with api.client.get("/metrics") as resp:
        text = await resp.text()
        assert 'shepherd_http_requests_total{method="GET",route="/api/agents",status="200"}' in text
    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    assert {"/api/agents", "/api/agents/{id}", "/api/agents/{id}/action", "/api/agent-types",
            "/api/projects"} <= set(doc["paths"])
    async with api.client.get("/no/such/thing") as resp:
        assert resp.status == 404 and (await resp.json())["code"] == "NOT_FOUND"
    async with api.client.put("/api/agents") as resp:
        assert resp.status == 405 and (await resp.json())["code"] == "METHOD_NOT_ALLOWED"


async def test_readyz_reports_a_dead_database() -> None:
    # Nothing listens on port 1: the store is unreachable, and readiness must say so (503, not 500).
    client = TestClient(TestServer(create_app("postgresql://shepherd@127.0.0.1:1/shepherd")))
    await client.start_server()
    try:
        async with client.get("/readyz") as resp:
            body = await resp.json()
        assert resp.status == 503 and body["code"] == "NOT_READY" and "database" in body["error"]
        async with client.get("/healthz") as resp:
            assert resp.status == 200
    finally:
        await client.close()
