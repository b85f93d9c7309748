"""Pages of agents: keyset cursors that cover every agent once while the list changes, totals that stay exact
(across two processes on one database), offset kept as it was, and the wire shape the hot path builds by hand
checked against the documented model."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import TypeAdapter
from sqlalchemy import func
from sqlmodel import select

from adapters.rest.codespar import AgentSummary, summary
from bot.app import create_app
from core.agents import AgentFilter
from core.clock import utcnow
from core.people.access import Principal
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Agent

ORG = "org-acme-corp"


class Client:
    def __init__(self, http: TestClient, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str) -> tuple[int, Any, dict[str, str]]:
        async with self.http.get(path, headers=self.headers) as resp:
            return resp.status, await resp.json(), dict(resp.headers)

    async def create(self, name: str, type: str = "task", **extra: Any) -> str:
        async with self.http.post("/api/agents", headers=self.headers,
                                  json={"name": name, "type": type, **extra}) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return str(body["id"])

    async def delete(self, agent_id: str) -> None:
        async with self.http.delete(f"/api/agents/{agent_id}", headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()

    async def walk(self, path: str, *, between: Any = None) -> tuple[list[str], list[str]]:
        """Every page by its cursor: the ids in order, and each page's X-Total-Count."""
        ids: list[str] = []
        totals: list[str] = []
        while True:
            status, body, headers = await self.get(path)
            assert status == 200, body
            ids += [a["id"] for a in body]
            totals.append(headers["X-Total-Count"])
            if "X-Next-Cursor" not in headers:
                assert "Link" not in headers
                return ids, totals
            link = headers["Link"]
            assert link.startswith("</api/agents?") and link.endswith('>; rel="next"'), link
            path = link[1:link.index(">")]
            assert f"cursor={headers['X-Next-Cursor']}" in path
            if between is not None:
                await between(ids)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    http = TestClient(TestServer(create_app(db_url)))
    await http.start_server()
    db = Database(db_url)
    try:
        token = (await Shepherd(db).tokens.create(org_id=ORG, name="pages", scopes="read,write,approve,admin")).secret
    finally:
        await db.dispose()
    yield Client(http, token)
    await http.close()


async def test_cursor_pages_cover_every_agent_once_while_agents_come_and_go(client: Client) -> None:
    first = [await client.create(f"a{i}") for i in range(23)]
    added: list[str] = []
    deleted: list[str] = []
    rng = random.Random(7)

    async def change(listed: list[str]) -> None:  # between two pages: one agent comes, one not yet listed goes
        added.append(await client.create(f"new{len(added)}"))
        unseen = [a for a in first if a not in deleted and a not in listed]
        if unseen:
            gone = rng.choice(unseen)
            deleted.append(gone)
            await client.delete(gone)

    seen, totals = await client.walk("/api/agents?limit=5", between=change)
    assert len(seen) == len(set(seen)), "an agent was listed twice"
    stayed = [a for a in first if a not in deleted]
    assert [a for a in seen if a in first] == stayed, "an agent that was there all along was missed"
    assert [a for a in seen if a in added] == added, "agents added while paging come last, each once"
    assert not set(seen) & set(deleted), "an agent deleted before its page was listed"
    assert totals[-1] == str(len(stayed) + len(added)), "the last page's total counts what is there now"


async def test_offset_pages_are_what_they_were_and_match_the_cursor_pages(client: Client) -> None:
    project = (await client.http.post("/api/projects", headers=client.headers, json={"name": "web"}))
    project_id = (await project.json())["id"]
    ids = [await client.create(f"t{i}", "task" if i % 3 else "review", projectId=project_id if i % 2 else None)
           for i in range(12)]
    walked, totals = await client.walk("/api/agents?limit=5")
    assert walked == ids and set(totals) == {"12"}
    by_offset: list[str] = []
    for offset in (0, 5, 10):
        status, body, headers = await client.get(f"/api/agents?limit=5&offset={offset}")
        assert status == 200 and headers["X-Total-Count"] == "12"
        by_offset += [a["id"] for a in body]
        # an offset page also hands out the cursor of the page after it
        assert ("X-Next-Cursor" in headers) == (offset + 5 < 12)
    assert by_offset == ids
    status, body, headers = await client.get("/api/agents?limit=5&offset=50")
    assert (status, body, headers["X-Total-Count"]) == (200, [], "12")

    # a filtered list: its total counted on the first page, carried by the cursor, on every page
    tasks = [i for n, i in enumerate(ids) if n % 3]
    walked, totals = await client.walk("/api/agents?limit=3&type=task")
    assert walked == tasks and set(totals) == {str(len(tasks))}
    in_project = [i for n, i in enumerate(ids) if n % 2]
    walked, totals = await client.walk("/api/agents?limit=4&projectId=web")
    assert walked == in_project and set(totals) == {str(len(in_project))}
    status, body, headers = await client.get("/api/agents?projectId=nowhere")
    assert (status, body, headers["X-Total-Count"]) == (200, [], "0")


