"""Task news for the threads a task is bound to: one status message per task, edited in place as the task
moves, and one message per turn with its outcome and evidence.

The worker's sweeper (bot/sweeper.py) calls `announce_due` about once a second. Whatever changed a task since
its threads were last told (output, a status change, in any process) sets `updated_at` past `news_at`; the
pass writes the news to the outbox and moves `news_at`. So a task's threads hear of it at most once a pass,
however fast its output comes, and several changes between passes become one edit.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import or_, update
from sqlmodel import col, select

from core.channels.outbox import Message, enqueue
from core.clock import as_utc, utcnow
from core.store.db import Database
from core.store.models import Task, TaskLog, Thread
from core.tasks.budget import burn_down
from core.tasks.evidence import Evidence, evidence_summary
from core.tasks.loglines import split
from core.tasks.state import FINISHED, TaskStatus
from core.text import duration

ICONS = {"pending": "⏳", "queued": "⏳", "initializing": "⚙️", "running": "🏃", "paused": "⏸️",
         "awaiting": "✋", "completed": "✅", "failed": "❌", "cancelled": "⏹️"}
DETAIL_LINES = 10


def _facts(task: Task) -> dict[str, str]:
    facts = {"task": task.name, "agent": task.runtime, "status": task.status, "turn": str(task.turns),
             "level": f"L{task.autonomy_level}", "owner": task.owner_name}
    if task.repo:
        facts["repo"] = task.repo + (f" ({task.base_branch})" if task.base_branch else "")
    used = burn_down(task)
    if used:
        facts["budget"] = " · ".join(used)
    if task.started_at:
        end = as_utc(task.finished_at) if task.finished_at and TaskStatus(task.status) in FINISHED else utcnow()
        facts["elapsed"] = duration(int((end - as_utc(task.started_at)).total_seconds()))
    return facts


def status_message(task: Task, last_lines: list[str] | None = None) -> Message:
    """The one message that shows where a task is; edited in place as it moves."""
    status = TaskStatus(task.status)
    line = evidence_summary(task) if status in FINISHED else task.state_message or task.status
    text = f"{ICONS.get(status.value, '•')} {task.name}: {line}"
    if task.max_turns is not None or task.max_minutes is not None or task.max_cost is not None:
        text += f" ({' · '.join(burn_down(task))})"  # the budget burning down, where the task has one
    detail = "\n".join((last_lines or [])[-DETAIL_LINES:]) if status not in FINISHED else ""
    return Message(key=f"task:{task.id}:status", text=text, kind="progress", state=status.value,
                   fields=_facts(task), detail=detail, more=f"logs {task.name}", task=task.id)


def outcome_message(task: Task) -> Message:
    """A turn's end, posted once per turn: the outcome and the evidence behind it."""
    ev = Evidence.of(task)
    fields = {"outcome": task.outcome or task.status, "turn": str(task.turns)}
    if ev.exit_code is not None:
        fields["exit code"] = str(ev.exit_code)
    if ev.duration_s is not None:
        fields["duration"] = f"{ev.duration_s:.1f} s"
    fields["changes"] = ev.diff.describe()
    if ev.diff.paths:
        fields["paths"] = ", ".join(ev.diff.paths[:10]) + (" …" if len(ev.diff.paths) > 10 else "")
    if ev.reason:
        fields["reason"] = ev.reason
    icon = ICONS.get(task.status, "•")
    return Message(key=f"task:{task.id}:turn:{task.turns}:outcome", text=f"{icon} {task.name} {evidence_summary(task)}",
                   kind="outcome", state=task.outcome or task.status, fields=fields,
                   detail="\n".join(ev.last_lines), more=f"logs {task.name}", task=task.id)


class Progress:
    def __init__(self, db: Database, *, log_lines: int = DETAIL_LINES) -> None:
        self.db = db
        self.log_lines = log_lines

    async def announce_due(self, channels: Collection[str], *, limit: int = 100) -> int:
        """Write news of every task changed since its threads on `channels` last heard; returns how many."""
        if not channels:
            return 0
        due = (
            col(Task.id).in_(select(Thread.task_id).where(col(Thread.channel).in_(list(channels)),
                                                           col(Thread.task_id).is_not(None))),
            or_(col(Task.news_at).is_(None), col(Task.updated_at) > col(Task.news_at)),
        )
        async with self.db.read() as session:  # most passes find nothing: no write lock for those
            if (await session.exec(select(Task.id).where(*due).limit(1))).first() is None:
                return 0
        query = select(Task).where(*due).order_by(col(Task.updated_at)).limit(limit)
        async with self.db.write() as session:
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            tasks = list(await session.exec(query))
            for task in tasks:
                threads = list(await session.exec(
                    select(Thread).where(Thread.task_id == task.id, col(Thread.channel).in_(list(channels)))
                    .order_by(col(Thread.created_at), col(Thread.id))))
                lines: list[str] = []
                if TaskStatus(task.status) not in FINISHED and task.log_count:
                    rows = await session.exec(
                        select(TaskLog.content, TaskLog.lines).where(TaskLog.task_id == task.id)
                        .order_by(col(TaskLog.id).desc()).limit(self.log_lines))
                    # a row holds one line or more (core.tasks.loglines): the last `log_lines` of them
                    lines = [line for content, count in reversed(list(rows))
                             for _, line in split(0, count, content)][-self.log_lines:]
                await enqueue(session, threads, status_message(task, lines))
                if TaskStatus(task.status) in FINISHED and task.outcome:
                    await enqueue(session, threads, outcome_message(task))
                await session.exec(update(Task).where(col(Task.id) == task.id).values(news_at=task.updated_at))
        return len(tasks)
