"""Agents: typed, stateful, with a graduated autonomy level. Their state lives in the database.

The shapes follow the CodeSpar agent API (shared/seeds/004): six built-in types plus registered ones,
statuses ACTIVE/IDLE/SUSPENDED/ERROR, autonomy 0-5 (default 1) and the actions suspend, resume,
restart and set_autonomy. Every action writes an event in the same transaction as the change.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import BindParameter, bindparam, case, func, insert, literal, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agent_pages import PAGE_COLUMNS, AgentPage, AgentRow, page_statement, total_statement
from core.clock import as_utc, utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.ids import new_id
from core.paging import Cursor, decode, encode, scope_of
from core.people.access import Principal, Scope
from core.projects import find_project, resolve_project
from core.store.db import Database
from core.store.events import record
from core.store.models import Agent, AgentType, Event, Project, table_of
from core.textcheck import free_text, name_text

MIN_LEVEL, MAX_LEVEL, DEFAULT_LEVEL = 0, 5, 1
MAX_PAGE = 500
LEVEL_NAMES = {0: "Observe", 1: "Suggest", 2: "Assist", 3: "Act", 4: "Trusted", 5: "Autonomous"}


class AgentStatus(StrEnum):
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"
    SUSPENDED = "SUSPENDED"
    ERROR = "ERROR"


class Lifecycle(StrEnum):
    PERSISTENT = "persistent"
    EPHEMERAL = "ephemeral"


@dataclass(frozen=True)
class TypeInfo:
    type: str
    lifecycle: Lifecycle
    description: str
    builtin: bool = True


BUILTIN_TYPES: tuple[TypeInfo, ...] = (
    TypeInfo("project", Lifecycle.PERSISTENT, "Monitors repo, CI/CD, channels"),
    TypeInfo("task", Lifecycle.EPHEMERAL, "Executes coding tasks"),
    TypeInfo("review", Lifecycle.EPHEMERAL, "PR analysis and risk classification"),
    TypeInfo("deploy", Lifecycle.EPHEMERAL, "Deploy orchestration with approvals"),
    TypeInfo("incident", Lifecycle.EPHEMERAL, "CI failure investigation"),
    TypeInfo("coordinator", Lifecycle.PERSISTENT, "Cross-project orchestration"),
)
_BUILTIN = {t.type: t for t in BUILTIN_TYPES}
# Agent ids read as in the seed: agent-proj-…, agent-coord-…, agent-task-…
_ID_PREFIX = {"project": "proj", "coordinator": "coord"}
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")


class AgentAction(StrEnum):
    SUSPEND = "suspend"
    RESUME = "resume"
    RESTART = "restart"
    SET_AUTONOMY = "set_autonomy"


ACTION_NAMES = ", ".join(a.value for a in AgentAction)


@dataclass(frozen=True)
class AgentView:
    """An agent with what its API shape embeds: its project (if any)."""

    agent: Agent
    project: Project | None

    def uptime(self, now: datetime | None = None) -> int:
        return uptime(self.agent.started_at, now or utcnow())


def uptime(started_at: datetime, now: datetime) -> int:
    """Seconds since an agent (re)started."""
    if started_at.tzinfo is None and now.tzinfo is not None:
        # Read back from SQLite: naive UTC. Lists do this per row: naive arithmetic skips two conversions.
        now = now.replace(tzinfo=None) if now.tzinfo is UTC else now.astimezone(UTC).replace(tzinfo=None)
        return max(0, int((now - started_at).total_seconds()))
    return max(0, int((now - as_utc(started_at)).total_seconds()))


@dataclass(frozen=True)
class ActionResult:
    agent_id: str
    action: AgentAction
    timestamp: datetime
    previous_status: str
    current_status: str
    previous_level: int
    current_level: int
    uptime: int | None = None


@dataclass(frozen=True)
class Suspensions:
    """Which suspended agents hold work back: a suspended agent its own task and actions, a suspended project
    agent everything of its project. A suspended agent starts nothing and runs no action."""

    agents: frozenset[str] = frozenset()
    projects: Mapping[str, str] = field(default_factory=dict)  # project id -> its suspended project agent

    def blocker(self, agent_id: str | None, project_id: str | None) -> str | None:
        """The suspended agent that holds back work of this agent (or project), if any."""
        if agent_id and agent_id in self.agents:
            return agent_id
        return self.projects.get(project_id) if project_id else None


async def suspensions(
    session: AsyncSession, agent_ids: Collection[str | None], project_ids: Collection[str | None]
) -> Suspensions:
    """The suspensions that concern these agents and projects, in one query."""
    agents = {a for a in agent_ids if a}
    projects = {p for p in project_ids if p}
    if not agents and not projects:
        return Suspensions()
    rows = list(await session.exec(select(Agent.id, Agent.type, Agent.project_id).where(
        Agent.status == AgentStatus.SUSPENDED,
        col(Agent.id).in_(agents) | (col(Agent.project_id).in_(projects) & (Agent.type == "project")),
    )))
    return Suspensions(agents=frozenset(r[0] for r in rows),
                       projects={r[2]: r[0] for r in rows if r[1] == "project" and r[2]})


def parse_level(value: Any) -> int:
    """An autonomy level: an integer 0-5 (a JSON number or a string of digits, not a bool or 2.5)."""
    if isinstance(value, bool):
        level = None
    elif isinstance(value, int):
        level = value
    elif isinstance(value, float) and value.is_integer():
        level = int(value)
    elif isinstance(value, str) and value.strip().isdecimal():  # int() reads these; "²" is a digit it does not
        level = int(value.strip())
    else:
        level = None
    if level is None or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValidationFailed("Autonomy level must be between 0 and 5", code="INVALID_AUTONOMY_LEVEL")
    return level


def parse_action(value: Any) -> AgentAction:
    try:
        return AgentAction(value)
    except ValueError:
        raise ValidationFailed(
            f"Invalid action. Must be one of: {ACTION_NAMES}", code="INVALID_ACTION"
        ) from None


@dataclass(frozen=True)
class AgentFilter:
    type: str | None = None
    status: AgentStatus | None = None
    project_id: str | None = None  # a project id or name


class Agents:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- types -------------------------------------------------------------------------------

    async def types(self, principal: Principal) -> list[TypeInfo]:
        principal.require(Scope.READ, "listing agent types")
        async with self.db.read() as session:
            return await self._types(session, principal.org_id)

    async def _types(self, session: AsyncSession, org_id: str) -> list[TypeInfo]:
        rows = await session.exec(
            select(AgentType).where(AgentType.org_id == org_id).order_by(col(AgentType.created_at))
        )
        return list(BUILTIN_TYPES) + [
            TypeInfo(r.type, Lifecycle(r.lifecycle), r.description, builtin=False) for r in rows
        ]

    async def register_type(
        self, principal: Principal, *, type_name: str, lifecycle: str, description: str
    ) -> TypeInfo:
        principal.require(Scope.ADMIN, "registering an agent type")
        if not _TYPE_NAME.match(name_text(type_name or "", "the agent type")):
            raise ValidationFailed(
                "an agent type is 2-32 characters: a lower-case letter, then letters, digits, '-' or '_'",
                code="INVALID_AGENT_TYPE",
            )
        try:
            cycle = Lifecycle(lifecycle)
        except ValueError:
            raise ValidationFailed(
                "lifecycle must be persistent or ephemeral", code="INVALID_LIFECYCLE"
            ) from None
        description = free_text((description or "").strip(), "the description")
        if not description or len(description) > 500:
            raise ValidationFailed("a description is 1-500 characters", code="VALIDATION_ERROR")
        async with self.db.write() as session:
            existing = await session.get(AgentType, (principal.org_id, type_name))
            if type_name in _BUILTIN or existing is not None:
                raise Conflict(f"agent type {type_name!r} already exists", code="AGENT_TYPE_EXISTS")
            session.add(AgentType(org_id=principal.org_id, type=type_name, lifecycle=cycle, description=description))
            await record(session, principal, "agent", "agent_type.registered", payload={"type": type_name})
        return TypeInfo(type_name, cycle, description, builtin=False)

    # --- reading -----------------------------------------------------------------------------

    async def list(
        self, principal: Principal, flt: AgentFilter | None = None, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[AgentView], int]:
        """A page of agents, oldest first, and the total that match."""
        principal.require(Scope.READ, "listing agents")
        limit = max(1, min(limit, MAX_PAGE))
        flt = flt or AgentFilter()
        where = [Agent.org_id == principal.org_id]
        if flt.type:
            where.append(Agent.type == flt.type)
        if flt.status:
            where.append(Agent.status == flt.status.value)
        async with self.db.read() as session:
            if flt.project_id:
                project = await find_project(session, principal.org_id, flt.project_id)
                if project is None:
                    return [], 0
                where.append(Agent.project_id == project.id)
            total = (await session.exec(select(func.count()).select_from(Agent).where(*where))).one()
            rows = await session.exec(
                select(Agent, Project)
                .join(Project, col(Agent.project_id) == col(Project.id), isouter=True)
                .where(*where)
                .order_by(col(Agent.created_at), col(Agent.id))
                .offset(max(0, offset))
                .limit(limit)
            )
            return [AgentView(a, p) for a, p in rows], int(total)

    async def page(
        self, principal: Principal, flt: AgentFilter | None = None, *, limit: int = 100, offset: int = 0,
        cursor: str | None = None,
    ) -> AgentPage:
        """A page of agents, oldest first: after `cursor` (a keyset page, whose cost does not grow with how far
        into the list it is), else at `offset`; with the total that match and the next page's cursor."""
        principal.require(Scope.READ, "listing agents")
        limit = max(1, min(limit, MAX_PAGE))
        flt = flt or AgentFilter()
        shape = (bool(flt.type), flt.status is not None, bool(flt.project_id))
        filtered = any(shape)
        scope = scope_of("agents", principal.org_id, flt.type, flt.status, flt.project_id)
        after = decode(cursor, scope) if cursor else None
        # A filtered total is counted once, on the first page, and travels in the cursor; the org's whole count
        # is kept by the store, so it is read fresh on every page.
        known_total = after.total if after is not None and filtered else None
        statement = page_statement(*shape, after is not None, known_total is None,
                                   skipping=after is None and offset > 0)
        params: dict[str, Any] = {"org": principal.org_id, "limit": limit + 1}  # one more: is there a next page?
        if flt.type:
            params["type"] = flt.type
        if flt.status is not None:
            params["status"] = flt.status.value
        if flt.project_id:
            params["project"] = flt.project_id.strip()
        if after is not None:
            params.update(after_at=after.created_at, after_id=after.id)
        elif offset > 0:
            params["offset"] = offset
        rows = await self.db.rows(statement, params)  # one statement: the page and its total
        if known_total is not None:
            total = known_total
        elif rows:
            total = int(rows[0].total)
        else:  # past the end: no row carried the total
            total = int((await self.db.rows(total_statement(*shape), params))[0][0])
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode(Cursor(last.created_at, last.id, total if filtered else None), scope)
        width = len(PAGE_COLUMNS)
        return AgentPage(rows=[AgentRow._make(r[:width]) for r in rows], total=total, next_cursor=next_cursor)

    async def get(self, principal: Principal, agent_id: str) -> AgentView:
        principal.require(Scope.READ, "reading an agent")
        async with self.db.read() as session:
            row = (
                await session.exec(
                    select(Agent, Project)
                    .join(Project, col(Agent.project_id) == col(Project.id), isouter=True)
                    .where(Agent.id == agent_id, Agent.org_id == principal.org_id)
                )
            ).first()
        if row is None:
            raise NotFound("Agent not found", code="AGENT_NOT_FOUND")
        return AgentView(*row)

    @staticmethod
    async def _agent(session: AsyncSession, principal: Principal, agent_id: str) -> Agent:
        agent = await session.get(Agent, agent_id)
        # Another org's agent is "not found": its existence is not ours to reveal.
        if agent is None or agent.org_id != principal.org_id:
            raise NotFound("Agent not found", code="AGENT_NOT_FOUND")
        return agent

    # --- changing ----------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        type: str,
        project_id: str | None = None,
        autonomy_level: Any = DEFAULT_LEVEL,
        task: str | None = None,
    ) -> AgentView:
        principal.require(Scope.WRITE, "creating an agent")
        name = name_text((name or "").strip(), "the agent name")
        if not name or len(name) > 100:
            raise ValidationFailed("an agent name is 1-100 characters", code="INVALID_NAME")
        level = parse_level(autonomy_level)
        async with self.db.write() as session:
            known = {t.type for t in await self._types(session, principal.org_id)}
            if type not in known:
                raise ValidationFailed(
                    f"unknown agent type {type!r}: one of {', '.join(sorted(known))}",
                    code="INVALID_AGENT_TYPE",
                )
            project = None
            if project_id:
                project = await resolve_project(session, principal.org_id, project_id)
            elif type == "project":
                raise ValidationFailed("a project agent needs a projectId", code="PROJECT_REQUIRED")
            if type == "project" and project is not None:
                existing = (
                    await session.exec(
                        select(Agent.id).where(Agent.project_id == project.id, Agent.type == "project")
                    )
                ).first()
                if existing:
                    raise Conflict(
                        f"project {project.id} already has its project agent {existing}",
                        code="PROJECT_AGENT_EXISTS",
                    )
            now = utcnow()
            agent = Agent(
                id=new_id(f"agent-{_ID_PREFIX.get(type, type)}"),
                org_id=principal.org_id,
                name=name,
                type=type,
                status=AgentStatus.ACTIVE,
                autonomy_level=level,
                project_id=project.id if project else None,
                task=task,
                created_at=now,
                started_at=now,
                last_activity=now,
            )
            session.add(agent)
            await record(
                session, principal, "agent", "agent.created", agent_id=agent.id,
                payload={"name": name, "type": type, "autonomyLevel": level, "projectId": agent.project_id},
            )
        return AgentView(agent, project)

    async def delete(self, principal: Principal, agent_id: str) -> None:
        principal.require(Scope.WRITE, "deleting an agent")
        async with self.db.write() as session:
            agent = await self._agent(session, principal, agent_id)
            await session.delete(agent)
            await record(
                session, principal, "agent", "agent.deleted", agent_id=agent_id,
                payload={"name": agent.name, "type": agent.type, "status": agent.status},
            )

    async def act(self, principal: Principal, agent_id: str, action: Any, params: Any = None) -> ActionResult:
        """Run one agent action. Raising autonomy needs `approve`: it pre-approves what the agent does."""
        act = parse_action(action)
        principal.require(Scope.WRITE, f"{act.value} of an agent")
        level: int | None = None
        if act is AgentAction.SET_AUTONOMY:
            if not isinstance(params, dict) or "level" not in params:
                raise ValidationFailed(
                    "set_autonomy needs params.level: Autonomy level must be between 0 and 5",
                    code="INVALID_AUTONOMY_LEVEL",
                )
            level = parse_level(params["level"])
        elif params is not None and not isinstance(params, dict):
            raise ValidationFailed("params must be an object", code="VALIDATION_ERROR")

        now = utcnow()
        bound: dict[str, Any] = {"agent": agent_id, "org": principal.org_id, "new_last_activity": now}
        if act is AgentAction.SUSPEND:
            bound["new_status"] = AgentStatus.SUSPENDED.value
        elif act is AgentAction.RESUME:
            bound["new_status"] = AgentStatus.ACTIVE.value
        elif act is AgentAction.RESTART:
            bound["new_started_at"] = now
        else:
            bound["new_autonomy_level"] = bound["level"] = level
        # Raising the level pre-approves what the agent does: without `approve`, the statement sets only a level
        # no higher than the agent's own (its condition, so that the check and the change see one row).
        may_raise = level is None or principal.can(Scope.APPROVE)
        if not self.db.is_sqlite:
            # One statement, atomic by itself: the row locked and read as it was, changed, and its event written
            # (CTEs), so the action is one round trip to PostgreSQL instead of four (BEGIN, change, event, COMMIT).
            bound.update(actor=principal.actor, event=f"agent.{act.value}")
            row = (await self.db.change(_act_logged(act, may_raise), bound)).first()
            changed, before = (None, None) if row is None else ((row.status, row.autonomy_level),
                                                                  (row.old_status, row.old_level))
            if changed is None and not (await self.db.rows(_AGENT_STATE, bound)):
                raise NotFound("Agent not found", code="AGENT_NOT_FOUND")
            # (the agent is there and nothing changed: a raise without the approve scope)
        else:
            # Three statements straight on the driver's connection (Database.direct), in a savepoint of the writes
            # committed together. One writer holds the store (BEGIN IMMEDIATE): reading first costs nothing.
            async with self.db.direct() as sql:
                before = await sql.first(_AGENT_STATE, bound)
                changed = None
                if before is None:  # no such agent here (another org's is not ours to reveal)
                    raise NotFound("Agent not found", code="AGENT_NOT_FOUND")
                changed = await sql.first(_act_statement(act, may_raise, old=False), bound)
                if changed is not None:
                    await sql.rows(_EVENT, {
                        "org_id": principal.org_id, "agent_id": agent_id, "task_id": None, "category": "agent",
                        "name": f"agent.{act.value}", "actor": principal.actor, "occurred_at": now,
                        "payload": {"previousStatus": before[0], "currentStatus": changed[0],
                                    "previousLevel": before[1], "currentLevel": changed[1]},
                    })
        if changed is None or before is None:  # nothing changed: a raise without the approve scope
            principal.require(Scope.APPROVE, "raising an agent's autonomy")
            raise AssertionError("only a raise without the approve scope changes nothing")  # pragma: no cover
        (before_status, before_level), (status, level) = before[:2], changed[:2]
        return ActionResult(
            agent_id=agent_id,
            action=act,
            timestamp=now,
            previous_status=before_status,
            current_status=status,
            previous_level=before_level,
            current_level=level,
            uptime=0 if act is AgentAction.RESTART else None,
        )