async def test_a_cursor_from_elsewhere_is_a_clear_400(client: Client) -> None:
    for i in range(3):
        await client.create(f"t{i}")
    _, _, headers = await client.get("/api/agents?limit=1&type=task")
    cursor = headers["X-Next-Cursor"]
    for path in (f"/api/agents?limit=1&cursor={cursor}", f"/api/agents?type=review&cursor={cursor}",
                 "/api/agents?cursor=bm90IGEgY3Vyc29y", "/api/agents?cursor=%%%", f"/api/agents?cursor={'x' * 600}"):
        status, body, _ = await client.get(path)
        assert status == 400 and body["code"] in ("INVALID_CURSOR", "VALIDATION_ERROR"), (path, body)
    status, body, _ = await client.get(f"/api/agents?limit=1&type=task&cursor={cursor}")
    assert status == 200 and len(body) == 1


async def test_the_list_speaks_the_documented_summary_of_every_kind_of_agent(client: Client, db_url: str) -> None:
    """The list builds its JSON from rows by hand: it must be exactly what AgentSummary would have said."""
    project = await client.http.post("/api/projects", headers=client.headers,
                                     json={"name": "web", "repo": "acme/web"})
    project_id = (await project.json())["id"]
    await client.create("p", "project", projectId=project_id)
    await client.create("t", "task", projectId=project_id)
    await client.create("c", "coordinator")
    await client.create("r", "review", autonomyLevel=3)
    status, body, _ = await client.get("/api/agents")
    assert status == 200
    TypeAdapter(list[AgentSummary]).validate_python(body, strict=False)
    db = Database(db_url)
    try:
        views, _ = await Shepherd(db).agents.list(_reader(), AgentFilter())
    finally:
        await db.dispose()
    now = utcnow()
    expected = [summary(v, now).model_dump(mode="json", by_alias=True, exclude_none=True) for v in views]
    for got, want in zip(body, expected, strict=True):
        assert abs(got.pop("uptime") - want.pop("uptime")) <= 2
        assert got == want
    project_agent = next(a for a in body if a["type"] == "project")
    assert "channels" in project_agent and "task" not in project_agent


def _reader() -> Principal:
    from core.people.access import Role

    return Principal.for_role(ORG, "reader", Role.VIEWER, "test")


async def test_totals_stay_exact_across_two_processes(two_cores: tuple[Shepherd, Shepherd]) -> None:
    """Two Shepherds on one database create and delete at once; each one's total is the table's count."""
    a, b = two_cores
    await a.orgs.ensure(ORG)
    admin = _admin()

    async def make(s: Shepherd, prefix: str, n: int) -> list[str]:
        return [(await s.agents.create(admin, name=f"{prefix}{i}", type="task")).agent.id for i in range(n)]

    made_a, made_b = await asyncio.gather(make(a, "a", 15), make(b, "b", 15))
    await asyncio.gather(*(s.agents.delete(admin, i) for s, i in ((a, made_b[0]), (b, made_a[0]), (a, made_a[1]))))
    for s in (a, b):
        page = await s.agents.page(admin, limit=5)
        assert page.total == 27
        async with s.db.read() as session:
            counted = (await session.exec(select(func.count()).select_from(Agent).where(Agent.org_id == ORG))).one()
        assert page.total == counted
    other = await b.agents.page(_admin("globex"), limit=5)
    assert other.total == 0


def _admin(org: str = ORG) -> Principal:
    from core.people.access import Role

    return Principal.for_role(org, "admin", Role.ADMIN, "test")


@pytest.mark.postgres
async def test_forty_writers_of_one_org_at_once_do_not_wait_on_each_others_count(pg_url: str) -> None:
    """Forty transactions of one org each insert an agent and stay open together (a burst of task creations over the
    pool's connections): none waits on another's lock of the org's count row (migration 0022: 64 slots, one per
    overlapping transaction), and once all commit the total is exact."""
    from sqlalchemy import insert, text
    from sqlalchemy.ext.asyncio import create_async_engine

    from core.store.models import table_of

    shepherd = Shepherd(Database(pg_url))
    try:
        await shepherd.orgs.ensure(ORG)
        before = (await shepherd.agents.page(_admin(), limit=1)).total
        engine = create_async_engine(shepherd.db.url, pool_size=40, max_overflow=0)
        try:
            conns = [await engine.connect() for _ in range(40)]
            for n, conn in enumerate(conns):  # one after the other: their transaction ids are consecutive
                await conn.execute(text("SET LOCAL lock_timeout = '3s'"))
                row = Agent(id=f"agent-burst-{n}", org_id=ORG, name=f"burst{n}", type="task", status="idle")
                await conn.execute(insert(table_of(Agent)).values(**row.model_dump()))
            for conn in conns:
                await conn.commit()
                await conn.close()
        finally:
            await engine.dispose()
        assert (await shepherd.agents.page(_admin(), limit=1)).total == before + 40
    finally:
        await shepherd.db.dispose()
