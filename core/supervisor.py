"""The task supervisor: claims waiting tasks, runs their turns through a Runner, stores what they print
and ends each turn with one outcome and its evidence.

It runs in `serve`, `worker` and the console. Several may share one database: a task is claimed with a
conditional update (one winner), each supervisor heartbeats a RunnerNode row, and tasks held by a
supervisor that died (no heartbeat, or its process is gone from this host) are marked `interrupted`.
Commands from other processes reach a running task through its `control` column, polled every second;
in the same process `Tasks.wake` makes that immediate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, func, insert, update
from sqlmodel import col, select

from core.access import Principal, Scope
from core.actions import ActionError, ActionsConfig, Executor, PlanChanged, describe, result_line
from core.agents import AgentStatus
from core.clock import as_utc, utcnow
from core.confirmations import Execution, Origin, Plan, Status, new_task_token
from core.errors import ShepherdError
from core.events import record
from core.models import Agent, Confirmation, RunnerNode, Task, TaskLog
from core.policy import PolicyError
from core.repos import RepoRules
from core.runners import ExitReason, RunExit, RunHandle, Runner, RunSpec
from core.runners.local import LocalRunner, RunnerError, group_members
from core.runners.presets import AgentCatalog, verdict
from core.runners.sandbox import SANDBOX_HOME, SANDBOX_SOCKET, SANDBOX_TOOLS, SandboxView, home_for
from core.runners.workspace import WorkspaceError, commit_all, diff_stats, prepare
from core.service import Shepherd
from core.snapshots import take_snapshot
from core.tasks import (
    ACTIVE,
    GATED,
    WAITING,
    Control,
    DiffStats,
    Evidence,
    LogType,
    Outcome,
    State,
    TaskStatus,
    agent_after,
    closing_question,
    delete_rows,
    end,
    repo_kind,
    set_status,
)

log = logging.getLogger(__name__)

ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "TERM", "TZ", "TMPDIR")
LAST_LINES = 20
SWEEP_EVERY_S = 10.0
PROCESS_STARTED = utcnow()


@dataclass(frozen=True)
class RunnerConfig:
    workspace_root: Path
    max_tasks: int = 4
    max_tasks_per_project: int = 2
    hard_timeout_s: float = 3600.0
    idle_timeout_s: float = 600.0
    sandbox: SandboxView | None = None  # run agents through bubblewrap, showing this much of the host
    pass_env: tuple[str, ...] = ()
    git_base_url: str = "https://github.com"
    repo_hosts: tuple[str, ...] = ()  # SHEPHERD_REPO_HOSTS (core.repos.parse_hosts)
    max_log_lines: int = 20_000
    poll_s: float = 1.0
    heartbeat_s: float = 5.0
    stale_after_s: float = 30.0
    flush_s: float = 0.2
    callback_url: str | None = None  # SHEPHERD_URL for agents: where `shepherd ask` reaches Shepherd
    tool_dir: Path | None = None  # put first on the agent's PATH: holds the `shepherd` (ask) launcher
    max_action_attempts: int = 3


NEEDS_WORKSPACE = ("branch.push", "pr.open", "deploy.")


def agent_env(config: RunnerConfig, task: Task, workspace: Path, token: str | None = None) -> dict[str, str]:
    """The agent's whole environment: an allowlist, the agent credentials named in SHEPHERD_AGENT_ENV,
    and the task's own SHEPHERD_* values (with `token`, the task-scoped callback for `shepherd ask`).
    Nothing else of the server's environment (its secrets) passes."""
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.update({k: os.environ[k] for k in config.pass_env if k in os.environ})
    env.update({"SHEPHERD_TASK_ID": task.id, "SHEPHERD_TASK_NAME": task.name, "SHEPHERD_WORKSPACE": str(workspace)})
    box = config.sandbox
    # in the sandbox Shepherd is reached through its socket, and the launcher sits where the sandbox shows it
    callback = f"unix:{SANDBOX_SOCKET}" if box is not None and box.socket is not None else config.callback_url
    if token and callback:
        env.update({"SHEPHERD_URL": callback, "SHEPHERD_TASK_TOKEN": token})
    tools = SANDBOX_TOOLS if box is not None and box.tools is not None else config.tool_dir
    if tools is not None:
        env["PATH"] = os.pathsep.join(p for p in (str(tools), env.get("PATH", "")) if p)
    if box is not None:
        env.update({"HOME": SANDBOX_HOME, "TMPDIR": "/tmp"})  # the sandbox's own
    return env


def repo_rules(config: RunnerConfig) -> RepoRules:
    """The rules a runner's clones and pushes obey: the same the task was checked with when created."""
    return RepoRules(code_host=config.git_base_url, hosts=config.repo_hosts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(pgid: int, workspace: str) -> int:
    """Kill what is left of a dead runner's agent: members of its process group working in its workspace.

    A runner killed outright (SIGKILL, OOM) cannot end its agents; they would go on editing the workspace.
    The working-directory check guards against a reused process-group id.
    """
    killed = 0
    root = os.path.realpath(workspace)
    for pid in group_members(pgid):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


@dataclass
class _Run:
    task_id: str
    org_id: str
    handle: RunHandle | None = None
    job: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # "stop", "delete" or "shutdown"
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_LINES))
    verdict: Outcome | None = None
    verdict_line: str = ""
    stored: int = 0
    dropped: int = 0
    session_pattern: str | None = None
    session_ref: str | None = None
    # claimed before its callback token exists: every `shepherd ask` since belongs to this turn
    turn_started: datetime = field(default_factory=utcnow)


