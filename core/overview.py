"""What an org has right now, in one read: agents and tasks by status, projects, pending confirmations, and
whether a runner is up. `status` shows it (and digests and the dashboard's overview will); it was five reads
and two of them loaded whole lists (every project, up to 500 confirmations) to take their length."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, literal, select, union_all

from core.autonomy.plans import Status
from core.clock import utcnow
from core.people.access import Principal, Scope
from core.sessions.rows import shown_session, shown_task
from core.store.db import Database
from core.store.models import Agent, Confirmation, Project, RunnerNode, Task, table_of
from core.tasks.service import RUNNER_STALE_S


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


class Overviews:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of(self, principal: Principal) -> Overview:
        principal.require(Scope.READ, "reading status")
        cutoff = utcnow() - timedelta(seconds=RUNNER_STALE_S)
        async with self.db.read() as session:
            conn = await session.connection()
            hide = not principal.can(Scope.ADMIN)
            params = {"org": principal.org_id, "cutoff": cutoff, **({"me": principal.identity} if hide else {})}
            rows = (await conn.execute(_statement(hide), params)).all()
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
