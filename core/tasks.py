"""Tasks: one coding job, run by an ephemeral `task` agent through a Runner.

This module is what channels and APIs call: create, read and steer tasks. Its life and its states are
core.task_state's (the one writer of a task's status); the runner's side (claiming, running, finishing) is
core.supervisor and the modules it wires.
"""

from __future__ import annotations

import builtins
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core import task_state
from core.access import Principal, Scope
from core.agents import DEFAULT_LEVEL, AgentStatus, parse_level
from core.clock import utcnow
from core.conversations import bind_thread
from core.db import Database
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.events import record
from core.ids import new_id
from core.models import Agent, Project, RunnerNode, User
from core.models import Task as Task  # the records this service returns
from core.models import TaskLog as TaskLog  # the records this service returns
from core.projects import check_branch, find_project, resolve_project
from core.repos import RepoRules
from core.repos import repo_kind as repo_kind  # re-exported: where repositories come from is core.repos

if TYPE_CHECKING:
    from core.confirmations import Confirmations
from core.runners.sandbox import home_for
from core.snapshots import MAX_SNAPSHOT_BYTES
from core.task_state import ACTIVE, GATED, WAITING

# re-exported while channels still import them from here: a task's states are core.task_state's
from core.task_state import FINISHED as FINISHED
from core.task_state import Outcome as Outcome
from core.task_state import TaskStatus as TaskStatus
from core.textcheck import free_text, optional_name
from core.wakeup import Wakeup

MAX_PROMPT = 20_000
MAX_INPUT = 20_000
MAX_PAGE = 500
MAX_PENDING_INPUTS = 20
RUNNER_STALE_S = 30.0  # a runner silent this long is gone; its tasks end `interrupted`


