"""The store through core's services, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from core.agents import AgentFilter, AgentStatus
from core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from core.people.access import Principal, Role, Scope
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import ApiToken, Event
from tests.conftest import person


async def test_sqlite_runs_in_wal_with_foreign_keys(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        async with db.read() as session:
            mode = (await session.exec(select_text("PRAGMA journal_mode"))).one()[0]
            fks = (await session.exec(select_text("PRAGMA foreign_keys"))).one()[0]
        assert (mode, fks) == ("wal", 1)
    finally:
        await db.dispose()


def select_text(sql: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    return text(sql)


async def test_agent_lifecycle_and_events(shepherd: Shepherd, admin: Principal) -> None:
    project = await shepherd.projects.create(admin, name="api", repo="acme/api")
    view = await shepherd.agents.create(admin, name="api-agent", type="project", project_id=project.id)
    agent = view.agent
    assert agent.id.startswith("agent-proj-")
    assert (agent.status, agent.autonomy_level) == ("ACTIVE", 1)

    suspended = await shepherd.agents.act(admin, agent.id, "suspend")
    assert (suspended.previous_status, suspended.current_status) == ("ACTIVE", "SUSPENDED")
    leveled = await shepherd.agents.act(admin, agent.id, "set_autonomy", {"level": 4})
    assert (leveled.previous_level, leveled.current_level) == (1, 4)
    restarted = await shepherd.agents.act(admin, agent.id, "restart")
    assert restarted.uptime == 0
    assert restarted.current_status == "SUSPENDED", "a restart must not lift a person's suspension"

    # State lives in the database: a second, independent connection pool sees it.
    other = Database(shepherd.db.url)
    try:
        again = await Shepherd(other).agents.get(admin, agent.id)
    finally:
        await other.dispose()
    assert (again.agent.status, again.agent.autonomy_level) == ("SUSPENDED", 4)
    assert again.project is not None and again.project.repo == "acme/api"

    events = await shepherd.events.list(admin, agent_id=agent.id)
    assert [e.name for e in events] == ["agent.restart", "agent.set_autonomy", "agent.suspend", "agent.created"]
    assert all(e.actor == "test:admin" and e.org_id == admin.org_id for e in events)
    # each action's event says what it changed (on PostgreSQL the statement of the change writes it)
    assert [e.payload for e in events[:3]] == [
        {"previousStatus": "SUSPENDED", "currentStatus": "SUSPENDED", "previousLevel": 4, "currentLevel": 4},
        {"previousStatus": "SUSPENDED", "currentStatus": "SUSPENDED", "previousLevel": 1, "currentLevel": 4},
        {"previousStatus": "ACTIVE", "currentStatus": "SUSPENDED", "previousLevel": 1, "currentLevel": 1},
    ]
    assert events[0].occurred_at >= events[2].occurred_at


async def test_failed_action_writes_no_event(shepherd: Shepherd, admin: Principal) -> None:
    agent = (await shepherd.agents.create(admin, name="c", type="coordinator")).agent
    with pytest.raises(ValidationFailed) as err:
        await shepherd.agents.act(admin, agent.id, "set_autonomy", {"level": 6})
    assert err.value.code == "INVALID_AUTONOMY_LEVEL"
    with pytest.raises(ValidationFailed) as err:
        await shepherd.agents.act(admin, agent.id, "explode")
    assert err.value.code == "INVALID_ACTION"
    assert [e.name for e in await shepherd.events.list(admin, agent_id=agent.id)] == ["agent.created"]


async def test_orgs_never_see_each_other(shepherd: Shepherd, admin: Principal) -> None:
    agent = (await shepherd.agents.create(admin, name="mine", type="coordinator")).agent
    project = await shepherd.projects.create(admin, name="api")
    rival = person(Role.ADMIN, org="globex")
    for call in (
        shepherd.agents.get(rival, agent.id),
        shepherd.agents.act(rival, agent.id, "suspend"),
        shepherd.agents.delete(rival, agent.id),
        shepherd.projects.get(rival, project.id),
        shepherd.agents.create(rival, name="x", type="project", project_id=project.id),
    ):
        with pytest.raises(NotFound):
            await call
    assert (await shepherd.agents.list(rival))[1] == 0
    assert await shepherd.projects.list(rival) == []
    assert await shepherd.events.list(rival) == []
    assert (await shepherd.agents.get(admin, agent.id)).agent.status == "ACTIVE"


async def test_roles_gate_what_people_may_do(shepherd: Shepherd, admin: Principal) -> None:
    agent = (await shepherd.agents.create(admin, name="c", type="coordinator", autonomy_level=2)).agent
    viewer, operator, approver = person(Role.VIEWER), person(Role.OPERATOR), person(Role.APPROVER)
    assert (await shepherd.agents.get(viewer, agent.id)).agent.id == agent.id
    with pytest.raises(Forbidden):
        await shepherd.agents.act(viewer, agent.id, "suspend")
    await shepherd.agents.act(operator, agent.id, "suspend")
    # Lowering autonomy is the safe direction; raising it pre-approves the agent's actions.
    await shepherd.agents.act(operator, agent.id, "set_autonomy", {"level": 1})
    with pytest.raises(Forbidden) as err:
        await shepherd.agents.act(operator, agent.id, "set_autonomy", {"level": 3})
    assert err.value.code == "INSUFFICIENT_SCOPE"
    await shepherd.agents.act(approver, agent.id, "set_autonomy", {"level": 3})
    with pytest.raises(Forbidden):
        await shepherd.agents.register_type(approver, type_name="audit", lifecycle="ephemeral", description="d")


async def test_create_validates(shepherd: Shepherd, admin: Principal) -> None:
    cases = [
        (dict(name="", type="task"), "INVALID_NAME"),
        (dict(name="x", type="wizard"), "INVALID_AGENT_TYPE"),
        (dict(name="x", type="task", autonomy_level=6), "INVALID_AUTONOMY_LEVEL"),
        (dict(name="x", type="task", autonomy_level=True), "INVALID_AUTONOMY_LEVEL"),
        (dict(name="x", type="project"), "PROJECT_REQUIRED"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ValidationFailed) as err:
            await shepherd.agents.create(admin, **kwargs)  # type: ignore[arg-type]
        assert err.value.code == code, kwargs
    with pytest.raises(NotFound) as nf:
        await shepherd.agents.create(admin, name="x", type="project", project_id="proj-nope")
    assert nf.value.code == "PROJECT_NOT_FOUND"


async def test_one_project_agent_per_project(shepherd: Shepherd, admin: Principal) -> None:
    project = await shepherd.projects.create(admin, name="web", repo="acme/web", default_branch="trunk")
    await shepherd.agents.create(admin, name="a", type="project", project_id=project.id)
    with pytest.raises(Conflict) as err:
        await shepherd.agents.create(admin, name="b", type="project", project_id=project.id)
    assert err.value.code == "PROJECT_AGENT_EXISTS"
    # Other types may join the project freely.
    await shepherd.agents.create(admin, name="r", type="review", project_id=project.id)


async def test_projects_validate_and_are_unique(shepherd: Shepherd, admin: Principal) -> None:
    p = await shepherd.projects.create(admin, name="api", repo="acme/api")
    assert (p.default_branch, p.repo) == ("main", "acme/api")
    assert (await shepherd.projects.get(admin, "api")).id == p.id
    with pytest.raises(Conflict):
        await shepherd.projects.create(admin, name="api")
    for kwargs, code in (
        (dict(name="x", repo="not a repo"), "INVALID_REPO"),
        (dict(name="x", repo="acme/api", default_branch="bad..branch"), "INVALID_BRANCH"),
        (dict(name="-x"), "INVALID_NAME"),
    ):
        with pytest.raises(ValidationFailed) as err:
            await shepherd.projects.create(admin, **kwargs)  # type: ignore[arg-type]
        assert err.value.code == code


async def test_agent_types_builtin_and_registered(shepherd: Shepherd, admin: Principal) -> None:
    builtin = [t.type for t in await shepherd.agents.types(admin)]
    assert builtin == ["project", "task", "review", "deploy", "incident", "coordinator"]
    await shepherd.agents.register_type(admin, type_name="audit", lifecycle="ephemeral", description="scans deps")
    assert [t.type for t in await shepherd.agents.types(admin)][-1] == "audit"
    agent = (await shepherd.agents.create(admin, name="a", type="audit")).agent
    assert agent.id.startswith("agent-audit-")
    with pytest.raises(Conflict):
        await shepherd.agents.register_type(admin, type_name="task", lifecycle="ephemeral", description="x")
    # Registered types belong to their org.
    assert "audit" not in [t.type for t in await shepherd.agents.types(person(Role.ADMIN, org="globex"))]


async def test_list_pages_and_filters(shepherd: Shepherd, admin: Principal) -> None:
    ids = [(await shepherd.agents.create(admin, name=f"a{i}", type="task")).agent.id for i in range(7)]
    coord = (await shepherd.agents.create(admin, name="c", type="coordinator")).agent.id
    await shepherd.agents.act(admin, ids[2], "suspend")
    page, total = await shepherd.agents.list(admin, limit=3, offset=3)
    assert total == 8 and [v.agent.id for v in page] == ids[3:6]
    tasks, n = await shepherd.agents.list(admin, AgentFilter(type="task"))
    assert n == 7 and coord not in [v.agent.id for v in tasks]
    suspended, n = await shepherd.agents.list(admin, AgentFilter(status=AgentStatus.SUSPENDED))
    assert n == 1 and suspended[0].agent.id == ids[2]


async def test_tokens_are_stored_hashed_and_scoped(shepherd: Shepherd) -> None:
    issued = await shepherd.tokens.create(org_id="acme", name="ci", scopes="read,write")
    async with shepherd.db.read() as session:
        rows = list(await session.exec(select(ApiToken)))
    assert len(rows) == 1 and issued.secret not in repr(rows[0].model_dump())
    assert rows[0].secret_hash != issued.secret and len(rows[0].secret_hash) == 64
    principal = await shepherd.tokens.authenticate(issued.secret)
    assert principal.org_id == "acme" and principal.scopes == {Scope.READ, Scope.WRITE}
    with pytest.raises(Unauthorized):
        await shepherd.tokens.authenticate(issued.secret + "x")
    assert await shepherd.tokens.revoke(issued.token.id)
    with pytest.raises(Unauthorized):
        await shepherd.tokens.authenticate(issued.secret)
    with pytest.raises(ValidationFailed):
        await shepherd.tokens.create(org_id="acme", name="x", scopes="read,root")


async def test_users_and_identities(shepherd: Shepherd, admin: Principal) -> None:
    ana = await shepherd.users.principal_for("acme", "slack", "U123", display_name="ana", default_role=Role.VIEWER)
    assert ana.scopes == {Scope.READ} and ana.actor == "slack:ana"
    again = await shepherd.users.principal_for("acme", "slack", "U123", display_name="ana", default_role=Role.ADMIN)
    assert again.user_id == ana.user_id and again.scopes == {Scope.READ}, "first contact decides, not the latest"
    await shepherd.users.set_role(admin, "ana", Role.APPROVER)
    promoted = await shepherd.users.principal_for("acme", "slack", "U123", display_name="ana", default_role=Role.VIEWER)
    assert promoted.can(Scope.APPROVE) and not promoted.can(Scope.ADMIN)
    # Another person with the same display name on another channel stays a different user.
    other = await shepherd.users.principal_for("acme", "telegram", "42", display_name="ana", default_role=Role.VIEWER)
    assert other.user_id != ana.user_id
    with pytest.raises(Forbidden):
        await shepherd.users.set_role(ana, "ana", Role.ADMIN)


async def test_concurrent_actions_all_land(shepherd: Shepherd, admin: Principal) -> None:
    agents = [(await shepherd.agents.create(admin, name=f"a{i}", type="task")).agent.id for i in range(10)]
    await asyncio.gather(*(shepherd.agents.act(admin, a, "suspend") for a in agents for _ in range(3)))
    async with shepherd.db.read() as session:
        events = list(await session.exec(select(Event).where(Event.name == "agent.suspend")))
    assert len(events) == 30
    page, _ = await shepherd.agents.list(admin, AgentFilter(status=AgentStatus.SUSPENDED))
    assert len(page) == 10


async def test_delete_removes_agent_and_keeps_history(shepherd: Shepherd, admin: Principal) -> None:
    agent = (await shepherd.agents.create(admin, name="gone", type="task")).agent
    await shepherd.agents.delete(admin, agent.id)
    with pytest.raises(NotFound):
        await shepherd.agents.get(admin, agent.id)
    with pytest.raises(NotFound):
        await shepherd.agents.delete(admin, agent.id)
    assert [e.name for e in await shepherd.events.list(admin, agent_id=agent.id)] == ["agent.deleted", "agent.created"]


async def test_racing_creates_of_one_name_give_one_project_and_a_conflict(shepherd: Shepherd, admin: Principal) -> None:
    results = await asyncio.gather(
        *(shepherd.projects.create(admin, name="same") for _ in range(5)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert [p.name for p in await shepherd.projects.list(admin)] == ["same"]


async def test_a_constraint_violation_is_a_conflict_not_a_crash(shepherd: Shepherd, admin: Principal) -> None:
    from core.store.models import Project

    await shepherd.projects.create(admin, name="dup")
    with pytest.raises(Conflict) as err:
        async with shepherd.db.write() as session:
            session.add(Project(id="proj-x", org_id="acme", name="dup"))
    assert err.value.status == 409


async def test_revocation_reaches_other_replicas_within_the_cache_window(db: Database) -> None:
    from core.people.tokens import AUTH_CACHE_SECONDS, Tokens

    now = [1000.0]
    here, there = Tokens(db), Tokens(db, clock=lambda: now[0])
    issued = await here.create(org_id="acme", name="ci", scopes="read")
    assert (await here.authenticate(issued.secret)).org_id == "acme"
    assert (await there.authenticate(issued.secret)).org_id == "acme"
    await here.revoke(issued.token.id)
    with pytest.raises(Unauthorized):
        await here.authenticate(issued.secret)  # the revoking process knows at once
    assert (await there.authenticate(issued.secret)).org_id == "acme"  # another replica, still cached
    now[0] += AUTH_CACHE_SECONDS + 0.1
    with pytest.raises(Unauthorized):
        await there.authenticate(issued.secret)


async def test_sqlite_write_transactions_of_two_processes_never_lose_an_update(sqlite_url: str) -> None:
    """Two pools (as two processes would have) read, think, then write the same row: on SQLite a write
    transaction holds the write lock from its start, so every increment survives."""
    from sqlmodel import select

    from core.store.models import Org

    a, b = Database(sqlite_url), Database(sqlite_url)
    try:
        async with a.write() as session:
            session.add(Org(id="counter", name="0"))

        async def bump(db: Database) -> None:
            async with db.write() as session:
                org = (await session.exec(select(Org).where(Org.id == "counter"))).one()
                await asyncio.sleep(0.05)
                org.name = str(int(org.name) + 1)
                session.add(org)

        await asyncio.gather(*(bump(db) for db in (a, b, a, b, a, b)))
        async with a.read() as session:
            assert (await session.exec(select(Org).where(Org.id == "counter"))).one().name == "6"
    finally:
        await a.dispose()
        await b.dispose()


async def test_a_statement_alone_reads_without_a_transaction_and_sees_its_units_writes(shepherd: Shepherd,
                                                                                      admin: Principal) -> None:
    """Database.rows (the list's hot path): a lone read neither waits for a writer nor holds anything open, and
    inside a unit of work it reads what the unit wrote before it commits."""
    from sqlalchemy import func

    db = shepherd.db
    count = select(func.count()).select_from(Event).where(Event.org_id == admin.org_id)
    before = (await db.rows(count))[0][0]
    async with db.unit():
        async with db.write() as session:
            session.add(Event(org_id=admin.org_id, category="test", name="written", actor="me"))
        seen_inside = (await db.rows(count))[0][0]
        # another task reads alone meanwhile: it is not kept waiting and does not see the uncommitted row
        seen_outside = await asyncio.wait_for(asyncio.create_task(db.rows(count)), timeout=5)
    assert (seen_inside, seen_outside[0][0], (await db.rows(count))[0][0]) == (before + 1, before, before + 1)
    if db.is_sqlite:  # the connection went back to the pool with no transaction left open
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None and not raw.in_transaction


async def test_json_the_fast_reader_refuses_still_reads(shepherd: Shepherd, admin: Principal) -> None:
    """JSON columns are read with orjson; a value only the standard library reads (NaN, a 70-bit integer),
    written by an older Shepherd or by hand, still reads instead of failing the request."""
    from sqlalchemy import text

    nan = shepherd.db.is_sqlite  # PostgreSQL's json type refuses NaN itself
    value = ":payload" if nan else "CAST(:payload AS JSON)"
    async with shepherd.db.write() as session:
        await session.exec(text(  # type: ignore[call-overload]
            "INSERT INTO event (org_id, category, name, actor, payload, occurred_at) "
            f"VALUES (:org, 'test', 'odd', 'me', {value}, CURRENT_TIMESTAMP)").bindparams(
            org=admin.org_id, payload='{"big": 1180591620717411303424%s}' % (', "n": NaN' if nan else "")))
    async with shepherd.db.read() as session:
        payload = (await session.exec(select(Event.payload).where(Event.name == "odd"))).one()
    assert payload["big"] == 2 ** 70
    if nan:
        assert payload["n"] != payload["n"]


@pytest.mark.postgres
async def test_a_request_finding_every_postgresql_connection_busy_is_told_to_try_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kept connection in use past the pool's wait (long requests, a burst): the next request is answered that
    the store is busy (503, DATABASE_BUSY: try again), not with an internal error; once one is back, it works."""
    from sqlalchemy import text

    from core.errors import TryLater
    from core.store import db as store

    monkeypatch.setattr(store, "PG_POOL_WAIT_S", 0.3, raising=False)
    db = Database(pg_url)
    try:
        held = [await db.engine.connect() for _ in range(store.PG_POOL)]
        with pytest.raises(TryLater) as busy:
            await db.rows(text("SELECT 1"))
        assert busy.value.status == 503 and busy.value.code == "DATABASE_BUSY", busy.value
        assert "busy" in busy.value.message
        await held.pop().close()
        assert [tuple(r) for r in await db.rows(text("SELECT 1"))] == [(1,)]
        for conn in held:
            await conn.close()
    finally:
        await db.dispose()
