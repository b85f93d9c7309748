"""Sessions: a session groups tasks toward one piece of work (ARCHITECTURE section 2); its life is here.

Create (every field of the Agentuity hub's create body, checked by core.sessions.fields; a standard session with a
task starts its first task), list (search, archived or not, a page and its total), get, update, archive (history
only: its unfinished tasks are stopped, and nothing runs in it until it is resumed), resume, delete (its unfinished
tasks stopped first; its tasks stay as history). Who may read, run in and manage a session is its visibility's
(core.sessions.rows); every change writes a session event.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.errors import ValidationFailed
from core.people.access import Principal, Scope
from core.sessions import fields
from core.sessions.participants import Participant, participants_of
from core.sessions.rows import ACTIVE, ARCHIVED, DELETED, PRIVATE, managed_session, readable_session
from core.sessions.threads import created_payload, new_session_id
from core.sessions.views import SessionView, session_views
from core.store.db import Database
from core.store.events import record
from core.store.models import Session as Session  # the record this service returns
from core.store.models import Task, Thread
from core.store.search import contains
from core.tasks.budget import Budget
from core.tasks.state import FINISHED, TaskStatus
from core.tasks.steering import MAX_PROMPT, owner_of
from core.textcheck import free_text

if TYPE_CHECKING:
    from core.sessions.loop import Loops
    from core.tasks.service import Tasks

__all__ = ["MAX_PAGE", "Session", "SessionPage", "Sessions", "new_session_id"]

MAX_PAGE = 200
DEFAULT_PAGE = 50
MAX_SEARCH = 200
_UNFINISHED = tuple(s.value for s in TaskStatus if s not in FINISHED)


@dataclass(frozen=True)
class SessionPage:
    rows: list[Session]
    total: int


class Sessions:
    """Sessions' life. `tasks` starts a standard session's first task and stops a session's tasks on archive and
    delete; `agent_env` are the variable names the operator passes to agents (SHEPHERD_AGENT_ENV), which a session's
    env may also set; `loops` starts a loop session's first iteration."""

    def __init__(self, db: Database, tasks: Tasks | None = None, *, agent_env: Iterable[str] = (),
                 loops: Loops | None = None) -> None:
        self.db = db
        self.tasks = tasks
        self.agent_env = tuple(agent_env)
        self.loops = loops

    # --- creating ------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, *, task: str = "", label: str | None = None, agent: str | None = None,
        visibility: str | None = None, workflow_mode: str | None = None, loop: Mapping[str, Any] | None = None,
        tags: Iterable[Any] | None = None, skills: Iterable[Mapping[str, Any]] | None = None,
        repo: Mapping[str, Any] | None = None, repos: Iterable[Mapping[str, Any]] | None = None,
        workspace_id: str | None = None, env: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None, budget: Budget | None = None,
        origin: dict[str, Any] | None = None, start: bool = True,
    ) -> Session:
        """A new session, its fields checked. A standard session with a task starts its first task in the same
        commit (the default agent, the primary repository and its branch, the session's budget): a task that cannot
        start (an unknown agent, a repository Shepherd may not fetch) leaves no session behind either. A loop session
        starts its first iteration the same way (core.sessions.loop). `start`
        False: the caller starts its tasks itself (CloudCoding's invoke, whose tasks are its parallel ones)."""
        principal.require(Scope.WRITE, "creating a session")
        task = free_text((task or "").strip(), "the task")
        if len(task) > MAX_PROMPT:
            raise ValidationFailed(f"a session's task is at most {MAX_PROMPT} characters", code="INVALID_TASK")
        mode = fields.choice(workflow_mode, fields.WORKFLOW_MODES, "workflowMode", "standard")
        settings = fields.loop(loop, mode)
        if settings is not None and not (settings.goal or task):
            raise ValidationFailed("a loop session needs a goal: loop.goal, or the task", code="INVALID_LOOP")
        self._check_agent(agent)
        limits = budget or Budget()
        owner_id, owner_name = owner_of(principal)
        now = utcnow()
        row = Session(
            id=new_session_id(), org_id=principal.org_id, label=fields.label(label, task or "session"), task=task,
            default_agent=agent, visibility=fields.choice(visibility, fields.VISIBILITIES, "visibility", PRIVATE),
            workflow_mode=mode, tags=fields.tags(tags), skills=fields.skills(skills),
            repos=fields.repos(repo, repos), workspace_id=fields.workspace_id(workspace_id),
            env=fields.env(env, self.agent_env), meta=fields.metadata(metadata), owner_id=owner_id,
            owner_name=owner_name, origin=origin or {}, max_turns=limits.max_turns, max_minutes=limits.max_minutes,
            max_cost=limits.max_cost, created_at=now, updated_at=now, last_activity_at=now,
        )
        if settings is not None:
            row.loop, row.loop_status = settings.stored(), "idle"
        async with self.db.unit():
            async with self.db.write() as session:
                session.add(row)
                await record(session, principal, "session", "session.created", session_id=row.id,
                             payload=created_payload(row))
            if start and settings is not None and self.loops is not None:  # iteration 1, in the same commit
                await self.loops.start(principal, row.id)
            elif start and mode == "standard" and task and self.tasks is not None:
                primary = row.repos[0] if row.repos else {}
                await self.tasks.create(principal, prompt=task, runtime=agent, repo=fields.repo_ref(primary),
                                        branch=primary.get("branch"), session_id=row.id)
        return row

    def _check_agent(self, agent: str | None) -> None:
        if agent is None or self.tasks is None:
            return
        known = self.tasks.runtimes()
        if agent not in known:
            raise ValidationFailed(f"unknown agent {agent!r}: one of {', '.join(known)}", code="UNKNOWN_AGENT")

    # --- reading -------------------------------------------------------------------------------

    async def get(self, principal: Principal, session_id: str) -> Session:
        """A session the principal may read (another org's, or a private one of someone else's: 404)."""
        principal.require(Scope.READ, "reading sessions")
        async with self.db.read() as session:
            return await readable_session(session, principal, session_id)

    async def list(
        self, principal: Principal, *, search: str | None = None, include_archived: bool = False,
        mine: bool = False, limit: int = DEFAULT_PAGE, offset: int = 0,
    ) -> SessionPage:
        """A page of the sessions the principal may read (with `mine`, their own), the most recently active first,
        and how many match."""
        principal.require(Scope.READ, "listing sessions")
        where: builtins.list[Any] = [Session.org_id == principal.org_id]
        where.append(Session.status == ACTIVE if not include_archived else col(Session.status).in_((ACTIVE, ARCHIVED)))
        me = principal.identity
        if mine:
            where.append(Session.owner_id == me)
        elif not principal.can(Scope.ADMIN):
            where.append(or_(col(Session.visibility) != PRIVATE, col(Session.owner_id) == me))
        text = (search or "").strip()
        if len(text) > MAX_SEARCH:
            raise ValidationFailed(f"search is at most {MAX_SEARCH} characters", code="INVALID_SEARCH")
        if text:
            text = free_text(text, "search")
            where.append(or_(*(contains(c, text)
                               for c in (col(Session.label), col(Session.task), cast(Session.tags, String)))))
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        # the page's ids first, sorted from the (org_id, status, last_activity_at) index with only the key columns in
        # the sort (a window count, or sorting whole rows, carried every matching session's JSON columns through
        # the sort: 15 ms a page at 2,000 sessions); then the page's 50 rows, and the total from the index
        ids = (select(col(Session.id), col(Session.last_activity_at)).where(*where)
               .order_by(col(Session.last_activity_at).desc(), col(Session.id).desc())
               .offset(offset).limit(limit).subquery("page"))
        async with self.db.read() as session:
            rows = list(await session.exec(
                select(Session).join(ids, col(Session.id) == ids.c.id)
                .order_by(ids.c.last_activity_at.desc(), ids.c.id.desc())))
            total = (await session.exec(select(func.count()).select_from(Session).where(*where))).one()
        return SessionPage(rows, int(total))

    async def views(self, principal: Principal, rows: builtins.list[Session]) -> builtins.list[SessionView]:
        """What the hub shows of each of `rows` (core.sessions.views): a fixed number of queries for the page."""
        alive = await self.tasks.runner_available() if self.tasks is not None else False
        async with self.db.read() as session:
            views, _ = await session_views(session, principal, rows, runner_alive=alive)
        return views

    async def view(self, principal: Principal, session_id: str) -> SessionView:
        return (await self.views(principal, [await self.get(principal, session_id)]))[0]

    async def participants(self, principal: Principal, session_id: str, *, include_disconnected: bool = False,
                           limit: int = MAX_PAGE) -> builtins.list[Participant]:
        """Who and what is attached to a session (core.sessions.participants), the connected ones unless asked."""
        principal.require(Scope.READ, "reading sessions")
        async with self.db.read() as session:
            row = await readable_session(session, principal, session_id)
            found = (await participants_of(session, [row]))[row.id]
        return [p for p in found if include_disconnected or p.connected][:max(1, min(limit, MAX_PAGE))]

    async def tasks_of(self, principal: Principal, session_id: str, *, limit: int = 500) -> builtins.list[Task]:
        """A session's tasks, oldest first."""
        principal.require(Scope.READ, "reading sessions")
        async with self.db.read() as session:
            await readable_session(session, principal, session_id)
            return list(await session.exec(
                select(Task).where(Task.org_id == principal.org_id, Task.session_id == session_id)
                .order_by(col(Task.created_at), col(Task.id)).limit(limit)))

    # --- changing ------------------------------------------------------------------------------

    async def update(
        self, principal: Principal, session_id: str, *, label: str | None = None, agent: str | None = None,
        visibility: str | None = None, tags: Iterable[Any] | None = None,
        skills: Iterable[Mapping[str, Any]] | None = None,
    ) -> Session:
        """Change what is given (None: unchanged) of a session one manages."""
        principal.require(Scope.WRITE, "changing a session")
        changes: dict[str, Any] = {}
        if label is not None:
            changes["label"] = fields.label(label, "session")
        if agent is not None:
            self._check_agent(agent)
            changes["default_agent"] = agent
        if visibility is not None:
            changes["visibility"] = fields.choice(visibility, fields.VISIBILITIES, "visibility", PRIVATE)
        if tags is not None:
            changes["tags"] = fields.tags(tags)
        if skills is not None:
            changes["skills"] = fields.skills(skills)
        async with self.db.write() as session:
            row = await managed_session(session, principal, session_id)
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            session.add(row)
            await record(session, principal, "session", "session.updated", session_id=row.id,
                         payload={"fields": sorted(changes)})
        return row

    async def archive(self, principal: Principal, session_id: str) -> Session:
        """History only: its unfinished tasks are stopped (an archived session runs nothing: a task left running
        would go on spending in a session nobody watches any more), and it takes no new tasks, follow-ups or loop
        iterations until it is resumed. Archiving an archived session changes nothing."""
        principal.require(Scope.WRITE, "archiving a session")
        async with self.db.unit(), self.db.write() as session:
            row = await managed_session(session, principal, session_id)
            if row.status == ARCHIVED:
                return row
            row.status, row.archived_at = ARCHIVED, utcnow()
            row.updated_at = row.archived_at
            session.add(row)
            stopped = await self._stop_tasks(session, principal, row.id)
            await record(session, principal, "session", "session.archived", session_id=row.id,
                         payload={"stoppedTasks": stopped})
        return row

    async def resume(self, principal: Principal, session_id: str) -> Session:
        """Live again: it takes new tasks. Resuming a live session changes nothing."""
        principal.require(Scope.WRITE, "resuming a session")
        async with self.db.write() as session:
            row = await managed_session(session, principal, session_id)
            if row.status == ACTIVE:
                return row
            now = utcnow()
            row.status, row.archived_at, row.updated_at, row.last_activity_at = ACTIVE, None, now, now
            session.add(row)
            await record(session, principal, "session", "session.resumed", session_id=row.id)
        return row

    async def delete(self, principal: Principal, session_id: str) -> Session:
        """Stop its unfinished tasks, then remove the session. Its tasks stay as history (their session_id kept,
        and their events); the threads it was bound to are bound to nothing, so the next task run there begins a
        new session. What is kept of the session is a tombstone (404 everywhere): its owner and its visibility, so
        that a private session's tasks stay hidden from the others as they were."""
        principal.require(Scope.WRITE, "deleting a session")
        async with self.db.unit(), self.db.write() as session:
            row = await managed_session(session, principal, session_id)
            stopped = await self._stop_tasks(session, principal, row.id)
            await session.exec(update(Thread).where(
                col(Thread.session_id) == row.id).values(session_id=None))
            _tombstone(row)
            session.add(row)
            await record(session, principal, "session", "session.deleted", session_id=row.id,
                         payload={"label": row.label, "stoppedTasks": stopped})
        return row

    async def _stop_tasks(self, session: AsyncSession, principal: Principal, session_id: str) -> builtins.list[str]:
        """Stop the session's unfinished tasks (each through the Tasks service, the one that steers tasks: a waiting
        one ends at once, a running one is stopped by its runner), in the caller's unit of work."""
        ids = list(await session.exec(select(Task.id).where(
            Task.org_id == principal.org_id, Task.session_id == session_id, col(Task.status).in_(_UNFINISHED))))
        if ids and self.tasks is not None:
            for task_id in ids:
                await self.tasks.stop(principal, task_id)
        return ids


def _tombstone(row: Session) -> None:
    """What is left of a deleted session: its id, org, owner and visibility; nothing of what people wrote in it."""
    row.status, row.label, row.task, row.default_agent, row.project_id = DELETED, "", "", None, None
    row.repos, row.tags, row.skills, row.meta, row.env, row.origin = [], [], [], {}, {}, {}
    row.workspace_id, row.loop, row.loop_status, row.loop_summary, row.loop_next_action = None, None, None, None, None
    row.updated_at = utcnow()