# --- the action's statements -------------------------------------------------------------------

_A = table_of(Agent)
_EVENTS = table_of(Event)
_ORG: BindParameter[str] = bindparam("org", type_=_A.c.org_id.type)

_EVENT = insert(_EVENTS)
_AGENT_STATE = select(_A.c.status.label("old_status"), _A.c.autonomy_level.label("old_level")).where(
    _A.c.id == bindparam("agent"), _A.c.org_id == _ORG)


@lru_cache(maxsize=32)
def _act_logged(act: AgentAction, may_raise: bool) -> Any:
    """PostgreSQL: `_act_statement` with the action's event inserted by the same statement (a data-modifying CTE,
    run whether or not the outer select reads it), returning the agent's new and old status and level."""
    changed = _act_statement(act, may_raise, old=True).cte("changed")
    payload = func.json_build_object(
        "previousStatus", changed.c.old_status, "currentStatus", changed.c.status,
        "previousLevel", changed.c.old_level, "currentLevel", changed.c.autonomy_level)
    logged = insert(_EVENTS).from_select(
        ["org_id", "agent_id", "category", "name", "actor", "payload", "occurred_at"],
        sa_select(_ORG, bindparam("agent", type_=_EVENTS.c.agent_id.type), literal("agent"),
               bindparam("event", type_=_EVENTS.c.name.type), bindparam("actor", type_=_EVENTS.c.actor.type),
               payload, bindparam("new_last_activity", type_=_EVENTS.c.occurred_at.type)).select_from(changed),
    ).cte("logged")
    return sa_select(changed.c.status, changed.c.autonomy_level, changed.c.old_status, changed.c.old_level
                     ).add_cte(logged)


