"""Tasks: one coding job, run by an ephemeral `task` agent through a Runner.

This module is what channels and APIs call: create, read and steer tasks. Its life and its states are
core.tasks.state's (the one writer of a task's status); the runner's side (claiming, running, finishing) is
core.tasks.supervisor and the modules it wires.
"""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import DEFAULT_LEVEL, AgentStatus, parse_level
from core.autonomy.plans import START_ACTIONS, Execution, Origin, Plan, Status, Target
from core.channels.conversations import bind_thread
from core.clock import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.projects import check_branch, find_project, resolve_project
from core.runners import Capabilities
from core.runners.repos import RepoRules, repo_kind
from core.sessions.rows import PRIVATE, joinable_session, shown_tasks
from core.sessions.threads import session_for_thread
from core.store.db import Database
from core.store.events import record
from core.store.models import Agent, Confirmation, Project, RunnerNode, User
from core.store.models import Task as Task  # the records this service returns
from core.tasks import state as task_state
from core.tasks.budget import Budget
from core.tasks.listing import (
    LogRow,
    TaskRow,
    newest_params,
    newest_statement,
    read_log,
    read_log_tail,
)
from core.tasks.state import ACTIVE, FINISHED, GATED, WAITING, TaskStatus
from core.tasks.steering import MAX_PROMPT, TaskSteering, owner_of
from core.textcheck import free_text, optional_name
from core.wakeup import Wakeup

if TYPE_CHECKING:
    from core.autonomy.confirmations import Confirmations

MAX_PAGE = 500
RUNNER_STALE_S = 30.0  # a runner silent this long is gone; its tasks end `interrupted`


# --- what people ask for -----------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PRIVATE_AGENT_TASK = "a task of a private session"  # what the org's agents list says of such a task's agent


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


# The ephemeral agent types a task can run as (core.agents.BUILTIN_TYPES): a `task` agent does what it is asked,
# a `review` agent reviews a pull request, an `incident` agent investigates a failed check. The runner runs them
# alike; the type says what the agent is for, in every list of agents.
TASK_AGENT_TYPES = frozenset({"task", "review", "incident"})


@dataclass(frozen=True)
class TaskView:
    task: Task
    project: Project | None = None
    confirmation: Confirmation | None = None  # what its start waits on (or what decided it), for a gated start


