"""What an org has right now, in one read: agents and tasks by status, projects, pending confirmations, and
whether a runner is up. `status` shows it (and digests and the dashboard's overview will); it was five reads
and two of them loaded whole lists (every project, up to 500 confirmations) to take their length."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, func, literal, select, union_all

from core.autonomy.plans import Status
from core.clock import as_utc, utcnow
from core.people.access import Principal, Scope
from core.sessions.rows import shown_confirmations, shown_session, shown_task, shown_tasks
from core.store.db import Database
from core.store.models import Agent, Confirmation, Project, RunnerNode, Task, TaskLog, table_of
from core.tasks.service import RUNNER_STALE_S
from core.tasks.state import ACTIVE, FINISHED, LogType, Outcome, State, TaskStatus


@dataclass(frozen=True)
class Overview:
    agents: dict[str, int] = field(default_factory=dict)  # by status
    tasks: dict[str, int] = field(default_factory=dict)  # by status
    projects: int = 0
    pending: int = 0  # confirmations waiting for people
    runners: int = 0  # runners with a fresh heartbeat


@lru_cache(maxsize=2)
def _statement(hide: bool) -> Any:
    """`hide`: without the tasks (and what they ask) of private sessions that are not the viewer's (`me`)."""
    org: Any = bindparam("org")
    agent, task, project, conf, node = (table_of(m) for m in (Agent, Task, Project, Confirmation, RunnerNode))
    me: Any = bindparam("me")
    tasks_shown = [shown_session(task.c.session_id, org, me)] if hide else []
    confs_shown = [shown_task(conf.c.task_id, org, me)] if hide else []
    return union_all(
        select(literal("agent"), agent.c.status, func.count()).where(agent.c.org_id == org).group_by(agent.c.status),
        select(literal("task"), task.c.status, func.count()).where(task.c.org_id == org, *tasks_shown)
        .group_by(task.c.status),
        select(literal("project"), literal(""), func.count()).select_from(project).where(project.c.org_id == org),
        select(literal("pending"), literal(""), func.count()).select_from(conf)
        .where(conf.c.org_id == org, conf.c.status == Status.PENDING.value, *confs_shown),
        select(literal("runners"), literal(""), func.count()).select_from(node)
        .where(node.c.heartbeat_at > bindparam("cutoff", type_=node.c.heartbeat_at.type)),
    )


@dataclass(frozen=True)
class Waiting:
    """Something that waits for people: a pending confirmation (`code`, with its expiry) or a task waiting on
    input (a question its agent asked; no expiry)."""

    kind: str  # confirmation | task
    id: str
    title: str  # what it asks
    since: datetime
    expires_at: datetime | None = None
    code: str = ""  # a confirmation's code
    task_id: str | None = None
    task_name: str = ""


@dataclass(frozen=True)
class Running:
    """A task at work, with the last line its agent printed (empty before its first)."""

    id: str
    name: str
    status: str
    started_at: datetime | None
    latest: str
    latest_at: datetime | None


@dataclass(frozen=True)
class Board:
    """The dashboard's overview: the counts, what waits for people (oldest first), the running tasks (newest
    first), and today's outcomes (UTC day) by outcome, every known outcome present."""

    counts: Overview
    waiting: list[Waiting]
    running: list[Running]
    outcomes: dict[str, int]
    waiting_more: bool = False  # more wait than `waiting` holds
    running_more: bool = False