@lru_cache(maxsize=32)
def _act_statement(act: AgentAction, may_raise: bool, *, old: bool) -> Any:
    """UPDATE agent … RETURNING its new status and level; with `old` (PostgreSQL), also the values it had, read
    under the row's lock in the same statement."""
    values: dict[str, Any] = {"last_activity": bindparam("new_last_activity", type_=_A.c.last_activity.type)}
    if act is AgentAction.SUSPEND or act is AgentAction.RESUME:
        values["status"] = bindparam("new_status", type_=_A.c.status.type)
    elif act is AgentAction.RESTART:
        values["status"] = case((_A.c.status == AgentStatus.SUSPENDED.value, _A.c.status),
                                else_=AgentStatus.ACTIVE.value)
        values["started_at"] = bindparam("new_started_at", type_=_A.c.started_at.type)
    else:
        values["autonomy_level"] = bindparam("new_autonomy_level", type_=_A.c.autonomy_level.type)
    where: list[Any] = [_A.c.id == bindparam("agent"), _A.c.org_id == _ORG]
    if not may_raise:
        where.append(_A.c.autonomy_level >= bindparam("level", type_=_A.c.autonomy_level.type))
    if not old:
        return update(_A).where(*where).values(values).returning(_A.c.status, _A.c.autonomy_level)
    before = (select(_A.c.id, _A.c.status.label("old_status"), _A.c.autonomy_level.label("old_level"))
              .where(_A.c.id == bindparam("agent"), _A.c.org_id == _ORG).with_for_update().cte("old"))
    return (update(_A).where(_A.c.id == before.c.id, *where[2:]).values(values)
            .returning(_A.c.status, _A.c.autonomy_level, before.c.old_status, before.c.old_level))