class TaskSupervisor:
    name = "tasks"

    def __init__(
        self, shepherd: Shepherd, catalog: AgentCatalog, config: RunnerConfig, runner: Runner | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.shepherd = shepherd
        self.executor = executor or Executor(ActionsConfig(git_base_url=config.git_base_url))
        self._executing: set[str] = set()
        self.db = shepherd.db
        self.catalog = catalog
        self.config = config
        self.repos = repo_rules(config)
        self.runner: Runner = runner or LocalRunner()
        self.host = socket.gethostname()
        self.node_id = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runs: dict[str, _Run] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._jobs: list[asyncio.Task[None]] = []
        self._log_rows: list[dict[str, Any]] = []
        self._log_state: dict[str, tuple[int, str]] = {}  # task id -> (lines added, last line)
        self._flush_lock = asyncio.Lock()
        self._last_sweep = 0.0

    def wake(self) -> None:
        self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.config.workspace_root.mkdir(parents=True, exist_ok=True)
        async with self.db.write() as session:
            now = utcnow()
            session.add(RunnerNode(id=self.node_id, host=self.host, pid=os.getpid(), started_at=now, heartbeat_at=now))
        await self.reconcile()
        self.shepherd.tasks.wake = self.wake
        self.shepherd.tasks.local_runner = True
        self.shepherd.confirmations.wake = self.wake
        loop = asyncio.get_running_loop()
        self._jobs = [loop.create_task(self._loop()), loop.create_task(self._heartbeat()),
                      loop.create_task(self._flusher())]
        self.wake()

    async def stop(self) -> None:
        """Stop every run this process holds; they end `interrupted`, and say so."""
        self._closing = True
        self.shepherd.tasks.wake = lambda: None
        self.shepherd.tasks.local_runner = False
        self.shepherd.confirmations.wake = lambda: None
        for job in self._jobs:
            job.cancel()
        for run in list(self.runs.values()):
            run.stop_reason = "shutdown"
            if run.handle is not None:
                await run.handle.stop()
        jobs = [r.job for r in self.runs.values() if r.job is not None]
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=10)
            for job in late:
                job.cancel()
        await self._flush()
        await self._interrupt(lambda task: task.runner_id == self.node_id,
                              "Shepherd stopped while the agent was working")
        async with self.db.write() as session:
            node = await session.get(RunnerNode, self.node_id)
            if node is not None:
                await session.delete(node)

    async def _loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_s)
            self._wake.clear()
            try:
                await self._apply_controls()
                await self._keep_askers_alive()
                await self._claim()
                await self._execute_due()
                now = asyncio.get_running_loop().time()
                if now - self._last_sweep > SWEEP_EVERY_S:
                    self._last_sweep = now
                    await self.reconcile()
            except Exception:
                log.exception("task supervisor pass failed; retrying")
                await asyncio.sleep(1)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                async with self.db.write() as session:
                    node = await session.get(RunnerNode, self.node_id)
                    if node is None:  # swept as stale after a long stall: announce ourselves again
                        node = RunnerNode(id=self.node_id, host=self.host, pid=os.getpid())
                    node.heartbeat_at = utcnow()
                    session.add(node)
            except Exception:
                log.exception("runner heartbeat failed")

    # --- recovery ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Tasks held by a runner that is gone (crashed, killed, restarted) end `interrupted`."""
        cutoff = utcnow() - timedelta(seconds=self.config.stale_after_s)
        async with self.db.read() as session:
            nodes = list(await session.exec(select(RunnerNode)))
        dead = {
            n.id for n in nodes
            if n.id != self.node_id and (
                as_utc(n.heartbeat_at) < cutoff
                or (n.host == self.host and (
                    # this pid before this process began: a previous life (a container's pid 1 restarted)
                    (n.pid == os.getpid() and as_utc(n.started_at) < PROCESS_STARTED) or not _pid_alive(n.pid)))
            )
        }
        live = {n.id for n in nodes} - dead
        async with self.db.write() as session:
            # an action a dead runner was carrying out runs again (every action is safe to repeat)
            await session.exec(
                update(Confirmation)
                .where(col(Confirmation.execution) == Execution.RUNNING.value,
                       col(Confirmation.executor).not_in([*live, self.node_id]))
                .values(execution=Execution.WAITING.value, executor=None)
            )
        await self._interrupt(
            lambda task: task.runner_id not in live,
            "the runner holding this task stopped (a crash or restart) while the agent was working",
        )
        if dead:
            async with self.db.write() as session:
                for node_id in dead:
                    node = await session.get(RunnerNode, node_id)
                    if node is not None:
                        await session.delete(node)

    async def _interrupt(self, held: Any, reason: str) -> None:
        async with self.db.read() as session:
            rows = list(await session.exec(select(Task).where(col(Task.status).in_([s.value for s in ACTIVE]))))
        for stale in [t for t in rows if held(t) and t.id not in self.runs]:
            if stale.pid and stale.workspace:
                leftovers = reap_orphans(stale.pid, stale.workspace)
                if leftovers:
                    log.warning("task %s: ended %d agent processes left by a dead runner", stale.id, leftovers)
            async with self.db.write() as session:
                task = await session.get(Task, stale.id, with_for_update=True)
                if task is None or TaskStatus(task.status) not in ACTIVE:
                    continue
                await self.shepherd.confirmations.void_questions(session, task, f"the turn ended: {reason}")
                end(task, Outcome.INTERRUPTED, {"reason": reason, "exitCode": None})
                task.pending_inputs = []
                session.add(task)
                await agent_after(session, task, Outcome.INTERRUPTED)
                await record(session, self._system(task), "task", "task.interrupted", agent_id=task.agent_id,
                             task_id=task.id, payload={"reason": reason, "runner": stale.runner_id})
                log.warning("task %s interrupted: %s", task.id, reason)

    # --- controls from people ------------------------------------------------------------------

    async def _apply_controls(self) -> None:
        if not self.runs:
            return
        async with self.db.read() as session:
            rows = list(await session.exec(
                select(Task.id, Task.control).where(col(Task.id).in_(list(self.runs)), col(Task.control).is_not(None))
            ))
        for task_id, control in rows:
            run = self.runs.get(task_id)
            if run is None:
                continue
            if control in (Control.STOP, Control.DELETE):
                if run.stop_reason is None:
                    run.stop_reason = control
                    if run.handle is not None:
                        asyncio.get_running_loop().create_task(run.handle.stop())
            elif control in (Control.PAUSE, Control.RESUME) and run.handle is not None:
                await self._pause_or_resume(run, Control(control))

    async def _pause_or_resume(self, run: _Run, control: Control) -> None:
        assert run.handle is not None
        if control is Control.PAUSE:
            await self._flush()  # the snapshot is taken from the stored log: store what was read first
        async with self.db.write() as session:
            task = await session.get(Task, run.task_id, with_for_update=True)
            if task is None:
                return
            task.control = None
            if control is Control.PAUSE and task.status == TaskStatus.RUNNING:
                run.handle.pause()
                set_status(task, TaskStatus.PAUSED, State.IDLE, "paused: the agent's processes are frozen")
                await take_snapshot(session, task)
                name = "task.paused"
            elif control is Control.RESUME and task.status == TaskStatus.PAUSED:
                run.handle.resume()
                set_status(task, TaskStatus.RUNNING, State.WORKING, "resumed")
                await self.shepherd.confirmations.note_waiting(session, task)  # still asking people?
                name = "task.resumed"
            else:
                session.add(task)
                return
            session.add(task)
            await record(session, self._system(task), "task", name, agent_id=task.agent_id, task_id=task.id)

    # --- claiming ----------------------------------------------------------------------------

    async def _claim(self) -> None:
        if self._closing:
            return
        async with self.db.read() as session:
            waiting = list(await session.exec(
                select(Task).where(col(Task.status).in_([s.value for s in WAITING]))
                .order_by(col(Task.created_at), col(Task.id)).limit(200)
            ))
            if not waiting:
                return
            agent_ids = {t.agent_id for t in waiting if t.agent_id}
            project_ids = {t.project_id for t in waiting if t.project_id}
            suspended = {
                a.id: a for a in await session.exec(
                    select(Agent).where(
                        Agent.status == AgentStatus.SUSPENDED,
                        (col(Agent.id).in_(agent_ids))
                        | (col(Agent.project_id).in_(project_ids) & (Agent.type == "project")),
                    )
                )
            }
            busy = dict(
                (pid, int(n)) for pid, n in await session.exec(
                    select(Task.project_id, func.count()).where(
                        col(Task.project_id).in_(project_ids), col(Task.status).in_([s.value for s in ACTIVE])
                    ).group_by(Task.project_id)
                )
            ) if project_ids else {}
        project_agent = {a.project_id: a for a in suspended.values() if a.type == "project"}
        queue_notes: list[tuple[Task, str]] = []
        for task in waiting:
            blocker = suspended.get(task.agent_id or "") or project_agent.get(task.project_id)
            if blocker is not None:
                note = f"waiting: agent {blocker.id} is suspended; `agent resume {blocker.id}` lets it start"
            elif len(self.runs) >= self.config.max_tasks:
                note = (f"queued: {len(self.runs)} tasks running on this runner, the cap is "
                        f"{self.config.max_tasks} (SHEPHERD_MAX_TASKS)")
            elif task.project_id and busy.get(task.project_id, 0) >= self.config.max_tasks_per_project:
                note = (f"queued: its project has {busy[task.project_id]} tasks running, the cap is "
                        f"{self.config.max_tasks_per_project} (SHEPHERD_MAX_TASKS_PER_PROJECT)")
            else:
                if await self._take(task) and task.project_id:
                    busy[task.project_id] = busy.get(task.project_id, 0) + 1
                continue
            if task.status != TaskStatus.QUEUED or task.state_message != note:
                queue_notes.append((task, note))
        if queue_notes:
            await self._queue(queue_notes)

    async def _queue(self, notes: list[tuple[Task, str]]) -> None:
        async with self.db.write() as session:
            for stale, note in notes:
                # locked: a runner elsewhere may be claiming it this moment (a claim must not be undone)
                task = await session.get(Task, stale.id, with_for_update=True)
                if task is None or TaskStatus(task.status) not in WAITING:
                    continue
                first = task.status != TaskStatus.QUEUED
                set_status(task, TaskStatus.QUEUED, State.IDLE, note)
                session.add(task)
                if first:
                    await record(session, self._system(task), "task", "task.queued", agent_id=task.agent_id,
                                 task_id=task.id, payload={"reason": note})

    async def _take(self, task: Task) -> bool:
        """Claim one waiting task: a conditional update, so that of several runners exactly one wins."""
        now = utcnow()
        async with self.db.write() as session:
            result = await session.exec(
                update(Task)
                .where(col(Task.id) == task.id, col(Task.status).in_([s.value for s in WAITING]))
                .values(status=TaskStatus.INITIALIZING.value, state=State.WORKING.value,
                        state_message="preparing the workspace", state_at=now, updated_at=now,
                        runner_id=self.node_id)
            )
            if result.rowcount != 1:
                return False
        run = _Run(task_id=task.id, org_id=task.org_id)
        self.runs[task.id] = run
        run.job = asyncio.get_running_loop().create_task(self._drive(run))
        return True

    # --- running one turn --------------------------------------------------------------------

    async def _drive(self, run: _Run) -> None:
        try:
            await self._turn(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ref = uuid.uuid4().hex[:8]
            log.exception("task %s failed inside Shepherd (ref %s)", run.task_id, ref)
            with contextlib.suppress(Exception):
                if run.handle is not None:
                    await run.handle.stop()
                await self._finish(run, Outcome.FAILED, None, DiffStats(),
                                   f"Shepherd failed while running it ({type(exc).__name__}, ref {ref})")
        finally:
            self.runs.pop(run.task_id, None)
            self.wake()

    async def _turn(self, run: _Run) -> None:
        async with self.db.read() as session:
            task = await session.get(Task, run.task_id)
        assert task is not None
        availability = await self.catalog.check(task.runtime)
        if not availability.usable:
            await self._finish(run, Outcome.FAILED, None, DiffStats(), f"agent {task.runtime}: {availability.detail}")
            return
        preset = self.catalog.get(task.runtime)
        run.session_pattern = preset.session_pattern
        workspace = self.config.workspace_root / task.id
        follow_up = task.turns > 0
        if follow_up:
            if not task.pending_inputs:
                await self._finish(run, Outcome.FAILED, None, DiffStats(), "a follow-up turn with no input")
                return
            text = task.pending_inputs[0]
            if not workspace.is_dir():
                await self._finish(run, Outcome.FAILED, None, DiffStats(), f"its workspace {workspace} is gone")
                return
        else:
            text = task.prompt
            if workspace.exists():  # left by a run that died while preparing it
                await asyncio.to_thread(self.shepherd.tasks.remove_workspace, str(workspace))
            try:
                # checked again right before git connects: DNS may have changed since the task was created
                reach = await self.repos.reach(task.repo) if task.repo else None
                branch, sha = await prepare(
                    workspace, source=reach.url if reach else None, base_branch=task.base_branch,
                    work_branch=task.work_branch or f"shepherd/{task.name}", env=reach.env() if reach else None,
                )
            except ShepherdError as exc:  # WorkspaceError, or the repository's host is refused
                await self._finish(run, Outcome.FAILED, None, DiffStats(), f"workspace: {exc.message}")
                return
            task.workspace, task.base_branch, task.base_sha = str(workspace), branch, sha
        if run.stop_reason == "shutdown":
            await self._finish(run, Outcome.INTERRUPTED, None, DiffStats(), "Shepherd stopped before the agent started")
            return
        if run.stop_reason is not None:
            await self._finish(run, Outcome.CANCELLED, None, DiffStats(), "stopped before the agent started")
            return
        session_ref = task.session_ref or str(uuid.uuid4())
        token: str | None = None
        if self.config.callback_url:
            # a new callback token per turn, stored (hashed) before the agent can use it
            token, digest = new_task_token()
            async with self.db.write() as session:
                await session.exec(update(Task).where(col(Task.id) == task.id).values(callback_hash=digest))
        sandbox: SandboxView | None = None
        if self.config.sandbox is not None:
            home = home_for(workspace)  # the agent's own home, kept for its follow-up turns
            await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
            sandbox = self.config.sandbox.for_task(home)
        spec = RunSpec(
            argv=preset.argv(prompt=text, session=session_ref, workspace=workspace, task=task.id,
                             follow_up=follow_up),
            cwd=workspace, env=agent_env(self.config, task, workspace, token),
            idle_timeout=self.config.idle_timeout_s, hard_timeout=self.config.hard_timeout_s,
            sandbox=sandbox, program=preset.own_words(follow_up=follow_up),
        )
        try:
            run.handle = await self.runner.start(spec)
        except RunnerError as exc:
            await self._finish(run, Outcome.FAILED, None, DiffStats(), exc.message)
            return
        await self._started(run, task, text, session_ref, follow_up)
        if run.stop_reason is not None:  # a stop that arrived while the process was starting
            await run.handle.stop()
        async for line in run.handle.lines():
            self._on_line(run, line)
        exit_ = await run.handle.wait()
        diff = DiffStats()
        with contextlib.suppress(Exception):
            diff = await diff_stats(workspace, task.base_sha)
        outcome, reason = self._judge(run, exit_, await self._refused_question(run))
        question = closing_question(run.last_lines) if outcome is Outcome.SUCCEEDED else None
        if question is not None:
            reason = f"waiting for input: {question}"
        plan: Plan | None = None
        # a turn that ends on a question has not finished the work: its changes wait for the answer's turn
        if outcome is Outcome.SUCCEEDED and diff.files and run.stop_reason is None and question is None:
            try:
                plan = await self._plan_after_turn(task, workspace)
            except WorkspaceError as exc:
                outcome, reason = Outcome.FAILED, f"committing the agent's changes failed: {exc.message}"
        await self._finish(run, outcome, exit_, diff, reason, plan=plan, question=question)

    async def _started(self, run: _Run, snapshot: Task, text: str, session_ref: str, follow_up: bool) -> None:
        assert run.handle is not None
        async with self.db.write() as session:
            task = await session.get(Task, run.task_id, with_for_update=True)
            assert task is not None
            task.workspace, task.base_branch = snapshot.workspace, snapshot.base_branch
            task.base_sha = snapshot.base_sha
            set_status(task, TaskStatus.RUNNING, State.WORKING, f"{'follow-up' if follow_up else 'turn 1'}: running")
            task.turns += 1
            task.pid = run.handle.pid
            task.session_ref = session_ref
            task.started_at = task.started_at or utcnow()
            if follow_up:
                task.pending_inputs = task.pending_inputs[1:]
            session.add(task)
            await session.exec(insert(TaskLog).values(
                task_id=task.id, time=utcnow(), type=LogType.INPUT.value, content=text))
            task.log_count += 1
            agent = await session.get(Agent, task.agent_id) if task.agent_id else None
            if agent is not None:
                if agent.status != AgentStatus.SUSPENDED:
                    agent.status = AgentStatus.ACTIVE
                agent.last_activity = utcnow()
                agent.messages_processed += 1
                session.add(agent)
            await record(session, self._system(task), "task", "task.turn_started", agent_id=task.agent_id,
                         task_id=task.id, payload={"turn": task.turns, "pid": task.pid, "followUp": follow_up})

    def _on_line(self, run: _Run, line: str) -> None:
        run.last_lines.append(line)
        if run.verdict is None:
            found = verdict(line)
            if found is not None:
                run.verdict, run.verdict_line = found, line
        if run.session_pattern and run.session_ref is None:
            match = re.search(run.session_pattern, line)
            if match:
                run.session_ref = match.group(1)
        if run.stored >= self.config.max_log_lines:
            run.dropped += 1
            return
        run.stored += 1
        self._log_rows.append(
            {"task_id": run.task_id, "time": utcnow(), "type": LogType.OUTPUT.value, "content": line}
        )
        added, _ = self._log_state.get(run.task_id, (0, ""))
        self._log_state[run.task_id] = (added + 1, line)

    async def _refused_question(self, run: _Run) -> Confirmation | None:
        """A `shepherd ask` of this turn that people rejected, or let expire."""
        async with self.db.read() as session:
            return (await session.exec(select(Confirmation).where(
                Confirmation.task_id == run.task_id, Confirmation.origin == Origin.AGENT.value,
                col(Confirmation.status).in_([Status.REJECTED.value, Status.EXPIRED.value]),
                col(Confirmation.created_at) >= run.turn_started,
            ).order_by(col(Confirmation.created_at)))).first()

    def _judge(self, run: _Run, exit_: RunExit, refused: Confirmation | None = None) -> tuple[Outcome, str]:
        cfg = self.config
        if run.stop_reason == "shutdown":
            return Outcome.INTERRUPTED, "Shepherd stopped while the agent was working; `send` continues it"
        if exit_.reason is ExitReason.STOPPED or run.stop_reason is not None:
            return Outcome.CANCELLED, "stopped on request; its processes were ended"
        if exit_.reason is ExitReason.IDLE_TIMEOUT:
            return Outcome.TIMED_OUT, f"no output for {cfg.idle_timeout_s:g} s (SHEPHERD_TASK_IDLE_TIMEOUT)"
        if exit_.reason is ExitReason.HARD_TIMEOUT:
            return Outcome.TIMED_OUT, f"ran longer than {cfg.hard_timeout_s:g} s (SHEPHERD_TASK_TIMEOUT)"
        if run.verdict is not None:
            return run.verdict, f"the agent reported: {run.verdict_line[:300]}"
        if refused is not None and not exit_.exit_code:
            # it asked, people said no (or nobody answered), and it went on to exit 0: not a success
            by = f" by {refused.decided_by}" if refused.status == Status.REJECTED else ""
            why = f": {refused.reason}" if refused.reason else ""
            return Outcome.DENIED, f"{refused.action} ({refused.code}) was {refused.status}{by}{why}"
        if exit_.exit_code:
            how = f"killed by signal {-exit_.exit_code}" if exit_.exit_code < 0 else f"exit code {exit_.exit_code}"
            return Outcome.FAILED, f"the agent failed ({how})"
        return Outcome.SUCCEEDED, "the agent finished its turn"

    # --- finishing ---------------------------------------------------------------------------

    async def _finish(
        self, run: _Run, outcome: Outcome, exit_: RunExit | None, diff: DiffStats, reason: str,
        plan: Plan | None = None, question: str | None = None,
    ) -> None:
        await self._flush()
        evidence = Evidence(
            exit_code=exit_.exit_code if exit_ else None, duration_s=exit_.duration_s if exit_ else 0.0,
            diff=diff, last_lines=tuple(list(run.last_lines)[-10:]), reason=reason,
        ).to_json()
        if run.dropped:
            evidence["droppedLines"] = run.dropped
        workspace: str | None = None
        async with self.db.write() as session:
            task = await session.get(Task, run.task_id, with_for_update=True)
            if task is None:
                return
            system = self._system(task)
            # the turn is over: what its agent asked and nobody decided can no longer be waited for
            await self.shepherd.confirmations.void_questions(session, task, f"the agent's turn ended ({outcome.value})")
            if task.control == Control.DELETE or run.stop_reason == Control.DELETE:
                workspace = task.workspace
                await delete_rows(session, task)
                await record(session, system, "task", "task.deleted", agent_id=task.agent_id, task_id=task.id)
            else:
                if run.session_ref:
                    task.session_ref = run.session_ref
                follow_ups = list(task.pending_inputs)
                if TaskStatus(task.status) not in ACTIVE:
                    # never started: the outcome still passes through the state machine
                    task.status = TaskStatus.INITIALIZING.value
                if plan is not None and not follow_ups and TaskStatus(task.status) is TaskStatus.RUNNING:
                    # the turn is done; what it produced leaves the workspace only through the gate
                    task.evidence, task.pid, task.control, task.runner_id = evidence, None, None, None
                    task.callback_hash = None
                    set_status(task, TaskStatus.AWAITING, State.IDLE, f"turn done; {plan.summary}")
                    session.add(task)
                    await agent_after(session, task, outcome)
                    await record(session, system, "task", "task.turn_finished", agent_id=task.agent_id,
                                 task_id=task.id, payload={"outcome": outcome.value, "turn": task.turns,
                                                           "evidence": evidence, "next": plan.action})
                    await self._gate(session, task, plan)
                    return
                end(task, outcome, evidence, question=question)
                dropped_inputs = 0
                if follow_ups and (exit_ is None or outcome in (Outcome.CANCELLED, Outcome.INTERRUPTED)):
                    # the turn never ran, or people ended it: waiting follow-ups are not delivered
                    task.pending_inputs, dropped_inputs = [], len(follow_ups)
                session.add(task)
                await agent_after(session, task, outcome)
                await record(session, system, "task", "task.finished", agent_id=task.agent_id, task_id=task.id,
                             payload={"outcome": outcome.value, "turn": task.turns, "evidence": evidence,
                                      "droppedInputs": dropped_inputs})
                if task.pending_inputs:
                    # follow-ups sent while the agent worked: the next turn waits for a runner like any other
                    set_status(task, TaskStatus.PENDING, State.IDLE,
                               f"{outcome.value}; next: {len(task.pending_inputs)} follow-up(s) waiting")
                    task.outcome, task.finished_at = None, None
        if workspace:
            await asyncio.to_thread(self.shepherd.tasks.remove_workspace, workspace)

    # --- gated actions -------------------------------------------------------------------------

    async def _plan_after_turn(self, task: Task, workspace: Path) -> Plan | None:
        """What a turn's changes should become: a pull request (GitHub repositories) or a pushed branch
        (other remote repositories). A local path or an empty workspace keeps its changes where they are."""
        if not task.repo or repo_kind(task.repo) not in ("github", "url"):
            return None
        head = await commit_all(workspace, f"{task.display_name}\n\nShepherd task {task.name} ({task.id})")
        action = "pr.open" if repo_kind(task.repo) == "github" else "branch.push"
        target = {"repo": task.repo, "branch": task.work_branch or f"shepherd/{task.name}",
                  "base": task.base_branch or "main", "head": head}
        params: dict[str, Any] = {}
        if action == "pr.open":
            params = {"title": task.display_name[:200],
                      "body": f"Opened by Shepherd for task `{task.name}`, started by {task.owner_name}.\n\n"
                              f"> {task.prompt[:2000]}"}
        return Plan(action=action, summary=describe(action, target, params), target=target, params=params)

    async def _gate(self, session: Any, task: Task, plan: Plan) -> None:
        """Ask the policy about a task's own next action, in the transaction that ends its turn."""
        agent = await session.get(Agent, task.agent_id) if task.agent_id else None
        level = agent.autonomy_level if agent is not None else task.autonomy_level
        try:
            gate = await self.shepherd.confirmations.gate(
                session, org_id=task.org_id, plan=plan, origin=Origin.POLICY, level=level,
                requester_id=task.owner_id, requester_name=task.owner_name, task=task, agent_id=task.agent_id,
                project_id=task.project_id,
            )
        except PolicyError as exc:  # nothing runs on a policy nobody can read; the message names the key
            end(task, Outcome.FAILED, {**task.evidence, "reason": f"{plan.action} not decided: {exc.message}"})
            session.add(task)
            return
        conf = gate.confirmation
        if conf.status == Status.PENDING:
            task.state_message = f"waiting for approval {conf.code}: {plan.summary}"[:500]
        elif conf.status == Status.APPROVED:
            task.state_message = f"{conf.code} approved by policy (L{level}): {plan.summary}"[:500]
            self.wake()
        else:
            branch = plan.target.get("branch")
            end(task, Outcome.SUCCEEDED, {
                **task.evidence,
                "reason": f"{plan.action} refused: {gate.decision.reason}; the changes stay committed on "
                          f"{branch} in the workspace",
                "confirmation": conf.code,
            })
        session.add(task)

    async def _keep_askers_alive(self) -> None:
        """An agent waiting on `shepherd ask` is silent because people have not decided: not idle."""
        if not self.runs:
            return
        async with self.db.read() as session:
            asking = set(await session.exec(select(Confirmation.task_id).where(
                col(Confirmation.task_id).in_(list(self.runs)), Confirmation.status == Status.PENDING.value,
                Confirmation.origin == Origin.AGENT.value,
            )))
            # an approved answer held back while the agent is suspended: `shepherd ask` still waits
            for conf in await session.exec(select(Confirmation).where(
                col(Confirmation.task_id).in_(list(self.runs)), Confirmation.status == Status.APPROVED.value,
                Confirmation.origin == Origin.AGENT.value,
            )):
                if conf.task_id not in asking and await self.shepherd.confirmations.suspended(
                        session, conf.agent_id, conf.project_id):
                    asking.add(conf.task_id)
        for task_id in asking:
            run = self.runs.get(task_id or "")
            if run is not None and run.handle is not None:
                run.handle.keep_alive()

    def _local(self, task: Task | None) -> bool:
        if task is None or not task.workspace:
            return False
        path = Path(task.workspace)
        return path.parent == self.config.workspace_root.resolve() and path.is_dir()

    async def _execute_due(self) -> None:
        """Claim approved actions this runner can carry out (those needing a workspace: where it lives)."""
        if self._closing:
            return
        now = utcnow()
        async with self.db.read() as session:
            due = list(await session.exec(
                select(Confirmation).where(Confirmation.status == Status.APPROVED.value,
                                           Confirmation.execution == Execution.WAITING.value)
                # a wide window: actions this runner must skip (held, elsewhere, not due) cannot starve the rest
                .order_by(col(Confirmation.decided_at), col(Confirmation.id)).limit(500)
            ))
            for conf in due:
                if conf.id in self._executing or float(conf.result.get("retryAt", 0)) > now.timestamp():
                    continue
                task = await session.get(Task, conf.task_id) if conf.task_id else None
                if conf.action.startswith(NEEDS_WORKSPACE) and not self._local(task):
                    continue
                held = await self.shepherd.confirmations.suspended(session, conf.agent_id, conf.project_id)
                if held:
                    await self._note_held(conf, task)
                    continue
                async with self.db.write() as claim:
                    won = await claim.exec(
                        update(Confirmation)
                        .where(col(Confirmation.id) == conf.id, col(Confirmation.execution) == Execution.WAITING.value)
                        .values(execution=Execution.RUNNING.value, executor=self.node_id)
                    )
                if won.rowcount != 1:
                    continue
                self._executing.add(conf.id)
                job = asyncio.get_running_loop().create_task(self._execute(conf.id))
                self._jobs.append(job)
                job.add_done_callback(lambda j: self._jobs.remove(j) if j in self._jobs else None)

    async def _note_held(self, conf: Confirmation, task: Task | None) -> None:
        if task is None or TaskStatus(task.status) not in GATED:
            return
        note = f"{conf.code} approved; waiting: its agent is suspended (`agent resume` lets {conf.action} run)"
        if task.state_message == note:
            return
        async with self.db.write() as session:
            locked = await session.get(Task, task.id, with_for_update=True)
            if locked is not None and TaskStatus(locked.status) in GATED:
                locked.state_message = note
                session.add(locked)

    async def _execute(self, conf_id: str) -> None:
        try:
            await self._carry_out(conf_id)
        except Exception:
            log.exception("carrying out confirmation %s failed; handing it back to be tried again", conf_id)
            with contextlib.suppress(Exception):
                async with self.db.write() as session:
                    await session.exec(
                        update(Confirmation)
                        .where(col(Confirmation.id) == conf_id, col(Confirmation.executor) == self.node_id,
                               col(Confirmation.execution) == Execution.RUNNING.value)
                        .values(execution=Execution.WAITING.value, executor=None)
                    )
        finally:
            self._executing.discard(conf_id)

    async def _carry_out(self, conf_id: str) -> None:
        async with self.db.read() as session:
            conf = await session.get(Confirmation, conf_id)
            if conf is None:
                return
            task = await session.get(Task, conf.task_id) if conf.task_id else None
            policy = await self.shepherd.confirmations.policy_for(session, conf.project_id)
        result: dict[str, Any] = {}
        error: ActionError | None = None
        try:
            result = await self.executor.execute(conf, task, policy, repos=self.repos)
        except ActionError as exc:
            error = exc
        except Exception as exc:
            ref = uuid.uuid4().hex[:8]
            log.exception("action %s of %s failed inside Shepherd (ref %s)", conf.action, conf.code, ref)
            error = ActionError(f"Shepherd failed while carrying it out ({type(exc).__name__}, ref {ref})")
        replan: Plan | None = None
        if isinstance(error, PlanChanged) and conf.origin == Origin.POLICY and task is not None and self._local(task):
            with contextlib.suppress(WorkspaceError):
                replan = await self._plan_after_turn(task, Path(task.workspace or ""))
        async with self.db.write() as session:
            # the task first, then its confirmation: the order every other writer locks them in
            task = await session.get(Task, task.id, with_for_update=True, populate_existing=True) if task else None
            conf = await session.get(Confirmation, conf_id, with_for_update=True, populate_existing=True)
            if conf is None or conf.execution != Execution.RUNNING or conf.executor != self.node_id:
                return  # handed to another runner meanwhile (this one was thought dead): its result stands
            gated = task is not None and conf.origin == Origin.POLICY and TaskStatus(task.status) in GATED
            system = Principal(org_id=conf.org_id, name="runner", scopes=frozenset(Scope), channel="shepherd")
            attempts = int(conf.result.get("attempts", 0)) + 1
            if isinstance(error, PlanChanged):
                conf.execution = None
                await self.shepherd.confirmations.void(session, conf, error.message)
                if gated and task is not None:
                    if replan is not None:
                        await self._gate(session, task, replan)
                    else:
                        end(task, Outcome.FAILED, {**task.evidence, "reason": error.message})
                        session.add(task)
                return
            if error is not None and error.retryable and attempts < self.config.max_action_attempts:
                conf.execution = Execution.WAITING.value
                conf.executor = None
                conf.result = {"attempts": attempts, "lastError": error.message,
                               "retryAt": utcnow().timestamp() + (error.retry_after or 5.0 * 2 ** (attempts - 1))}
                session.add(conf)
                await record(session, system, "action", "action.retrying", agent_id=conf.agent_id,
                             task_id=conf.task_id, payload={"code": conf.code, "action": conf.action,
                                                            "attempt": attempts, "error": error.message})
                return
            if error is not None:
                conf.execution, conf.result = Execution.FAILED.value, {"attempts": attempts, "error": error.message}
            else:
                conf.execution, conf.result = Execution.DONE.value, {"attempts": attempts, **result}
            conf.executor = None
            session.add(conf)
            line = result_line(conf)
            await record(session, system, "action", "action.failed" if error else "action.executed",
                         agent_id=conf.agent_id, task_id=conf.task_id,
                         payload={"code": conf.code, "action": conf.action, "result": conf.result})
            if gated and task is not None:
                actions = [*task.evidence.get("actions", []), {"action": conf.action, "code": conf.code,
                                                                "ok": error is None, **conf.result}]
                end(task, Outcome.FAILED if error else Outcome.SUCCEEDED,
                    {**task.evidence, "reason": line, "actions": actions})
                session.add(task)
            if error is None and conf.action.startswith("deploy.") and conf.agent_id:
                agent = await session.get(Agent, conf.agent_id)
                if agent is not None:
                    agent.deploys_triggered += 1
                    session.add(agent)
            if conf.decided_via != "policy":  # people saw the prompt: it now shows the result too
                await self.shepherd.confirmations.announce(session, conf, task)

    @staticmethod
    def _system(task: Task) -> Principal:
        return Principal(org_id=task.org_id, name="runner", scopes=frozenset(Scope), channel="shepherd")

    # --- logs --------------------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_s)
            try:
                await self._flush()
            except Exception:
                log.exception("storing task output failed; retrying")

    async def _flush(self) -> None:
        """Store buffered output lines: one transaction for every task's lines since the last flush."""
        async with self._flush_lock:
            if not self._log_rows:
                return
            rows, self._log_rows = self._log_rows, []
            state, self._log_state = self._log_state, {}
            now = utcnow()
            try:
                async with self.db.write() as session:
                    # Core executemany on the table: a quarter cheaper per row than the ORM's bulk insert.
                    conn = await session.connection()
                    await conn.execute(insert(TaskLog.__table__), rows)  # type: ignore[attr-defined]
                    for task_id, (added, last) in state.items():
                        await session.exec(
                            update(Task).where(col(Task.id) == task_id).values(
                                log_count=col(Task.log_count) + added, updated_at=now,
                                # the latest line is the agent's state message while it works (not when
                                # paused, nor while it waits on people: core.confirmations.note_waiting)
                                state_message=case(
                                    (and_(col(Task.status) == TaskStatus.RUNNING.value,
                                          col(Task.state) == State.WORKING.value), last[:500]),
                                    else_=col(Task.state_message),
                                ),
                            )
                        )
            except Exception:
                self._log_rows[:0] = rows  # kept for the next flush: output read is not dropped on a hiccup
                for task_id, (added, last) in state.items():
                    before, newer = self._log_state.get(task_id, (0, last))
                    self._log_state[task_id] = (before + added, newer)
                raise