class Overviews:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of(self, principal: Principal) -> Overview:
        principal.require(Scope.READ, "reading status")
        cutoff = utcnow() - timedelta(seconds=RUNNER_STALE_S)
        hide = not principal.can(Scope.ADMIN)
        params = {"org": principal.org_id, "cutoff": cutoff, **({"me": principal.identity} if hide else {})}
        rows = await self.db.rows(_statement(hide), params)  # one statement: no session, no transaction
        agents: dict[str, int] = {}
        tasks: dict[str, int] = {}
        single: dict[str, int] = {}
        for kind, status, n in rows:
            if kind == "agent":
                agents[status] = int(n)
            elif kind == "task":
                tasks[status] = int(n)
            else:
                single[kind] = int(n)
        return Overview(agents=agents, tasks=tasks, projects=single.get("project", 0),
                        pending=single.get("pending", 0), runners=single.get("runners", 0))

    async def board(self, principal: Principal, *, limit: int = 20, now: datetime | None = None) -> Board:
        """`of`, with what the dashboard's overview shows beside the counts: what waits for people (pending
        confirmations and tasks waiting on input, oldest first), the running tasks with their latest line, and
        the outcomes of the tasks that finished today (UTC). A private session's tasks are hidden as in `of`."""
        counts = await self.of(principal)
        now = now or utcnow()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        org = principal.org_id
        async with self.db.read() as session:
            conn = await session.connection()
            confs = (await conn.execute(
                select(_C.c.id, _C.c.code, _C.c.summary, _C.c.created_at, _C.c.expires_at, _C.c.task_id)
                .where(_C.c.org_id == org, _C.c.status == Status.PENDING.value, *shown_confirmations(principal))
                .order_by(_C.c.created_at, _C.c.id).limit(limit + 1))).all()
            # a task waits on input when its agent asked (state idle while running, or its turn ended on a
            # question); a gated task (`awaiting`) waits on its confirmation, listed above
            asking = (await conn.execute(
                select(_T.c.id, _T.c.name, _T.c.state_message, _T.c.state_at)
                .where(_T.c.org_id == org, _T.c.state == State.IDLE.value,
                       _T.c.status.in_([TaskStatus.RUNNING.value, TaskStatus.COMPLETED.value]), *shown_tasks(principal))
                .order_by(_T.c.state_at, _T.c.id).limit(limit + 1))).all()
            running = (await conn.execute(
                select(_T.c.id, _T.c.name, _T.c.status, _T.c.started_at)
                .where(_T.c.org_id == org, _T.c.status.in_([s.value for s in ACTIVE]), *shown_tasks(principal))
                .order_by(_T.c.created_at.desc(), _T.c.id.desc()).limit(limit + 1))).all()
            latest: dict[str, tuple[str, datetime]] = {}
            ids = [r.id for r in running[:limit]]
            if ids:
                last = (select(_L.c.task_id, func.max(_L.c.id).label("id"))
                        .where(_L.c.task_id.in_(ids), _L.c.type == LogType.OUTPUT.value)
                        .group_by(_L.c.task_id).subquery())
                for task_id, content, at in (await conn.execute(
                        select(_L.c.task_id, _L.c.content, _L.c.time).join(last, and_(
                            last.c.id == _L.c.id, last.c.task_id == _L.c.task_id)))).all():
                    lines = content.rstrip("\n").splitlines()
                    latest[task_id] = (lines[-1] if lines else "", at)
            finished = (await conn.execute(
                select(_T.c.outcome, _T.c.status, func.count())
                .where(_T.c.org_id == org, _T.c.finished_at >= midnight,
                       _T.c.status.in_([s.value for s in FINISHED]), *shown_tasks(principal))
                .group_by(_T.c.outcome, _T.c.status))).all()
        waiting = [Waiting("confirmation", r.id, r.summary, r.created_at, expires_at=r.expires_at, code=r.code,
                           task_id=r.task_id) for r in confs[:limit]]
        waiting += [Waiting("task", r.id, r.state_message, r.state_at, task_id=r.id, task_name=r.name)
                    for r in asking[:limit]]
        waiting.sort(key=lambda w: as_utc(w.since))
        outcomes = {o.value: 0 for o in Outcome}
        for outcome, status, n in finished:
            key = outcome or {TaskStatus.COMPLETED.value: Outcome.SUCCEEDED.value,
                              TaskStatus.CANCELLED.value: Outcome.CANCELLED.value}.get(status, Outcome.FAILED.value)
            outcomes[key] = outcomes.get(key, 0) + int(n)
        return Board(
            counts=counts, waiting=waiting[:limit],
            running=[Running(r.id, r.name, r.status, r.started_at, *latest.get(r.id, ("", None)))
                     for r in running[:limit]],
            outcomes=outcomes, waiting_more=len(confs) > limit or len(asking) > limit or len(waiting) > limit,
            running_more=len(running) > limit,
        )


_C, _T, _L = table_of(Confirmation), table_of(Task), table_of(TaskLog)
