"""What a digest says: the place's tasks running, waiting on people and finished since the last digest, the
confirmations pending and the agents suspended, read in the transaction that claims the digest (so what it shows
and what it records as shown are the same), and the one new message that tells it.

What a place may see is what `status` and `tasks` show there: the org's tasks; a project-scoped place (a GitHub
issue: its repository's project; or `digest … --project P`) only its project's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import AgentStatus
from core.autonomy.plans import Status
from core.channels.outbox import Message
from core.clock import as_utc
from core.sessions.rows import shown_session, shown_task
from core.store.models import Agent, Confirmation, Digest, Project, Task, TaskLog
from core.tasks.evidence import evidence_summary
from core.tasks.loglines import last_line
from core.tasks.state import ACTIVE, FINISHED, GATED, WAITING, LogType
from core.text import duration

READ_MAX = 200  # rows read per section: a digest is a summary, the full lists are `tasks` and `pending`
SHOWN_MAX = 10  # lines shown per section (a phone's screen); the rest are counted
LINE_MAX = 120  # a latest output line or an outcome, cut
GATED_STATUS = next(iter(GATED)).value  # awaiting: waiting on people
ICONS = {"completed": "✅", "failed": "❌", "cancelled": "⏹️"}
# How far before the last digest's end a finish is looked for again: a finish is stamped before its transaction
# commits (and by its own process's clock), so the last digest may not have seen one stamped just before it read.
# The finishes it did report are in its `seen`, and are not told twice.
LATE_FINISH = timedelta(minutes=5)


@dataclass(frozen=True)
class Item:
    key: str  # what the digest records as shown: a section and an id
    line: str


@dataclass
class Snapshot:
    running: list[Item] = field(default_factory=list)
    waiting: list[Item] = field(default_factory=list)
    finished: list[Item] = field(default_factory=list)
    pending: list[Item] = field(default_factory=list)
    suspended: list[Item] = field(default_factory=list)
    project: str | None = None  # the project a scoped place sees, by name
    reported: list[str] = field(default_factory=list)  # the finishes told, this time or before, that a late look sees

    def sections(self) -> list[tuple[str, list[Item]]]:
        return [("Running", self.running), ("Waiting on people", self.waiting),
                ("Finished since the last digest", self.finished), ("Pending confirmations", self.pending),
                ("Agents suspended", self.suspended)]

    def keys(self) -> list[str]:
        """What this digest shows, but the finished (new by definition), and the finishes told lately (the next
        digest looks LATE_FINISH back, and must not tell them again): the next one compares against it."""
        return [i.key for _, items in self.sections() for i in items if not i.key.startswith("done:")] + self.reported

    def news(self, seen: Sequence[str]) -> bool:
        """Whether it shows anything the last digest did not."""
        return bool(self.finished) or not set(self.keys()) <= set(seen)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LINE_MAX else text[:LINE_MAX - 1] + "…"


def _age(now: datetime, then: datetime) -> str:
    return duration(max(0, int((now - as_utc(then)).total_seconds())))


async def _latest_line(session: AsyncSession, task: Task) -> str:
    row = (await session.exec(select(TaskLog.content, TaskLog.lines).where(TaskLog.task_id == task.id,
                                                                          TaskLog.type == LogType.OUTPUT.value)
                              .order_by(col(TaskLog.id).desc()).limit(1))).first()
    line = last_line(row[1], row[0]) if row else None
    return _cut(line or task.state_message or "no output yet")


async def gather(session: AsyncSession, digest: Digest, now: datetime) -> Snapshot:
    """The digest's content as of `now`, for its org (and project, if scoped)."""
    org = digest.org_id
    snap = Snapshot()
    # a digest is posted to a shared place: no private session's tasks, nor what they ask, whoever owns it
    task_scope: list[Any] = [Task.org_id == org, shown_session(Task.session_id, org, None)]
    if digest.project_id:
        task_scope.append(Task.project_id == digest.project_id)
        snap.project = (await session.exec(select(Project.name).where(Project.id == digest.project_id))).first()
    live = [s.value for s in (*ACTIVE, *WAITING, *GATED)]
    tasks = await session.exec(select(Task).where(*task_scope, col(Task.status).in_(live))
                               .order_by(col(Task.created_at), col(Task.id)).limit(READ_MAX))
    for task in tasks:
        if task.status == GATED_STATUS:
            snap.waiting.append(Item(f"wait:{task.id}", f"{task.name}: waiting {_age(now, task.state_at)}"
                                     + (f" ({_cut(task.state_message)})" if task.state_message else "")))
            continue
        shown = len(snap.running) < SHOWN_MAX  # output is read only for the lines shown
        status = "" if task.status == "running" else f" [{task.status}]"
        line = await _latest_line(session, task) if shown else ""
        snap.running.append(Item(f"run:{task.id}", f"{task.name}{status}: {line}"))
    since = as_utc(digest.reported_until) - (LATE_FINISH if digest.last_fired_at else timedelta(0))
    told = set(digest.seen)
    finished = await session.exec(select(Task).where(
        *task_scope, col(Task.status).in_([s.value for s in FINISHED]),
        col(Task.finished_at) > since, col(Task.finished_at) <= now)
        .order_by(col(Task.finished_at), col(Task.id)).limit(READ_MAX))
    for task in finished:
        snap.reported.append(f"done:{task.id}")
        if f"done:{task.id}" in told:  # told by the last digest: looked at again only in case it missed one
            continue
        icon = ICONS.get(task.status, "•")
        snap.finished.append(Item(f"done:{task.id}", f"{icon} {task.name}: {_cut(evidence_summary(task))}"))
    conf_scope: list[Any] = [Confirmation.org_id == org, Confirmation.status == Status.PENDING.value,
                             shown_task(Confirmation.task_id, org, None)]
    agent_scope: list[Any] = [Agent.org_id == org, Agent.status == AgentStatus.SUSPENDED.value]
    if digest.project_id:
        conf_scope.append(Confirmation.project_id == digest.project_id)
        agent_scope.append(Agent.project_id == digest.project_id)
    for conf in await session.exec(select(Confirmation).where(*conf_scope)
                                   .order_by(col(Confirmation.created_at), col(Confirmation.id)).limit(READ_MAX)):
        left = as_utc(conf.expires_at) - now
        expires = f"expires in {duration(int(left.total_seconds()))}" if left.total_seconds() > 0 else "expiring"
        snap.pending.append(Item(f"conf:{conf.id}", f"{conf.code} {conf.action}: asked {_age(now, conf.created_at)} "
                                                    f"ago, {expires}"))
    for agent in await session.exec(select(Agent).where(*agent_scope)
                                    .order_by(col(Agent.name), col(Agent.id)).limit(READ_MAX)):
        snap.suspended.append(Item(f"agent:{agent.id}", f"{agent.name} ({agent.type})"))
    return snap



