"""The stall watchdog: people hear of a task that went quiet before the idle timeout ends it, and of a task that
has waited on them for a day.

- A running agent that has printed nothing for `warn_s` (default half of SHEPHERD_TASK_IDLE_TIMEOUT) gets one new
  message in its task's threads: what it printed last, for how long it has been silent, and when the idle timeout
  will end its turn. Once per silence: printing again and going silent again may warn again. The silence begins
  at the later of its last printed line (`Task.output_at`, kept by the output flusher, core.tasks.output) and its
  `state_at` (the turn's start, a resume, people deciding what it asked: the moments the runner's idle clock
  starts again, core.runners.local). Paused tasks and agents waiting in `shepherd ask` are silent on purpose.
- A task waiting on people (its gated action awaiting a decision, or its agent waiting in `shepherd ask`) gets a
  note once per `waiting_note_s` (a day) of waiting.

The job reads the candidates by status (an index), and claims the due ones with FOR UPDATE SKIP LOCKED
(PostgreSQL; SQLite's writer lock elsewhere), checking again under the lock; the note and what it was about
(`stall_warned_since`, `waiting_noted_at`) are written in one transaction: any number of processes may run it at
once, and each silence or day is told once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.channels.outbox import Message, enqueue, threads_for
from core.clock import as_utc
from core.people.access import Principal
from core.store.db import Database
from core.store.events import record
from core.store.models import Task, TaskLog
from core.tasks.loglines import last_line
from core.tasks.state import LogType, State, TaskStatus, waiting_on_people
from core.text import clock, span

IDLE_TIMEOUT_S = 600.0  # SHEPHERD_TASK_IDLE_TIMEOUT's default
WAITING_NOTE_S = 86400.0  # SHEPHERD_WAITING_NOTE_AFTER's default
MAX_LINE = 300  # the last line, as the note shows it
WATCHED = (TaskStatus.RUNNING.value, TaskStatus.AWAITING.value)  # in this order: running tasks first
MAX_CANDIDATES = 5000  # tasks of each watched status read in one run


@dataclass(frozen=True)
class _Due:
    silence: datetime | None = None  # the start of a silence to warn about
    waited: datetime | None = None  # the day of waiting to note (its start + k days)


class Watchdog:
    def __init__(
        self, db: Database, *, idle_timeout_s: float = IDLE_TIMEOUT_S, warn_s: float | None = None,
        waiting_note_s: float = WAITING_NOTE_S,
    ) -> None:
        self.db = db
        self.idle_timeout_s = idle_timeout_s  # the runners' SHEPHERD_TASK_IDLE_TIMEOUT: when silence ends a turn
        self.warn_s = warn_s if warn_s is not None else idle_timeout_s / 2
        self.waiting_note_s = waiting_note_s

    def _due(self, task: Task, now: datetime) -> _Due:
        status, since = TaskStatus(task.status), as_utc(task.state_at)
        if status is TaskStatus.RUNNING and task.state == State.WORKING:
            silence = max(since, as_utc(task.output_at)) if task.output_at else since
            quiet = (now - silence).total_seconds()
            warned = task.stall_warned_since is not None and as_utc(task.stall_warned_since) >= silence
            # past the idle timeout the runner is ending the turn: a warning would come after the fact
            if self.warn_s <= quiet < self.idle_timeout_s and not warned:
                return _Due(silence=silence)
            return _Due()
        if waiting_on_people(task) and status in (TaskStatus.RUNNING, TaskStatus.AWAITING) \
                and self.waiting_note_s > 0:
            days = int((now - since).total_seconds() // self.waiting_note_s)
            day = since + timedelta(seconds=self.waiting_note_s * days)
            if days >= 1 and (task.waiting_noted_at is None or as_utc(task.waiting_noted_at) < day):
                return _Due(waited=day)
        return _Due()

    async def warn_stalled(self, now: datetime) -> str:
        """Warn of the silent tasks and note the long waits due at `now` (the scheduler's `stalls` job); returns
        what it did, in a line."""
        candidates: list[Task] = []
        async with self.db.read() as session:
            # status by status (ix_task_status), running first: many tasks left waiting on people never hide a
            # silent running one
            for status in WATCHED:
                candidates += await session.exec(select(Task).where(Task.status == status)
                                                 .order_by(col(Task.created_at)).limit(MAX_CANDIDATES))
        due = [t.id for t in candidates if self._due(t, now) != _Due()]
        if not due:
            return "nothing due"
        warned = noted = written = 0
        query = select(Task).where(col(Task.id).in_(due)).order_by(col(Task.id))
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)  # another process tells these now
        async with self.db.write() as session:
            for task in list(await session.exec(query.execution_options(populate_existing=True))):
                found = self._due(task, now)  # again, under the lock: it may have printed, or been told
                if found.silence is not None:
                    written += await self._warn(session, task, found.silence, now)
                    warned += 1
                elif found.waited is not None:
                    written += await self._note(session, task, found.waited, now)
                    noted += 1
        if not warned + noted:
            return "nothing due"
        return f"warned {warned} silent task{'s' if warned != 1 else ''}, noted {noted} waiting on people, " \
               f"{written} messages"

    async def _warn(self, session: AsyncSession, task: Task, silence: datetime, now: datetime) -> int:
        row = (await session.exec(select(TaskLog.content, TaskLog.lines).where(
            TaskLog.task_id == task.id, TaskLog.type == LogType.OUTPUT.value).order_by(col(TaskLog.id).desc())
            .limit(1))).first()
        last = last_line(row[1], row[0]) if row else None
        ends = silence + timedelta(seconds=self.idle_timeout_s)
        text = (f"task {task.name} has printed nothing for {span((now - silence).total_seconds())}: the idle timeout "
                f"(SHEPHERD_TASK_IDLE_TIMEOUT, {span(self.idle_timeout_s)}) ends its turn at {clock(ends)} "
                f"unless it prints again")
        fields = {"task": task.name, "silent since": clock(silence), "ends at": clock(ends)}
        message = Message(key=f"stall:{task.id}:{silence.isoformat()}", text=text, kind="notice", fields=fields,
                          detail=(last or "(nothing printed yet)")[:MAX_LINE], more=f"logs {task.name}")
        task.stall_warned_since = silence
        session.add(task)
        await record(session, Principal.system(task.org_id, "watchdog"), "task", "task.stall_warned",
                     agent_id=task.agent_id, task_id=task.id,
                     payload={"silentSince": silence.isoformat(), "endsAt": ends.isoformat()})
        return await enqueue(session, await threads_for(session, task.org_id, task_id=task.id), message)

    async def _note(self, session: AsyncSession, task: Task, day: datetime, now: datetime) -> int:
        waited = span((now - as_utc(task.state_at)).total_seconds())
        text = f"task {task.name} has waited on people for {waited}: {task.state_message}"
        message = Message(key=f"waiting:{task.id}:{day.isoformat()}", text=text, kind="notice",
                          fields={"task": task.name, "waiting since": as_utc(task.state_at).strftime(
                              "%Y-%m-%d %H:%M UTC")}, more="pending")
        task.waiting_noted_at = day
        session.add(task)
        await record(session, Principal.system(task.org_id, "watchdog"), "task", "task.waiting_noted",
                     agent_id=task.agent_id, task_id=task.id, payload={"waitingSince": as_utc(task.state_at)
                                                                       .isoformat()})
        return await enqueue(session, await threads_for(session, task.org_id, task_id=task.id), message)
