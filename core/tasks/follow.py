"""Following tasks live: their new log rows and how their turns end, for several tasks at once with one poller.

A follower asks, each tick, for the log rows of all its tasks after one cursor (log ids grow across tasks, so one
cursor serves them all) in one indexed query (ix_tasklog_task: task_id, id), and for the tasks' states in the same
read. A tick comes every `poll_s`, or earlier when this process's runner has just stored output (`Pulse`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from core.store.db import Database
from core.store.models import Task, TaskLog
from core.tasks.loglines import enough, split
from core.tasks.state import FINISHED, GATED, State, TaskStatus

PAGE = 2000  # log rows read per query: a tick that finds more reads again at once
POLL_S = 1.0


class Pulse:
    """A broadcast wake-up: every waiter at the time of the call wakes (Wakeup is for one waiter)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, at_most_s: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await event.wait()


@dataclass(frozen=True)
class LogLine:
    id: int
    task_id: str
    time: Any
    type: str  # input | output
    content: str


@dataclass(frozen=True)
class TaskState:
    """Where a followed task stands: its status, and once its turn has ended, how."""

    id: str
    name: str
    status: TaskStatus
    outcome: str | None
    state_message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    turns: int = 0
    pending: bool = False  # follow-ups wait for another turn
    state: State = State.WORKING  # what the agent does (core.tasks.state.State)

    @property
    def turn_over(self) -> bool:
        """The agent is not working and will not on its own: finished, or waiting on people (a gate)."""
        return (self.status in FINISHED or self.status in GATED) and not self.pending


@dataclass(frozen=True)
class Tick:
    lines: list[LogLine]
    states: dict[str, TaskState]
    caught_up: bool = True  # the read found every row there was (not a full page): the states' ends hold for it


async def last_log_id(db: Database, task_ids: Sequence[str]) -> int:
    """The newest log row of these tasks (0: none): a cursor from which only what they write next is followed."""
    if not task_ids:
        return 0
    async with db.read() as session:
        found = (await session.exec(select(func.max(TaskLog.id)).where(col(TaskLog.task_id).in_(list(task_ids))))).one()
    return int(found or 0)


async def read_tick(db: Database, task_ids: Sequence[str], after_id: int, limit: int = PAGE) -> Tick:
    """The tasks' log rows after `after_id` (in id order, at most `limit`) and their states, in one read. The states
    are read first: a turn's output is stored before its end (core.tasks.ending), so a turn seen over has all its
    output in the rows read after, on a store whose statements each see what was committed before them too."""
    ids = list(task_ids)
    after = (col(TaskLog.task_id).in_(ids), col(TaskLog.id) > after_id)
    async with db.read() as session:
        tasks = list(await session.exec(select(Task).where(col(Task.id).in_(ids))))
        # a row holds the lines of one read (a thousand, or one): the rows' line counts first, then only the rows
        # that hold the tick's `limit` lines (catching up on a long log had read `limit` rows for `limit` lines)
        span = list(await session.exec(
            select(TaskLog.id, TaskLog.lines).where(*after).order_by(col(TaskLog.id)).limit(limit)))
        upto = enough(span, limit, after_id) if span else after_id
        rows = list(await session.exec(
            select(TaskLog).where(*after, col(TaskLog.id) <= upto).order_by(col(TaskLog.id)))) if span else []
    states = {t.id: TaskState(t.id, t.name, TaskStatus(t.status), t.outcome, t.state_message, dict(t.evidence or {}),
                              t.turns, bool(t.pending_inputs), State(t.state)) for t in tasks}
    lines: list[LogLine] = []
    cut = False  # a tick gives at most `limit` lines (a row may hold a thousand): the rest are read next
    for r in rows:
        for line_id, line in split(int(r.id or 0), r.lines, r.content):
            if line_id > after_id:
                if len(lines) >= limit:
                    cut = True
                    break
                lines.append(LogLine(line_id, r.task_id, r.time, r.type, line))
        if cut:
            break
    return Tick(lines, states, caught_up=len(span) < limit and (not span or upto == span[-1][0]) and not cut)


@dataclass
class Follow:
    """A live follow of several tasks: `ticks()` yields what is new, until every task's turn is over (or gone)."""

    db: Database
    task_ids: Sequence[str]
    after_id: int = 0
    pulse: Pulse | None = None
    poll_s: float = POLL_S

    async def ticks(self) -> AsyncIterator[Tick]:
        while True:
            tick = await read_tick(self.db, self.task_ids, self.after_id)
            if tick.lines:
                self.after_id = tick.lines[-1].id
            yield tick
            if not tick.caught_up:
                continue  # more is waiting: read it now
            if self.over(tick):
                return
            if self.pulse is not None:
                await self.pulse.wait(self.poll_s)
            else:
                await asyncio.sleep(self.poll_s)

    def over(self, tick: Tick) -> bool:
        """Has every task's turn ended (a task deleted meanwhile has ended too)?"""
        # a follow-up sent to a finished task makes it pending at once (core.tasks.steering), and one sent while it
        # works waits in pending_inputs: neither looks over before its turn has run
        return all((state := tick.states.get(task_id)) is None or state.turn_over for task_id in self.task_ids)