class LogType(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class Control(StrEnum):
    """A request for the runner that holds the task; written by whichever process took the command."""

    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"


# --- what people ask for -----------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")




def checked_input(text: str, limit: int) -> str:
    text = free_text((text or "").strip(), "the input")
    if not text or len(text) > limit:
        raise ValidationFailed(f"input is 1-{limit} characters", code="INVALID_INPUT")
    return text


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "task"


@dataclass(frozen=True)
class TaskFilter:
    status: frozenset[TaskStatus] | None = None
    owner_id: str | None = None  # an owner id or name
    org_id: str | None = None  # Coder's organization: filter; must be the principal's own org
    project_id: str | None = None  # a project id or name


STATUS_GROUPS: dict[str, frozenset[TaskStatus]] = {
    "active": WAITING | ACTIVE | GATED,
    "waiting": WAITING,
    "finished": FINISHED,
    **{s.value: frozenset({s}) for s in TaskStatus},
}


def owner_of(principal: Principal) -> tuple[str, str]:
    """(owner id, owner name) of whoever is acting: their user, or the token itself (core.access)."""
    return principal.identity, principal.name


@dataclass(frozen=True)
class TaskView:
    task: Task
    project: Project | None = None


class Tasks:
    """Create, read and steer tasks. `wake` nudges an in-process runner; others poll the database."""

    def __init__(
        self, db: Database, confirmations: Confirmations, *, runs_due: Wakeup,
        runtimes: Callable[[], list[str]] | None = None, default_runtime: str = "claude",
        workspace_root: Path | None = None, repos: RepoRules | None = None,
    ) -> None:
        self.db = db
        self.confirmations = confirmations  # a task leaving `awaiting` by people's hand voids what it waited on
        self.runs_due = runs_due  # a runner in this process looks now; others within their poll
        self.runtimes = runtimes or (lambda: [])
        self.default_runtime = default_runtime
        self.workspace_root = workspace_root
        self.repos = repos or RepoRules()  # which repositories tasks may name

    async def _void_gate(self, session: AsyncSession, task: Task, why: str) -> None:
        """A task leaving `awaiting` by people's hand: what it waited on can no longer run."""
        if TaskStatus(task.status) in GATED:
            await self.confirmations.void_open(session, task, why)

    async def runner_available(self) -> bool:
        """Is any runner alive to run tasks: one with a fresh heartbeat (a runner announces itself as it starts)?"""
        cutoff = utcnow() - timedelta(seconds=RUNNER_STALE_S)
        async with self.db.read() as session:
            fresh = await session.exec(
                select(func.count()).select_from(RunnerNode).where(col(RunnerNode.heartbeat_at) > cutoff)
            )
            return int(fresh.one()) > 0

    # --- creating ----------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        *,
        prompt: str,
        runtime: str | None = None,
        repo: str | None = None,
        branch: str | None = None,
        project: str | None = None,
        level: Any = None,
        name: str | None = None,
        display_name: str | None = None,
        owner: str = "me",
        thread: tuple[str, str] | None = None,
        request_key: str | None = None,
    ) -> TaskView:
        """A new pending task under a new task agent. The caller's command is its own approval to start.
        `request_key` names the inbound item that asked for it: asking again with it returns the same task."""
        principal.require(Scope.WRITE, "starting a task")
        prompt = free_text((prompt or "").strip(), "the prompt")
        if not prompt or len(prompt) > MAX_PROMPT:
            raise ValidationFailed(f"a prompt is 1-{MAX_PROMPT} characters", code="INVALID_PROMPT")
        display_name = optional_name(display_name, "the display name")
        for value, what in ((name, "the task name"), (repo, "the repository"), (branch, "the branch")):
            optional_name(value, what)
        runtime = runtime or self.default_runtime
        known = self.runtimes()
        if runtime not in known:
            raise ValidationFailed(
                f"unknown agent {runtime!r}: one of {', '.join(known)} (custom agents: SHEPHERD_AGENTS)",
                code="UNKNOWN_AGENT",
            )
        if name is not None and not _NAME.match(name):
            raise ValidationFailed(
                "a task name is 1-63 characters: lower-case letters, digits and '-'", code="INVALID_NAME"
            )
        if branch is not None:
            check_branch(branch)
        if repo is not None:
            repo = repo.strip()
            if repo_kind(repo) == "path":
                # A local path reads whatever the server can read: only admins may name one.
                principal.require(Scope.ADMIN, "cloning a local path")
                path = Path(repo.removeprefix("file://")).expanduser()  # noqa: ASYNC240 (one stat)
                if not path.is_dir():
                    raise ValidationFailed(f"no repository at {repo}", code="INVALID_REPO")
                repo = str(path.resolve())
            else:  # the server fetches it: only from hosts the rules allow (checked again before the clone)
                await self.repos.reach(repo)
        explicit_level = None if level is None else parse_level(level)

        async with self.db.write() as session:
            if request_key:
                earlier = (await session.exec(select(Task).where(
                    Task.org_id == principal.org_id, Task.request_key == request_key))).first()
                if earlier is not None:  # the same request processed again (a redelivery, a retry after a crash)
                    return TaskView(earlier, await session.get(Project, earlier.project_id)
                                    if earlier.project_id else None)
            owner_id, owner_name = await self._owner(session, principal, owner)
            proj = await resolve_project(session, principal.org_id, project) if project else None
            agent_level = DEFAULT_LEVEL
            if proj is not None:
                repo = repo or proj.repo
                branch = branch or (proj.default_branch if repo == proj.repo else None)
                proj_agent = (
                    await session.exec(select(Agent).where(Agent.project_id == proj.id, Agent.type == "project"))
                ).first()
                if proj_agent is not None:
                    agent_level = proj_agent.autonomy_level
            if explicit_level is not None:
                if explicit_level > agent_level:
                    principal.require(Scope.APPROVE, "running a task above its project agent's autonomy")
                agent_level = explicit_level
            task_id = new_id("task")
            name = name or f"{slug(prompt, 32)}-{secrets.token_hex(2)}"
            clash = (
                await session.exec(select(Task.id).where(Task.org_id == principal.org_id, Task.name == name))
            ).first()
            if clash:
                raise Conflict(f"a task named {name!r} already exists", code="TASK_EXISTS")
            now = utcnow()
            agent = Agent(
                id=new_id("agent-task"), org_id=principal.org_id, name=name, type="task",
                status=AgentStatus.ACTIVE, autonomy_level=agent_level, project_id=proj.id if proj else None,
                task=prompt[:2000], created_at=now, started_at=now, last_activity=now,
            )
            task = Task(
                id=task_id, org_id=principal.org_id, name=name,
                display_name=(display_name or prompt.splitlines()[0].replace("\t", " "))[:200],
                owner_id=owner_id, owner_name=owner_name, agent_id=agent.id,
                project_id=proj.id if proj else None, runtime=runtime, prompt=prompt, repo=repo,
                base_branch=branch, work_branch=f"shepherd/{name}", autonomy_level=agent_level,
                **task_state.created(now), created_at=now, updated_at=now, request_key=request_key,
            )
            session.add(agent)
            session.add(task)
            if thread is not None:  # the conversation it started in hears its news (prompts, decisions)
                await session.flush()
                await bind_thread(session, principal.org_id, thread[0], thread[1], task_id=task.id)
            await record(
                session, principal, "task", "task.created", agent_id=agent.id, task_id=task.id,
                payload={"name": name, "runtime": runtime, "repo": repo, "branch": branch,
                         "projectId": task.project_id, "autonomyLevel": agent_level},
            )
        self.runs_due()
        return TaskView(task, proj)

    async def _owner(self, session: AsyncSession, principal: Principal, owner: str) -> tuple[str, str]:
        mine = owner_of(principal)
        if owner in ("me", mine[0], mine[1]):
            return mine
        user = (
            await session.exec(
                select(User).where(User.org_id == principal.org_id, or_(col(User.id) == owner, col(User.name) == owner))
            )
        ).first()
        if user is None:
            raise NotFound(f"user {owner!r} not found", code="USER_NOT_FOUND")
        principal.require(Scope.ADMIN, "starting a task for someone else")
        return user.id, user.name

    # --- reading -----------------------------------------------------------------------------

    async def list(
        self, principal: Principal, flt: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Task], int]:
        """A page of tasks, newest first, and how many match."""
        principal.require(Scope.READ, "listing tasks")
        flt = flt or TaskFilter()
        if flt.org_id is not None and flt.org_id != principal.org_id:
            return [], 0
        where: list[Any] = [Task.org_id == principal.org_id]
        if flt.status:
            where.append(col(Task.status).in_([s.value for s in flt.status]))
        if flt.owner_id:
            where.append(or_(col(Task.owner_id) == flt.owner_id, col(Task.owner_name) == flt.owner_id))
        async with self.db.read() as session:
            if flt.project_id:
                proj = await find_project(session, principal.org_id, flt.project_id)
                if proj is None:
                    return [], 0
                where.append(Task.project_id == proj.id)
            total = (await session.exec(select(func.count()).select_from(Task).where(*where))).one()
            rows = await session.exec(
                select(Task).where(*where).order_by(col(Task.created_at).desc(), col(Task.id).desc())
                .offset(max(0, offset)).limit(max(1, min(limit, MAX_PAGE)))
            )
            return list(rows), int(total)

    async def get(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        """A task by id or name; with `owner` ("me", a user id or name), only if it is theirs."""
        principal.require(Scope.READ, "reading a task")
        async with self.db.read() as session:
            return await self._find(session, principal, ref, owner)

    @staticmethod
    def _owned_by(task: Task, principal: Principal, owner: str) -> bool:
        if owner == "me":
            return task.owner_id == owner_of(principal)[0]
        return owner in (task.owner_id, task.owner_name)

    @classmethod
    async def _find(
        cls, session: AsyncSession, principal: Principal, ref: str, owner: str | None = None, *, lock: bool = False
    ) -> Task:
        """A task of the principal's org by id or name; with `owner`, only if it is theirs. With `lock`, the row
        is held until the transaction ends (PostgreSQL), so that concurrent changes cannot undo each other."""
        query = select(Task).where(Task.org_id == principal.org_id, or_(col(Task.id) == ref, col(Task.name) == ref))
        task = (await session.exec(query.with_for_update() if lock else query)).first()
        if task is None or (owner is not None and not cls._owned_by(task, principal, owner)):
            raise NotFound(f"task {ref!r} not found", code="TASK_NOT_FOUND")
        return task

    async def logs(
        self, principal: Principal, ref: str, *, after_id: int = 0, limit: int = 1000, tail: bool = False
    ) -> tuple[Task, builtins.list[TaskLog]]:
        """Log entries in order: after `after_id`, or with `tail` the last `limit`."""
        principal.require(Scope.READ, "reading task logs")
        limit = max(1, min(limit, 10_000))
        async with self.db.read() as session:
            task = await self._find(session, principal, ref)
            query = select(TaskLog).where(TaskLog.task_id == task.id)
            if tail:
                rows = list(await session.exec(query.order_by(col(TaskLog.id).desc()).limit(limit)))
                rows.reverse()
            else:
                rows = list(
                    await session.exec(query.where(col(TaskLog.id) > after_id).order_by(col(TaskLog.id)).limit(limit))
                )
        return task, rows

    async def counts(self, principal: Principal) -> dict[str, int]:
        principal.require(Scope.READ, "reading status")
        async with self.db.read() as session:
            rows = await session.exec(
                select(Task.status, func.count()).where(Task.org_id == principal.org_id).group_by(Task.status)
            )
            return {status: int(n) for status, n in rows}

    # --- steering ----------------------------------------------------------------------------

    async def pause(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        return await self._control(principal, ref, Control.PAUSE, owner=owner)

    async def resume(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        return await self._control(principal, ref, Control.RESUME, owner=owner)

    async def stop(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        """Cancel: a waiting task ends at once; a running one is stopped by its runner (whole group)."""
        return await self._control(principal, ref, Control.STOP, owner=owner)

    async def delete(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        """Remove the task, its logs, its agent and its workspace (a running task is stopped first)."""
        return await self._control(principal, ref, Control.DELETE, owner=owner)

    async def _control(self, principal: Principal, ref: str, control: Control, *, owner: str | None) -> Task:
        principal.require(Scope.WRITE, f"{control.value} of a task")
        workspace: str | None = None
        deleted = False
        async with self.db.write() as session:
            task = await self._find(session, principal, ref, owner, lock=True)
            status = TaskStatus(task.status)
            # Coder answers 409 for the wrong state, a repeat included: pausing a paused task is a mistake the
            # client should hear about. Until the runner has applied one, the other takes it back; neither
            # takes back a stop.
            if control in (Control.PAUSE, Control.RESUME) and task.control in (Control.STOP, Control.DELETE):
                raise Conflict(f"task {task.name} is being stopped", code="TASK_STOPPING")
            if control is Control.PAUSE:
                if not ((status is TaskStatus.RUNNING and task.control != Control.PAUSE)
                        or (status is TaskStatus.PAUSED and task.control == Control.RESUME)):
                    now = "being paused" if task.control == Control.PAUSE else status.value
                    raise Conflict(f"task {task.name} is {now}: only a running task can be paused",
                                   code="TASK_NOT_RUNNING")
                task.control = control.value
            elif control is Control.RESUME:
                if not ((status is TaskStatus.PAUSED and task.control != Control.RESUME)
                        or (status is TaskStatus.RUNNING and task.control == Control.PAUSE)):
                    now = "being resumed" if task.control == Control.RESUME else status.value
                    raise Conflict(f"task {task.name} is {now}: only a paused task can be resumed",
                                   code="TASK_NOT_PAUSED")
                task.control = control.value
            elif status in ACTIVE:
                task.control = control.value  # the runner stops the process group, then finishes the task
            elif control is Control.STOP:
                if status in FINISHED:
                    return task
                await self._void_gate(session, task, f"the task was cancelled by {principal.actor}")
                task_state.cancel(task, principal.actor)
                await agent_after(session, task, Outcome.CANCELLED)
            else:  # delete a task no runner holds
                await self._void_gate(session, task, f"the task was deleted by {principal.actor}")
                workspace, deleted = task.workspace, True
                await delete_rows(session, task)
            if not deleted:
                task.updated_at = utcnow()
                session.add(task)
            await record(session, principal, "task", f"task.{control.value}_requested",
                         agent_id=task.agent_id, task_id=task.id, payload={"status": task.status})
        if workspace:
            self.remove_workspace(workspace)
        self.runs_due()
        return task

    def remove_workspace(self, path: str) -> None:
        """Delete a workspace, but only inside the workspace root: a stored path is never trusted blindly."""
        root = self.workspace_root
        target = Path(path)
        if root is None or not target.is_dir():
            return
        if target.resolve().parent != root.resolve():
            raise Forbidden(f"refusing to delete {path}: not a workspace", code="NOT_A_WORKSPACE")
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(home_for(target.resolve()), ignore_errors=True)  # a sandboxed agent's home, if it had one

    async def send(self, principal: Principal, ref: str, text: str, *, owner: str | None = None) -> Task:
        """A follow-up turn: queued while the agent works, started when it is idle (finished).

        Refused while paused, or before the first turn has begun (Coder: 409).
        """
        principal.require(Scope.WRITE, "sending input to a task")
        text = checked_input(text, MAX_INPUT)
        async with self.db.write() as session:
            task = await self._find(session, principal, ref, owner, lock=True)
            status = TaskStatus(task.status)
            if status is TaskStatus.PAUSED or task.control == Control.PAUSE:
                raise Conflict(f"task {task.name} is paused: resume it before sending input", code="TASK_PAUSED")
            if task.turns == 0 and status not in FINISHED:
                raise Conflict(
                    f"task {task.name} is {status.value} and has not started its first turn; "
                    "change its prompt instead (PATCH …/input)", code="TASK_NOT_STARTED",
                )
            if task.control in (Control.STOP, Control.DELETE):
                raise Conflict(f"task {task.name} is being stopped", code="TASK_STOPPING")
            if len(task.pending_inputs) >= MAX_PENDING_INPUTS:
                raise Conflict(f"task {task.name} already has {MAX_PENDING_INPUTS} follow-ups waiting",
                               code="TOO_MANY_INPUTS")
            task.pending_inputs = [*task.pending_inputs, text]
            queued = status not in FINISHED and status not in GATED
            if not queued:
                await self._void_gate(session, task, "a follow-up was sent: the next turn's result is asked anew")
                task_state.follow_up(task)
            session.add(task)
            await record(session, principal, "task", "task.input_sent", agent_id=task.agent_id, task_id=task.id,
                         payload={"queued": queued, "length": len(text)})
        self.runs_due()
        return task

    async def update_input(self, principal: Principal, ref: str, text: str, *, owner: str | None = None) -> Task:
        """Change the prompt of a task that has not started yet."""
        principal.require(Scope.WRITE, "changing a task's input")
        text = checked_input(text, MAX_PROMPT)
        async with self.db.write() as session:
            task = await self._find(session, principal, ref, owner, lock=True)
            if task.turns > 0 or TaskStatus(task.status) not in WAITING:
                raise Conflict(f"task {task.name} has started: send a follow-up instead", code="TASK_STARTED")
            task.prompt = text
            task.updated_at = utcnow()
            session.add(task)
            await record(session, principal, "task", "task.input_updated", agent_id=task.agent_id, task_id=task.id)
        return task

    async def store_snapshot(self, principal: Principal, ref: str, payload: dict[str, Any], size: int) -> None:
        """Keep a log snapshot a workspace agent uploaded (Coder's agentapi format), at most 64 KB: for a task of
        one's own (an admin: any), its messages' text checked like any other text given to Shepherd."""
        principal.require(Scope.WRITE, "uploading a log snapshot")
        if size > MAX_SNAPSHOT_BYTES:
            raise ValidationFailed(f"a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes", code="SNAPSHOT_TOO_LARGE",
                                   status=413)
        for i, message in enumerate(payload.get("messages") or []):
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = free_text(message["content"], f"messages[{i}].content")
        async with self.db.write() as session:
            owner = None if principal.can(Scope.ADMIN) else "me"
            task = await self._find(session, principal, ref, owner, lock=True)
            task.log_snapshot = payload
            task.snapshot_at = utcnow()
            session.add(task)


async def delete_rows(session: AsyncSession, task: Task) -> None:
    """A task, its log and its ephemeral agent, gone in the caller's transaction."""
    await session.exec(delete(TaskLog).where(col(TaskLog.task_id) == task.id))
    if task.agent_id:
        agent = await session.get(Agent, task.agent_id)
        if agent is not None:
            await session.delete(agent)
    await session.delete(task)


async def agent_after(session: AsyncSession, task: Task, outcome: Outcome) -> None:
    """The task's agent once a turn has ended: idle (a suspension stands), one more task done on success."""
    agent = await session.get(Agent, task.agent_id) if task.agent_id else None
    if agent is None:
        return
    if agent.status != AgentStatus.SUSPENDED:
        agent.status = AgentStatus.IDLE
    if outcome is Outcome.SUCCEEDED:
        agent.tasks_completed += 1
    agent.last_activity = utcnow()
    session.add(agent)