class Tasks(TaskSteering):
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
        # what the configured runner can do (SHEPHERD_RUNNER): every process refuses what it cannot, web ones too
        self.runner_capabilities = Capabilities()
        self.workspace_discard: Callable[[str], Awaitable[None]] | None = None

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
        agent_type: str = "task",
        gate: str | None = None,
        in_place: bool = False,
        session_id: str | None = None,
        budget: Budget | None = None,
        pin_runner: str | None = None,
        cheap: bool = False,
        promotion_id: str | None = None,
        mount_path: str | None = None,
        also: Callable[[AsyncSession, Task], Awaitable[None]] | None = None,
    ) -> TaskView:
        """A new pending task under a new agent of `agent_type` (task, review or incident). The caller's command is
        its own approval to start, unless `gate` names the action its start is (`task.start`, `review.start`: a
        webhook asked, not a person): then the project agent's level decides, and a task people must approve waits
        `awaiting` its confirmation (asked in its thread) until the executor starts it, or ends `denied`.
        `in_place`: the task works on `branch` itself (a pull request's head) and its end is a push there.
        `request_key` names the inbound item that asked for it: asking again with it returns the same task.
        `session_id`: the session (workstream) it belongs to, which must be live (not archived) and one the principal
        may run tasks in; its budget applies where `budget` sets no limit of its own. Without one, a task started in
        a `thread` joins the thread's session, or begins one (core.sessions.threads). `pin_runner`: only that
        runner may claim its first turn (its process holds the task's one-use credentials). `cheap`: its agent runs
        the preset's cheaper model. `promotion_id`: its workspace starts from that promotion (Shepherd's own
        repository of it, core.containers.promotions) instead of a repository, and its agent sees it at `mount_path`
        where the runner can show it there (core.tasks.turns). `also` adds rows of the caller's in the same
        transaction (a coding container's)."""
        principal.require(Scope.WRITE, "starting a task")
        if agent_type not in TASK_AGENT_TYPES:
            raise ValidationFailed(f"a task runs as one of {', '.join(sorted(TASK_AGENT_TYPES))}, not {agent_type!r}",
                                   code="INVALID_AGENT_TYPE")
        if gate is not None and gate not in START_ACTIONS:
            raise ValidationFailed(f"a start is gated as one of {', '.join(sorted(START_ACTIONS))}, not {gate!r}",
                                   code="INVALID_ACTION")
        if in_place and not branch:
            raise ValidationFailed("working on a branch in place needs the branch", code="INVALID_BRANCH")
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
                    first = (await session.exec(select(Confirmation).where(
                        Confirmation.task_id == earlier.id, col(Confirmation.action).in_(START_ACTIONS)))).first()
                    return TaskView(earlier, await session.get(Project, earlier.project_id)
                                    if earlier.project_id else None, first)
            owner_id, owner_name = await self._owner(session, principal, owner)
            limits = budget or Budget()
            private = False
            if session_id is None and thread is not None:  # a thread that runs tasks is a session (issue 17)
                session_id = await session_for_thread(session, principal, thread[0], thread[1], prompt)
            if session_id is not None:
                workstream = await joinable_session(session, principal, session_id)
                limits = limits.over(Budget(workstream.max_turns, workstream.max_minutes, workstream.max_cost))
                workstream.last_activity_at = utcnow()
                session.add(workstream)
                private = workstream.visibility == PRIVATE
            proj = await resolve_project(session, principal.org_id, project) if project else None
            if proj is None and repo is not None and repo_kind(repo) != "path":
                # the repository's project (its oldest, as a webhook finds it): its approval channels hear the
                # task's prompts, and its agent's level and its policy govern it; naming the repository instead
                # of the project must not slip out from under either
                proj = (await session.exec(select(Project).where(
                    Project.org_id == principal.org_id, Project.repo == repo)
                    .order_by(col(Project.created_at)).limit(1))).first()
            agent_level = DEFAULT_LEVEL
            proj_level = DEFAULT_LEVEL  # the project agent's: what a webhook's start is gated by
            if proj is not None:
                repo = repo or proj.repo
                branch = branch or (proj.default_branch if repo == proj.repo else None)
                proj_agent = (
                    await session.exec(select(Agent).where(Agent.project_id == proj.id, Agent.type == "project"))
                ).first()
                if proj_agent is not None:
                    agent_level = proj_level = proj_agent.autonomy_level
                # never in place on the project's default branch (a pull request from it): its own branch and a
                # pull request instead, so that no level pushes a task's commits straight onto it
                in_place = in_place and branch != proj.default_branch
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
            # the agents list is the org's: the agent of a private session's task tells nothing of its prompt there
            # (its name is the task's, which comes from the prompt; the task itself shows both to those who see it)
            agent = Agent(
                id=new_id(f"agent-{agent_type}"), org_id=principal.org_id,
                name=f"private-{task_id.removeprefix('task-')}" if private else name, type=agent_type,
                status=AgentStatus.ACTIVE, autonomy_level=agent_level, project_id=proj.id if proj else None,
                task=PRIVATE_AGENT_TASK if private else prompt[:2000], created_at=now, started_at=now,
                last_activity=now,
            )
            task = Task(
                id=task_id, org_id=principal.org_id, name=name,
                display_name=(display_name or prompt.splitlines()[0].replace("\t", " "))[:200],
                owner_id=owner_id, owner_name=owner_name, agent_id=agent.id,
                project_id=proj.id if proj else None, runtime=runtime, prompt=prompt, repo=repo,
                base_branch=branch, work_branch=branch if in_place else f"shepherd/{name}",
                autonomy_level=agent_level, created_at=now, updated_at=now, request_key=request_key,
                session_id=session_id, max_turns=limits.max_turns, max_minutes=limits.max_minutes,
                max_cost=limits.max_cost, pinned_runner=pin_runner, cheap_model=cheap,
                promotion_id=promotion_id, mount_path=mount_path,
                **(task_state.created_gated(now, f"asking for {gate}") if gate else task_state.created(now)),
            )
            session.add(agent)
            session.add(task)
            if thread is not None or gate:
                await session.flush()  # the rows the thread and the confirmation point at
            if thread is not None:  # the conversation it started in hears its news (prompts, decisions)
                await bind_thread(session, principal.org_id, thread[0], thread[1], task_id=task.id,
                                  session_id=session_id)
            await record(
                session, principal, "task", "task.created", agent_id=agent.id, task_id=task.id,
                payload={"name": name, "runtime": runtime, "repo": repo, "branch": branch,
                         "projectId": task.project_id, "autonomyLevel": agent_level, "agentType": agent_type,
                         "inPlace": in_place, "gate": gate},
            )
            conf = await self._gate_start(session, task, gate, agent_type, proj_level) if gate else None
            if also is not None:
                await also(session, task)
        self.runs_due()
        return TaskView(task, proj, conf)

    async def _gate_start(self, session: AsyncSession, task: Task, action: str, agent_type: str,
                          level: int) -> Confirmation:
        """Ask the project agent's level whether a task a webhook asked for starts now (the task is then pending),
        waits for people (awaiting, its confirmation asked in its threads) or is refused (denied, with the
        reason): in the transaction that creates it. The approved start is the executor's (core.autonomy.executor)."""
        target = Target(repo=task.repo, branch=task.work_branch, base=task.base_branch)
        first_line = task.display_name[:200]
        plan = Plan(action=action, summary=f"start a {agent_type} agent on {task.repo or 'an empty workspace'}: "
                                           f"{first_line}", target=target, params={"agentType": agent_type})
        gate = await self.confirmations.gate(
            session, org_id=task.org_id, plan=plan, origin=Origin.POLICY, level=level, requester_id=task.owner_id,
            requester_name=task.owner_name, task=task, agent_id=task.agent_id, project_id=task.project_id)
        conf = gate.confirmation
        if conf.status == Status.APPROVED:
            conf.execution = Execution.DONE.value  # nothing to carry out: the task is simply pending
            session.add(conf)
            task_state.start_approved(task, f"{conf.code} approved by policy (L{level}): waiting for a runner")
        elif conf.status == Status.PENDING:
            task_state.note_gate(task, f"waiting for approval {conf.code}: {plan.summary}")
        else:
            task_state.deny(task, f"{action} refused: {gate.decision.reason}", conf.code)
        session.add(task)
        return conf

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
        where: list[Any] = [Task.org_id == principal.org_id, *shown_tasks(principal)]
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

    async def newest(self, principal: Principal, flt: TaskFilter | None = None, *,
                     limit: int = MAX_PAGE) -> builtins.list[TaskRow]:
        """A page of tasks, newest first, as plain rows (core.tasks.listing.TaskRow), with no total:
        what a list that shows no total needs (Coder's), at the cost of the page. No project filter (`list`)."""
        principal.require(Scope.READ, "listing tasks")
        flt = flt or TaskFilter()
        if flt.project_id is not None:
            raise ValueError("newest() has no project filter: use list()")
        if flt.org_id is not None and flt.org_id != principal.org_id:
            return []
        statuses = [s.value for s in flt.status or ()]
        hide = not principal.can(Scope.ADMIN)  # someone else's private sessions' tasks (core.sessions.rows)
        statement = newest_statement(len(statuses), bool(flt.owner_id), hide)
        params = newest_params(principal.org_id, statuses, flt.owner_id, max(1, min(limit, MAX_PAGE)),
                               principal.identity if hide else None)
        async with self.db.read() as session:
            conn = await session.connection()
            return [TaskRow._make(r) for r in (await conn.execute(statement, params)).all()]

    async def log_page(
        self, principal: Principal, ref: str, *, owner: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> tuple[Task, builtins.list[LogRow], bool]:
        """A task (by id or name; with `owner`, only theirs) and its log entries after `after_id` in order, as rows
        (id, time, type, content), read by keyset on the log's sequence; and whether more follow."""
        principal.require(Scope.READ, "reading task logs")
        limit = max(1, min(limit, 10_000))
        async with self.db.read() as session:
            task = await self._find(session, principal, ref, owner)
            entries = await read_log(await session.connection(), task.id, after_id, limit + 1)
        return task, entries[:limit], len(entries) > limit

    async def get(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        """A task by id or name; with `owner` ("me", a user id or name), only if it is theirs."""
        principal.require(Scope.READ, "reading a task")
        async with self.db.read() as session:
            return await self._find(session, principal, ref, owner)

    async def logs(
        self, principal: Principal, ref: str, *, after_id: int = 0, limit: int = 1000, tail: bool = False
    ) -> tuple[Task, builtins.list[LogRow]]:
        """Log entries (a line or an input each) in order: after `after_id`, or with `tail` the last `limit`."""
        principal.require(Scope.READ, "reading task logs")
        limit = max(1, min(limit, 10_000))
        async with self.db.read() as session:
            task = await self._find(session, principal, ref)
            conn = await session.connection()
            if tail:
                return task, await read_log_tail(conn, task.id, limit)
            return task, await read_log(conn, task.id, after_id, limit)

    # --- steering ----------------------------------------------------------------------------

