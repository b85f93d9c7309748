"""One turn of a task's agent: its workspace prepared, its process started through a Runner (with what
core.tasks.launch gives it: its environment and RunSpec) and followed, what it prints, and how it ended judged
(core.tasks.judging). The end itself is core.tasks.ending's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import bindparam, func, insert
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.plans import Origin, Status
from core.autonomy.questions import note_waiting
from core.clock import as_utc, utcnow
from core.errors import ShepherdError
from core.people.access import Principal
from core.runners import ExitReason, RunHandle, Runner, RunSpec, Seed
from core.runners.credentials import GitCredentials
from core.runners.local import RunnerError
from core.runners.presets import COST_HINT, AgentCatalog, hinted, reported_cost, verdict
from core.runners.workspace import WorkspaceError, diff_stats, prepare
from core.sessions import iterations
from core.sessions.loop import is_loop_task
from core.shepherd import Shepherd
from core.store.events import record
from core.store.models import Confirmation, Task, TaskLog, table_of
from core.tasks import state as task_state
from core.tasks.config import RunnerConfig
from core.tasks.ending import TurnEnd, plan_after_turn
from core.tasks.evidence import DiffStats
from core.tasks.group import BulkWrites
from core.tasks.judging import Refusal, judge
from core.tasks.launch import Launch, engine_clone
from core.tasks.output import TaskOutput
from core.tasks.rows import agent_started
from core.tasks.snapshots import take_snapshot
from core.tasks.starts import FirstTurn, first_turns
from core.tasks.state import Control, LogType, Outcome, TaskStatus

log = logging.getLogger(__name__)

LAST_LINES = 20


@dataclass
class Turn:
    """A turn this process drives, from its claim to its end."""

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
    token: str | None = field(default=None, repr=False)  # its callback token (SHEPHERD_TASK_TOKEN), stored hashed
    # claimed with its callback token: every `shepherd ask` since belongs to this turn
    started: datetime = field(default_factory=utcnow)
    cost: float | None = None  # what the agent reported the turn cost (core.runners.presets.reported_cost)
    began: float | None = None  # when its process started (the loop's clock); its wall time leaves pauses out
    paused_s: float = 0.0
    paused_at: float | None = None
    detached: bool = False  # Shepherd stopped and left its remote unit running: another process follows it

    def running_s(self) -> float:
        """How long its process has run, pauses left out: what its budget's minutes count."""
        if self.began is None:
            return 0.0
        now = time.monotonic()
        return now - self.began - self.paused_s - ((now - self.paused_at) if self.paused_at is not None else 0.0)

    def note_pause(self, paused: bool) -> None:
        now = time.monotonic()
        if paused and self.paused_at is None:
            self.paused_at = now
        elif not paused and self.paused_at is not None:
            self.paused_s += now - self.paused_at
            self.paused_at = None


_C = table_of(Confirmation)
_REFUSED = (sa_select(_C.c.action, _C.c.code, _C.c.status, _C.c.decided_by, _C.c.reason)
            .where(_C.c.task_id == bindparam("task_id"), _C.c.origin == Origin.AGENT.value,
                   _C.c.status.in_([Status.REJECTED.value, Status.EXPIRED.value]),
                   _C.c.created_at >= bindparam("since"))
            .order_by(_C.c.created_at).limit(1))


