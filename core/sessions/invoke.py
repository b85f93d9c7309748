"""One invocation of CloudCoding's `POST /invoke/stdout` in the domain: a repository, one task or several parallel
tasks of one session (new, or continued), an optional one-use GitHub token, and the live follow of those tasks.

Everything a request can get wrong is checked before anything is created, so a bad request leaves nothing behind
and is answered before any stream starts. The token (`github_token`) is held in this process's memory only
(core.runners.run_tokens): the tasks it came with are pinned to this process's runner until their first claim, so
it authenticates their clone here, and it authenticates their push when this process carries it out (the runner
that holds a workspace carries out its pushes). A process that runs no tasks (a web-only replica) refuses a token
with 503: it could not give it to whoever runs the task. The token is forgotten once the tasks have finished
(or after `HOLD_S` at the latest).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from sqlmodel import col, select

from core.errors import Unavailable, ValidationFailed
from core.people.access import Principal, Scope
from core.projects import check_branch
from core.runners.presets import AgentCatalog
from core.runners.repos import RepoRules, parse_remote, repo_kind
from core.runners.run_tokens import RunTokens
from core.sessions.rows import joinable_session
from core.sessions.service import Sessions
from core.store.db import Database
from core.store.models import Task
from core.tasks.follow import Follow, Pulse, Tick, last_log_id, read_tick
from core.tasks.service import Tasks
from core.tasks.state import FINISHED
from core.tasks.steering import MAX_INPUT, MAX_PROMPT
from core.textcheck import free_text, name_text

MAX_PARALLEL = 10  # tasks of one invocation: each is an agent process on the runner
HOLD_S = 4 * 3600.0  # a token is forgotten after this long whatever the tasks do (an approval nobody gives)
HOLD_POLL_S = 5.0  # how often a finished-yet? check runs once the stream is over


class InvalidInvoke(ValidationFailed):
    code = "INVALID_INVOKE"


@dataclass(frozen=True)
class Message:
    type: Literal["human", "ai", "system"]
    content: str


@dataclass(frozen=True)
class ParallelTask:
    prompt: str
    task_name: str


@dataclass(frozen=True)
class InvokeRequest:
    repo_url: str | None = None  # None: an empty workspace (trying Shepherd with no repository at hand)
    messages: Sequence[Message] | None = None
    parallel_tasks: Sequence[ParallelTask] | None = None
    branch: str = "main"
    cheap: bool = False  # CloudCoding's `haiku`
    thread_id: str | None = None
    agent: str | None = None  # Shepherd's addition: the agent CLI (the server's default otherwise)
    github_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class InvokedTask:
    task_id: str
    task_name: str  # CloudCoding's name for it (the stream's `task_name`)
    follow_up: bool = False  # a follow-up turn of a task the session had


@dataclass(frozen=True)
class Invocation:
    session_id: str
    tasks: tuple[InvokedTask, ...]
    after_id: int  # the log cursor from which their new output is followed
    notes: tuple[str, ...] = ()  # what the request asked that Shepherd could not do as asked (said on the stream)

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]


def prompt_of(messages: Sequence[Message]) -> str:
    """The task's prompt: the human turns, in order (system and ai messages are the client's context, not asks)."""
    return "\n\n".join(m.content.strip() for m in messages if m.type == "human" and m.content.strip())


class Invocations:
    def __init__(self, db: Database, tasks: Tasks, sessions: Sessions, run_tokens: RunTokens, catalog: AgentCatalog,
                 written: Pulse) -> None:
        self.db = db
        self.tasks = tasks
        self.sessions = sessions
        self.run_tokens = run_tokens
        self.catalog = catalog
        self.written = written

    async def invoke(self, principal: Principal, req: InvokeRequest) -> Invocation:
        """Start (or continue) the invocation's tasks; every check first, so a refused request starts nothing."""
        principal.require(Scope.WRITE, "invoking the agent")
        asks = self._asks(req)
        await self._check_repo(req)
        runtime = req.agent or self.tasks.default_runtime
        if runtime not in self.catalog.names():
            raise ValidationFailed(f"unknown agent {runtime!r}: one of {', '.join(self.catalog.names())}",
                                   code="UNKNOWN_AGENT")
        notes: list[str] = []
        if req.cheap and not self.catalog.get(runtime).cheap:
            notes.append(f"haiku: agent {runtime} has no cheaper model here; it runs its usual one")
        pin = None
        if req.github_token is not None:
            pin = self.run_tokens.runner_id
            if pin is None:
                raise Unavailable(
                    "github_token is held in the memory of the process that receives it, and this one runs no "
                    "tasks (a web-only process): send the invoke to a process that runs tasks (shepherd serve, or a "
                    "worker serving HTTP), or leave github_token out to use Shepherd's own credentials",
                    code="RUNNER_NOT_HERE")
        latest = await self._latest_task(principal, req.thread_id) if req.thread_id else None
        if req.thread_id is not None:
            session_id = req.thread_id
        else:
            first = asks[0]
            label = first.task_name if req.parallel_tasks else first.prompt.splitlines()[0]
            session = await self.sessions.create(principal, task=first.prompt, label=label, agent=runtime,
                                                 origin={"channel": "cloudcoding"}, start=False)
            session_id = session.id
        if req.messages is not None and latest is not None:
            after = await last_log_id(self.db, [latest.id])
            await self.tasks.send(principal, latest.id, asks[0].prompt)
            self._hold(req, latest.id)
            return Invocation(session_id, (InvokedTask(latest.id, latest.name, follow_up=True),), after, tuple(notes))
        made: list[InvokedTask] = []
        for ask in asks:
            view = await self.tasks.create(
                principal, prompt=ask.prompt, runtime=runtime, repo=req.repo_url, branch=req.branch,
                display_name=ask.task_name if req.parallel_tasks else None, session_id=session_id, pin_runner=pin,
                cheap=req.cheap,
            )
            # no await between the create and the hold: this process's runner cannot claim the task before the
            # token is here (and no other runner may claim it: it is pinned)
            self._hold(req, view.task.id)
            made.append(InvokedTask(view.task.id, ask.task_name if req.parallel_tasks else view.task.name))
        return Invocation(session_id, tuple(made), 0, tuple(notes))

    def _hold(self, req: InvokeRequest, task_id: str) -> None:
        if req.github_token is not None and req.repo_url is not None:
            self.run_tokens.hold(task_id, req.repo_url, req.github_token)

    def _asks(self, req: InvokeRequest) -> list[ParallelTask]:
        """The prompts asked for, checked: exactly one of messages (with a human turn) and parallel_tasks."""
        if (req.messages is None) == (req.parallel_tasks is None):
            raise InvalidInvoke("give exactly one of messages (one task) and parallel_tasks (several tasks at once)")
        if req.messages is not None:
            if not req.messages:
                raise InvalidInvoke("messages is empty: give at least one {type: human, content}")
            prompt = prompt_of(req.messages)
            if not prompt:
                raise InvalidInvoke("messages has no human turn with content: the task's prompt is the human turns")
            limit = MAX_INPUT if req.thread_id else MAX_PROMPT
            if len(prompt) > limit:
                raise InvalidInvoke(f"the human turns are {len(prompt)} characters; at most {limit}")
            return [ParallelTask(free_text(prompt, "messages"), "")]
        assert req.parallel_tasks is not None
        if not req.parallel_tasks or len(req.parallel_tasks) > MAX_PARALLEL:
            raise InvalidInvoke(f"parallel_tasks holds 1-{MAX_PARALLEL} tasks")
        names = [t.task_name.strip() for t in req.parallel_tasks]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise InvalidInvoke("each of parallel_tasks needs its own task_name (they name the stream's events)")
        asks = []
        for task, name in zip(req.parallel_tasks, names, strict=True):
            prompt = task.prompt.strip()
            if not prompt or len(prompt) > MAX_PROMPT:
                raise InvalidInvoke(f"parallel_tasks {name!r}: a prompt is 1-{MAX_PROMPT} characters")
            # a name is one line (the task's display name, checked again by Tasks.create): refused here, before
            # the session and the tasks before it exist, so that a 400 has started no agent
            asks.append(ParallelTask(free_text(prompt, f"the prompt of {name}"), name_text(name, "task_name")[:200]))
        return asks

    async def _check_repo(self, req: InvokeRequest) -> None:
        """repo_url is a repository URL the rules let Shepherd reach (as a task's creation checks), and a token
        travels only over https (or to a host an admin named exactly in SHEPHERD_REPO_HOSTS: an internal server)."""
        check_branch(req.branch)  # before anything is made (Tasks.create checks it only after the session exists)
        if req.repo_url is None:
            if req.github_token is not None:
                raise ValidationFailed("github_token is for the clone and push of repo_url: give repo_url too",
                                       code="INVALID_REPO")
            return
        url = req.repo_url.strip()
        try:
            kind = repo_kind(url)
        except ValidationFailed:
            kind = ""
        if kind != "url" or urlsplit(url).scheme not in ("https", "http"):
            raise ValidationFailed("repo_url is the https URL of a repository, e.g. https://github.com/owner/name",
                                   code="INVALID_REPO")
        rules: RepoRules = self.tasks.repos
        await rules.reach(url)  # RepoRefused (400) for a host the rules do not allow
        if req.github_token is not None:
            if not req.github_token.strip() or len(req.github_token) > 1000 or any(
                    c.isspace() or not c.isprintable() for c in req.github_token):
                raise ValidationFailed("github_token is a GitHub token: 1-1000 printable characters, no spaces",
                                       code="INVALID_TOKEN")
            remote = parse_remote(url)
            if remote.scheme != "https" and rules.allowed_by(remote.host) != remote.host:
                raise ValidationFailed("github_token is sent only over https: repo_url must be an https URL",
                                       code="INVALID_REPO")

    async def _latest_task(self, principal: Principal, session_id: str) -> Task | None:
        """The session's latest task (None: it has none yet); 404 for an unknown session, 409 for an archived one."""
        async with self.db.read() as session:
            await joinable_session(session, principal, session_id)
            return (await session.exec(
                select(Task).where(Task.org_id == principal.org_id, Task.session_id == session_id)
                .order_by(col(Task.created_at).desc(), col(Task.id).desc()).limit(1)
            )).first()

    async def run(self, invocation: Invocation, sink: Callable[[Tick | None], None], *,
                  poll_s: float = 1.0) -> None:
        """Follow the invocation's tasks with one poller, handing each tick to `sink` and then None when every
        turn is over; then hold their tokens until they have finished (a push may still use one) and forget
        them. Runs on when the client has left: the tasks are not the client's connection."""
        ids = invocation.task_ids
        try:
            follow = Follow(self.db, ids, after_id=invocation.after_id, pulse=self.written, poll_s=poll_s)
            async for tick in follow.ticks():
                sink(tick)
            sink(None)
            if any(self.run_tokens.holds(i) for i in ids):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HOLD_S):
                        while not await self._finished(ids):
                            await self.written.wait(HOLD_POLL_S)  # a poll: a gate's decision writes no output
        finally:
            for task_id in ids:
                self.run_tokens.release(task_id)

    async def _finished(self, ids: Sequence[str]) -> bool:
        tick = await read_tick(self.db, ids, 2**62, limit=1)
        return all(s.status in FINISHED and not s.pending for s in tick.states.values())