def message(digest: Digest, snap: Snapshot, fire: datetime, zone_label: str, local: datetime) -> Message:
    """One new message per fire time (its own key: never an edit of the last digest). `text` is all of it as plain
    lines (what a channel without a digest layout shows); `fields` are its sections, for the ones with one."""
    counts = [f"{len(items)} {title.lower().split(' since')[0]}" for title, items in snap.sections() if items]
    scope = f" · {snap.project}" if snap.project else ""
    headline = (f"📋 Digest{scope} · {local:%a %H:%M} {zone_label} · " + (", ".join(counts) if counts else "all quiet"))
    sections: dict[str, str] = {}
    for title, items in snap.sections():
        if not items:
            continue
        lines = [f"• {i.line}" for i in items[:SHOWN_MAX]]
        if len(items) > SHOWN_MAX:
            lines.append(f"… and {len(items) - SHOWN_MAX}{'+' if len(items) >= READ_MAX else ''} more")
        sections[f"{title} ({len(items)}{'+' if len(items) >= READ_MAX else ''})"] = "\n".join(lines)
    body = [headline] + [f"{title}\n{lines}" for title, lines in sections.items()]
    if not sections:
        body.append("nothing running, waiting, finished, pending or suspended")
    return Message(key=f"digest:{digest.id}:{fire.isoformat()}", text="\n\n".join(body), kind="digest",
                   fields=sections, more="tasks")