class Turns:
    """Drives the turns this process has claimed; `running` holds them by task id until they end."""

    def __init__(
        self, shepherd: Shepherd, catalog: AgentCatalog, config: RunnerConfig, runner: Runner, output: TaskOutput,
        ending: TurnEnd, wake: Callable[[], None], *, credentials: GitCredentials | None = None,
    ) -> None:
        self.shepherd = shepherd
        self.db = shepherd.db
        self.catalog = catalog
        self.config = config
        self.repos = config.repos
        self.runner = runner
        self.output = output
        self.ending = ending
        self.wake = wake
        self.running: dict[str, Turn] = {}
        self.launch = Launch(shepherd, catalog, config, runner, credentials)
        self.writes = ending.writes  # what follow-up turns starting (or turns ending) together record
        self.starts = BulkWrites(self.db, first_turns(ending.runner_id))  # first turns: set-based

    def begin(self, task: Task, token: str) -> None:
        """Drive a task this runner has just claimed, as its claim read it back, with the callback token its claim
        stored (Claims.take)."""
        turn = Turn(task_id=task.id, org_id=task.org_id, token=token)
        self.running[task.id] = turn
        turn.job = asyncio.get_running_loop().create_task(self._drive(turn, claimed=task))

    def adopt(self, task: Task) -> None:
        """Follow a remote turn that a process now gone started (core.tasks.nodes hands it over, claimed)."""
        turn = Turn(task_id=task.id, org_id=task.org_id)
        if task.status == TaskStatus.PAUSED:
            turn.note_pause(True)
        self.running[task.id] = turn
        turn.job = asyncio.get_running_loop().create_task(self._drive(turn, adopted=task))

    async def stop_all(self, reason: str, *, wait_s: float) -> None:
        """Stop every turn (`shutdown`: they end interrupted), waiting up to `wait_s` for them to end."""
        keep = reason == "shutdown" and self.runner.capabilities.reconnect
        for turn in list(self.running.values()):
            turn.stop_reason = reason
            if turn.handle is not None and keep:
                turn.detached = True  # a remote unit outlives this process: the next worker finds it again
                await turn.handle.detach()
            elif turn.handle is not None:
                await turn.handle.stop()
        jobs = [t.job for t in self.running.values() if t.job is not None]
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=wait_s)
            for job in late:
                job.cancel()

    async def _drive(self, turn: Turn, adopted: Task | None = None, claimed: Task | None = None) -> None:
        try:
            await (self._run(turn, claimed) if adopted is None else self._adopted(turn, adopted))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ref = uuid.uuid4().hex[:8]
            log.exception("task %s failed inside Shepherd (ref %s)", turn.task_id, ref)
            with contextlib.suppress(Exception):
                if turn.handle is not None:
                    await turn.handle.stop()
                await self.ending.finish(turn, Outcome.FAILED, None, DiffStats(),
                                         f"Shepherd failed while running it ({type(exc).__name__}, ref {ref})")
        finally:
            self.running.pop(turn.task_id, None)
            self.wake()

    async def _fail(self, turn: Turn, reason: str) -> None:
        await self.ending.finish(turn, Outcome.FAILED, None, DiffStats(), reason)

    async def _run(self, turn: Turn, claimed: Task | None = None) -> None:
        task = claimed
        if task is None:
            async with self.db.read() as session:
                task = await session.get(Task, turn.task_id)
        assert task is not None
        remote = self.runner.capabilities.remote
        if not remote:  # a remote unit runs the agent's image: its CLI is the image's, not this host's
            availability = await self.catalog.check(task.runtime)
            if not availability.usable:
                return await self._fail(turn, f"agent {task.runtime}: {availability.detail}")
        preset = self.catalog.get(task.runtime)
        turn.session_pattern = preset.session_pattern
        workspace = self.config.workspace_root / task.id
        follow_up = task.turns > 0
        if follow_up:
            if not task.pending_inputs:
                return await self._fail(turn, "a follow-up turn with no input")
            text = task.pending_inputs[0]
            if not workspace.is_dir():
                return await self._fail(turn, f"its workspace {workspace} is gone")
        else:
            text = task.prompt
            if workspace.exists():  # left by a run that died while preparing it
                await asyncio.to_thread(self.shepherd.tasks.remove_workspace, str(workspace))
                await self.shepherd.tasks.discard_remote(task.id)
            work_branch = task.work_branch or f"shepherd/{task.name}"
            try:
                if task.promotion_id is not None:  # a coding container: a clone of Shepherd's own promoted copy
                    reach, auth = None, {}
                    promoted = await self.launch.promoted(task)
                    branch, sha = await prepare(workspace, source=str(promoted), base_branch=None,
                                                work_branch=work_branch)
                else:
                    # checked again right before git connects: DNS may have changed since the task was created
                    reach = await self.repos.reach(task.repo) if task.repo else None
                    auth = await self.launch.git_auth(task, reach.url) if reach else {}
                    branch, sha = await prepare(
                        workspace, source=reach.url if reach else None, base_branch=task.base_branch,
                        work_branch=work_branch, env=reach.env(auth) if reach else None,
                    )
                if remote:  # the engine's volume starts from the same commit
                    # a token that expires soon by itself may go to the engine's clone step; a lasting one (a
                    # personal token, a request's own) never leaves Shepherd: the engine gets Shepherd's copy instead
                    brief = reach is not None and self.launch.short_lived(task, reach.url)
                    source, credential = engine_clone(reach.url if reach else None, auth, short_lived=brief)
                    await self.runner.seed(Seed(
                        task_id=task.id, org_id=task.org_id, local=workspace, work_branch=work_branch, base_sha=sha,
                        source=source, base_branch=branch, credential=credential))
            except ShepherdError as exc:  # WorkspaceError, the repository's host refused, the engine refused
                return await self._fail(turn, f"workspace: {exc.message}")
            task.workspace, task.base_branch, task.base_sha = str(workspace), branch, sha
        if turn.stop_reason == "shutdown":
            await self.ending.finish(turn, Outcome.INTERRUPTED, None, DiffStats(),
                                     "Shepherd stopped before the agent started")
            return
        if turn.stop_reason is not None:
            await self.ending.finish(turn, Outcome.CANCELLED, None, DiffStats(), "stopped before the agent started")
            return
        session_ref = task.session_ref or str(uuid.uuid4())
        try:
            spec = await self.launch.spec(task, workspace, text, session_ref, follow_up, turn.token)
            turn.handle = await self.runner.start(spec)
        except RunnerError as exc:
            return await self._fail(turn, exc.message)
        turn.began = time.monotonic()
        if not await self._started(turn, task, text, session_ref, follow_up):
            # ended or claimed elsewhere while this runner prepared (it was thought dead): the agent goes, and its
            # end is only recorded (the task's state is the other decision's)
            await turn.handle.stop()
            await turn.handle.wait()
            await self.ending.finish(turn, Outcome.INTERRUPTED, None, DiffStats(),
                                     "the task stopped being this runner's before its agent started")
            return
        if turn.stop_reason is not None and not turn.detached:  # a stop that arrived while the process was starting
            await turn.handle.stop()
        await self._follow(turn, task, workspace)

    async def _adopted(self, turn: Turn, task: Task) -> None:
        """Find the unit of a turn started before a restart and follow it from its last stored line on."""
        workspace = self.config.workspace_root / task.id
        async with self.db.read() as session:
            last = (await session.exec(select(func.max(TaskLog.time)).where(col(TaskLog.task_id) == task.id))).first()
        since = as_utc(last or task.state_at).timestamp()
        preset = self.catalog.get(task.runtime)
        turn.session_pattern, turn.session_ref = preset.session_pattern, task.session_ref
        seen_at = self.launch.seen_at(task, workspace)
        # what the unit was started with is in the engine; this spec says whose it is and its limits
        spec = RunSpec(argv=(), cwd=seen_at, env={}, idle_timeout=self.config.idle_timeout_s,
                       hard_timeout=self.config.hard_timeout_s, task_id=task.id, org_id=task.org_id,
                       turn=task.turns, runtime=task.runtime)
        try:
            handle = await self.runner.attach(task.runner_unit or "", spec, since_s=since)
        except ShepherdError as exc:
            handle, why = None, exc.message
        else:
            why = "the engine no longer knows its unit"
        if handle is None:
            await self.ending.finish(turn, Outcome.INTERRUPTED, None, DiffStats(),
                                     f"its runner restarted and could not find the agent again: {why}")
            return
        turn.handle = handle
        if self.runner.capabilities.remote and not (workspace / ".git").is_dir():
            # its work can only come back into Shepherd's copy, which this worker does not have (workers that do not
            # share SHEPHERD_DATA_DIR): the unit is ended rather than left working for nothing
            await handle.stop()
            await self.ending.finish(turn, Outcome.INTERRUPTED, None, DiffStats(),
                                     "its runner restarted and this worker has no copy of its workspace (workers "
                                     "must share SHEPHERD_DATA_DIR to follow each other's remote runs)")
            return
        turn.began = time.monotonic() - max(0.0, (utcnow() - as_utc(task.state_at)).total_seconds())
        log.info("task %s: following its %s unit %s again", task.id, self.runner.kind, task.runner_unit)
        if turn.stop_reason is not None:
            await handle.stop()
        await self._follow(turn, task, workspace)

    async def _follow(self, turn: Turn, task: Task, workspace: Path) -> None:
        """The turn's unit runs: its lines until it ends, then the turn's end (its work brought back first)."""
        assert turn.handle is not None
        async for read in turn.handle.batches():
            self._on_lines(turn, read)
        if turn.detached:  # Shepherd stops; the unit goes on, and the process that adopts it ends the turn
            return
        exit_ = await turn.handle.wait()
        collected: str | None = None
        if self.runner.capabilities.remote and exit_.reason is not ExitReason.LOST:
            try:
                await self.runner.collect(task.id, workspace)
            except ShepherdError as exc:
                collected = exc.message
        diff = DiffStats()
        with contextlib.suppress(Exception):
            diff = await diff_stats(workspace, task.base_sha)
        judged = judge(exit_, stop_reason=turn.stop_reason, verdict=turn.verdict, verdict_line=turn.verdict_line,
                       refused=await self._refused_question(turn), last_lines=turn.last_lines,
                       idle_timeout_s=self.config.idle_timeout_s, hard_timeout_s=self.config.hard_timeout_s)
        outcome, reason = judged.outcome, judged.reason
        if exit_.reason is ExitReason.LOST and turn.stop_reason is None:
            outcome, reason = Outcome.INTERRUPTED, "its unit vanished from the engine before it reported how it ended"
        if collected is not None and outcome is Outcome.SUCCEEDED:
            outcome, reason = Outcome.FAILED, f"bringing the agent's work back from the engine failed: {collected}"
        plan = None
        # a turn that ends on a question has not finished the work: its changes wait for the answer's turn
        if outcome is Outcome.SUCCEEDED and diff.files and turn.stop_reason is None and judged.question is None:
            try:
                plan = await plan_after_turn(task, workspace)
            except WorkspaceError as exc:
                outcome, reason = Outcome.FAILED, f"committing the agent's changes failed: {exc.message}"
        await self.ending.finish(turn, outcome, exit_, diff, reason, plan=plan, question=judged.question)

    async def _started(self, turn: Turn, snapshot: Task, text: str, session_ref: str, follow_up: bool) -> bool:
        """The turn is running, recorded; False when the task is no longer this runner's to start."""
        assert turn.handle is not None
        handle = turn.handle

        if not follow_up and not is_loop_task(snapshot):  # with the other first turns starting now, set-based
            return await self.starts.run(FirstTurn(
                task=snapshot, pid=handle.pid or None, runner_kind=self.runner.kind, unit=handle.unit,
                session_ref=session_ref, text=text)) is not None

        async def record_start(session: AsyncSession) -> bool:
            """A follow-up turn (its input taken off the queue people add to) or a loop's iteration (its session's
            row moves with it): the task loaded under lock and changed."""
            task = await session.get(Task, turn.task_id, with_for_update=True)
            if task is None or not task_state.held_by(task, self.ending.runner_id):
                return False
            task.workspace, task.base_branch = snapshot.workspace, snapshot.base_branch
            task.base_sha = snapshot.base_sha
            task_state.start_turn(task, follow_up=follow_up)
            task.turns += 1
            await iterations.turn_started(session, task)
            task.pid = handle.pid or None
            task.runner_kind, task.runner_unit = self.runner.kind, handle.unit
            task.session_ref = session_ref
            task.started_at = task.started_at or utcnow()
            if follow_up:
                task.pending_inputs = task.pending_inputs[1:]
            task.log_count += 1  # (before the statements below flush the task: one UPDATE of it, not two)
            session.add(task)
            await session.exec(insert(TaskLog).values(
                task_id=task.id, time=utcnow(), type=LogType.INPUT.value, content=text))
            await agent_started(session, task)
            await record(session, Principal.system(task.org_id), "task", "task.turn_started",
                         agent_id=task.agent_id, task_id=task.id,
                         payload={"turn": task.turns, "pid": task.pid, "followUp": follow_up})
            return True

        return await self.writes.run(record_start)  # with the other turns starting now

    def _on_lines(self, turn: Turn, lines: list[str]) -> None:
        """What one read of the agent's output gave: its checks made on the read's text at once (a line is looked at
        alone only where the text holds what a check looks for), its lines stored up to the turn's limit."""
        turn.last_lines.extend(lines)
        text = lines[0] if len(lines) == 1 else "\n".join(lines)  # (no check's words hold a line break)
        if COST_HINT in text:
            for line in lines:
                cost = reported_cost(line)
                if cost is not None:
                    turn.cost = cost
        if turn.verdict is None and hinted(text):
            for line in lines:
                found = verdict(line)
                if found is not None:
                    turn.verdict, turn.verdict_line = found, line
                    break
        if turn.session_pattern and turn.session_ref is None:
            for line in lines:
                match = re.search(turn.session_pattern, line)
                if match and match.group(1) is not None:  # (a match whose group took no part: the next line)
                    turn.session_ref = match.group(1)
                    break
        room = self.config.max_log_lines - turn.stored
        if room < len(lines):
            turn.dropped += len(lines) - max(room, 0)
            lines = lines[:max(room, 0)]
        if lines:
            turn.stored += len(lines)
            self.output.add_many(turn.task_id, lines)

    async def _refused_question(self, turn: Turn) -> Refusal | None:
        """A `shepherd ask` of this turn that people rejected, or let expire (one Core statement, no session: every
        turn's end asks)."""
        found = await self.db.rows(_REFUSED, {"task_id": turn.task_id, "since": turn.started})
        return Refusal(*found[0]) if found else None

    async def pause_or_resume(self, turn: Turn, control: Control) -> None:
        """Apply a pause (freeze the process group, snapshot the log) or a resume people asked for."""
        assert turn.handle is not None
        if control is Control.PAUSE:
            await self.output.flush()  # the snapshot is taken from the stored log: store what was read first
        async with self.db.write() as session:
            task = await session.get(Task, turn.task_id, with_for_update=True)
            if task is None:
                return
            task.control = None
            if control is Control.PAUSE and task.status == TaskStatus.RUNNING:
                await turn.handle.pause()
                turn.note_pause(True)
                task_state.pause(task)
                await iterations.paused(session, task, True)
                await take_snapshot(session, task)
                name = "task.paused"
            elif control is Control.RESUME and task.status == TaskStatus.PAUSED:
                await turn.handle.resume()
                turn.note_pause(False)
                task_state.resume(task)
                await iterations.paused(session, task, False)
                await note_waiting(session, task)  # still asking people?
                name = "task.resumed"
            else:
                session.add(task)
                return
            session.add(task)
            await record(session, Principal.system(task.org_id), "task", name, agent_id=task.agent_id,
                         task_id=task.id)
