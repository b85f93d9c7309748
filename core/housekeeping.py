"""Clean-up (issue 16): what finished work leaves behind, removed once nobody can need it.

- The ephemeral agent of a task finished longer than `agents_s` ago is removed. The task, its log, its events and
  its confirmations stay (none of them has a foreign key on the agent); the agent's autonomy level moves to the
  task, so that a later follow-up is gated as the agent would have gated it. A suspended agent stays: a
  suspension is a person's hold, and it holds the task's follow-ups back too.
- The workspace of a task finished longer than `workspaces_s` ago is pruned, unless it holds work found nowhere
  else (core.runners.workspace.unshared_work) and the task finished less than `workspace_hard_limit_s` ago, or an
  action of the task's that may need it is still open. The task is marked first (with an event), in a transaction
  that finds it still finished at the time it was judged by; a follow-up is refused from then on, and only then is
  the directory deleted. A workspace not on this machine (another worker's disk) is left to be found there.
- Delivery-ledger rows done, and outbox rows sent, longer than `ledger_s` ago are deleted: never one pending,
  failed or in hand, nor the delivery a held request (`ok-to-run`) replays. The platform ref of a posted message
  (MessageRef) is never deleted here: decisions edit prompts through it, and replies to it find their task.

Each step works in batches of `batch` rows, each its own short transaction; rows are claimed with SKIP LOCKED on
PostgreSQL, so several processes may run it at once, and a run cut short leaves nothing half done.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, exists, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import AgentStatus
from core.autonomy.plans import Execution, Status
from core.channels.ledger import ItemStatus
from core.channels.outbox import RowStatus
from core.clock import as_utc
from core.people.access import Principal
from core.runners.workspace import unshared_work
from core.store.db import Database
from core.store.events import record
from core.store.models import Agent, Confirmation, Delivery, HeldRequest, Outbox, Task, table_of
from core.tasks.evidence import ActionRecord, Evidence
from core.tasks.service import TASK_AGENT_TYPES, Tasks
from core.tasks.state import FINISHED

DAY_S = 24 * 3600.0
BATCH = 200
# A workspace marked pruned whose directory is still there (the process died between the mark and the delete) is
# deleted by the runs within this long after its mark.
UNFINISHED_PRUNE_S = DAY_S
AGENTS_READ = 500  # ephemeral agents looked at per transaction of the agents step
_FINISHED = [s.value for s in FINISHED]
_T = table_of(Task)


@dataclass(frozen=True)
class Retention:
    """How long what finished work leaves behind is kept, in seconds (SHEPHERD_AGENT_RETENTION, …)."""

    agents_s: float = 7 * DAY_S
    workspaces_s: float = 3 * DAY_S
    workspace_hard_limit_s: float = 30 * DAY_S
    ledger_s: float = 7 * DAY_S
    batch: int = BATCH


@dataclass
class CleanUp:
    """What one run of clean-up did."""

    agents: int = 0
    workspaces: int = 0
    kept: Counter[str] = field(default_factory=Counter)  # workspaces kept past their retention, by reason
    elsewhere: int = 0  # workspaces due, not on this machine
    deliveries: int = 0
    outbox: int = 0

    def line(self) -> str:
        """One line for `schedules`: removed 3 agents, pruned 2 workspaces (1 kept: unpushed commits), …"""
        pruned = f"pruned {_n(self.workspaces, 'workspace')}"
        notes = [f"{n} kept: {reason}" for reason, n in sorted(self.kept.items())]
        if self.elsewhere:
            notes.append(f"{self.elsewhere} not on this machine")
        if notes:
            pruned += f" ({'; '.join(notes)})"
        return (f"removed {_n(self.agents, 'agent')}, {pruned}, "
                f"compacted {self.deliveries} ledger and {self.outbox} outbox rows")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class _Due:
    """A finished task whose workspace is past its retention, as it was when judged."""

    id: str
    org_id: str
    agent_id: str | None
    workspace: str
    base_sha: str | None
    finished_at: datetime
    pruned_at: datetime | None
    evidence: dict[str, Any]


class Housekeeping:
    """The `cleanup` job: `clean_up(now)` (bot/scheduler.py runs it on SHEPHERD_CLEANUP_SCHEDULE)."""

    def __init__(self, db: Database, tasks: Tasks, retention: Retention | None = None) -> None:
        self.db = db
        self.tasks = tasks  # whose remove_workspace deletes only inside the workspace root
        self.retention = retention or Retention()

    async def clean_up(self, now: datetime) -> str:
        """One run of every step, as of `now`; returns its one-line result."""
        done = CleanUp()
        done.agents = await self.remove_agents(now)
        await self.prune_workspaces(now, done)
        done.deliveries, done.outbox = await self.compact(now)
        return done.line()

    # --- agents ------------------------------------------------------------------------------------

    async def remove_agents(self, now: datetime) -> int:
        """The ephemeral agents of tasks finished before now - agents_s, gone; returns how many."""
        cutoff = now - timedelta(seconds=self.retention.agents_s)
        removed = 0
        after: str | None = None  # agents are read in id order, a chunk per transaction
        while True:
            async with self.db.write() as session:
                # From the agents (the ephemeral ones still here) to their tasks (ix_task_agent), in two steps so
                # that no planner starts from the tasks: the work is bounded by the agents left, not by every task
                # that ever finished (a join read 300,000 finished tasks in a second on SQLite without statistics)
                live = select(Agent.id).where(col(Agent.type).in_(sorted(TASK_AGENT_TYPES)),
                                              col(Agent.status) != AgentStatus.SUSPENDED.value)
                if after is not None:
                    live = live.where(col(Agent.id) > after)
                agent_ids = list(await session.exec(live.order_by(col(Agent.id)).limit(AGENTS_READ)))
                if not agent_ids:
                    return removed
                after = agent_ids[-1]
                query = (select(Task, Agent).join(Agent, col(Agent.id) == col(Task.agent_id))
                         .where(col(Task.agent_id).in_(agent_ids)))
                if not self.db.is_sqlite:  # a task a follow-up holds now is skipped: the next run finds it
                    # (the conditions in the statement here: PostgreSQL plans by its statistics, where SQLite,
                    # with none, would read by status, every finished task; there they are checked below)
                    query = query.where(col(Task.status).in_(_FINISHED), col(Task.finished_at) <= cutoff) \
                        .with_for_update(skip_locked=True, of=[Task, Agent])
                rows = [(task, agent) for task, agent in await session.exec(query) if task.status in _FINISHED
                        and task.finished_at is not None and as_utc(task.finished_at) <= cutoff]
                for task, agent in rows:
                    task.autonomy_level = agent.autonomy_level  # its follow-ups are gated at the agent's level
                    session.add(task)
                    await session.delete(agent)
                    await record(session, Principal.system(task.org_id, "cleanup"), "agent", "agent.removed",
                                 agent_id=agent.id, task_id=task.id,
                                 payload={"name": agent.name, "type": agent.type, "reason": "retention",
                                          "taskFinishedAt": as_utc(task.finished_at).isoformat()
                                          if task.finished_at else None})
            removed += len(rows)
            if len(agent_ids) < AGENTS_READ:
                return removed

    # --- workspaces --------------------------------------------------------------------------------

    async def prune_workspaces(self, now: datetime, done: CleanUp | None = None) -> CleanUp:
        """Workspaces of tasks finished before now - workspaces_s, pruned unless they must be kept (counted in
        `done`, by reason)."""
        done = done if done is not None else CleanUp()
        root = self.tasks.workspace_root
        if root is None:  # this process has no workspaces (a web process): nothing of them is its to judge
            return done
        r = self.retention
        cutoff = now - timedelta(seconds=r.workspaces_s)
        hard = now - timedelta(seconds=r.workspace_hard_limit_s)
        after: tuple[datetime, str] | None = None
        while True:
            batch = await self._due_workspaces(now, cutoff, after)
            for due in batch:
                await self._prune(due, root, now, hard, done)
            if len(batch) < r.batch:
                return done
            after = (batch[-1].finished_at, batch[-1].id)

    async def _due_workspaces(self, now: datetime, cutoff: datetime,
                              after: tuple[datetime, str] | None) -> list[_Due]:
        """A batch of finished tasks past the retention with a workspace to prune (or one marked pruned lately
        whose deletion may not have happened), oldest end first, after the keyset `after`."""
        lately = now - timedelta(seconds=UNFINISHED_PRUNE_S)
        # Two ranges of ix_task_unpruned (workspace_pruned_at, finished_at, id), each read in order: the workspaces
        # not pruned yet (what is left to do, however many tasks ever finished), and those marked pruned lately
        unpruned: list[Any] = [col(Task.workspace_pruned_at).is_(None), col(Task.finished_at) <= cutoff]
        # (marked pruned: finished, with a workspace; no other condition, so that no planner reads by status)
        marked: list[Any] = [col(Task.workspace_pruned_at) >= lately, col(Task.finished_at) <= cutoff]
        if after is not None:
            at, task_id = after
            later = or_(col(Task.finished_at) > at, and_(col(Task.finished_at) == at, col(Task.id) > task_id))
            unpruned.append(later)
            marked.append(later)
        common = [col(Task.status).in_(_FINISHED), col(Task.workspace).is_not(None)]
        columns = (_T.c.id, _T.c.org_id, _T.c.agent_id, _T.c.workspace, _T.c.base_sha, _T.c.finished_at,
                   _T.c.workspace_pruned_at, _T.c.evidence)
        rows: list[Any] = []
        async with self.db.read() as session:
            conn = await session.connection()
            for where in (unpruned + common, marked):
                rows += (await conn.execute(sa_select(*columns).where(*where)
                                            .order_by(_T.c.finished_at, _T.c.id).limit(self.retention.batch))).all()
        rows.sort(key=lambda r: (as_utc(r.finished_at), r.id))
        return [_Due(*row) for row in rows[:self.retention.batch]]

    async def _prune(self, due: _Due, root: Path, now: datetime, hard: datetime, done: CleanUp) -> None:
        path = Path(due.workspace)
        here = await asyncio.to_thread(_is_workspace, path, root)
        if due.pruned_at is not None:  # marked before: only its deletion may be missing
            if here:
                await asyncio.to_thread(self.tasks.remove_workspace, str(path))
                await self.tasks.discard_remote(due.id)
            return
        if not here:
            done.elsewhere += 1
            return
        forced = as_utc(due.finished_at) <= hard
        pushed = await self._pushed(due)
        reason = await unshared_work(path, pushed=pushed, base=due.base_sha)
        if reason is not None and not forced:
            done.kept[reason] += 1
            return
        if not await self._mark(due, now, reason if forced else None):
            return  # a follow-up, an action or a deletion got there first: judged again next time
        await asyncio.to_thread(self.tasks.remove_workspace, str(path))
        await self.tasks.discard_remote(due.id)
        done.workspaces += 1

    async def _pushed(self, due: _Due) -> tuple[str, ...]:
        """The commits Shepherd's own actions pushed for the task (its evidence, its confirmations' results)."""
        heads = {a.record.result.head for a in Evidence.from_json(due.evidence).actions
                 if a.record.result and a.record.result.pushed and a.record.result.head}
        async with self.db.read() as session:
            results = await session.exec(select(Confirmation.result).where(
                Confirmation.org_id == due.org_id, Confirmation.task_id == due.id))
            for result in results:
                record_ = ActionRecord.from_json(result or {})
                if record_.result and record_.result.pushed and record_.result.head:
                    heads.add(record_.result.head)
        return tuple(sorted(heads))

    async def _mark(self, due: _Due, now: datetime, discarded: str | None) -> bool:
        """Mark the task's workspace pruned, with its event, if the task is still as it was judged: finished at
        the same time, not marked, no action of its open. False: leave it."""
        async with self.db.write() as session:
            query = select(Task).where(Task.id == due.id, col(Task.status).in_(_FINISHED),
                                       col(Task.workspace_pruned_at).is_(None))
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            task = (await session.exec(query)).first()
            if task is None or task.finished_at is None or as_utc(task.finished_at) != as_utc(due.finished_at):
                return False
            if await _open_action(session, task):
                return False
            task.workspace_pruned_at = now
            session.add(task)
            payload: dict[str, Any] = {"workspace": task.workspace, "reason": "retention"}
            if discarded is not None:
                payload.update(reason="hard limit", discarded=discarded)
            await record(session, Principal.system(task.org_id, "cleanup"), "task", "task.workspace_pruned",
                         agent_id=task.agent_id, task_id=task.id, payload=payload)
        return True

    # --- the ledger and the outbox -------------------------------------------------------------------

    async def compact(self, now: datetime) -> tuple[int, int]:
        """Delivery-ledger rows done and outbox rows sent before now - ledger_s, deleted; returns (ledger,
        outbox) counts. A redelivery of a compacted item is then new to the ledger (README: Clean-up)."""
        cutoff = now - timedelta(seconds=self.retention.ledger_s)
        replayable = exists().where(col(HeldRequest.source) == col(Delivery.source),
                                    col(HeldRequest.key) == col(Delivery.key), col(HeldRequest.released_at).is_(None))
        deliveries = await self._delete_batches(Delivery, and_(
            col(Delivery.status) == ItemStatus.DONE.value, col(Delivery.done_at) < cutoff, ~replayable))
        outbox = await self._delete_batches(Outbox, and_(
            col(Outbox.status) == RowStatus.SENT.value, col(Outbox.sent_at) < cutoff))
        return deliveries, outbox

    async def _delete_batches(self, model: type[Delivery] | type[Outbox], where: Any) -> int:
        ident = col(model.id)
        deleted = 0
        while True:
            async with self.db.write() as session:
                query = select(ident).where(where).order_by(ident).limit(self.retention.batch)
                if not self.db.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                ids: Sequence[int | None] = list(await session.exec(query))
                if ids:
                    await session.exec(delete(model).where(ident.in_(ids)))
            deleted += len(ids)
            if len(ids) < self.retention.batch:
                return deleted


async def _open_action(session: AsyncSession, task: Task) -> bool:
    """Whether an action of the task is still open: asked, or approved and not yet carried out (a deploy runs in
    the workspace)."""
    found = (await session.exec(select(Confirmation.id).where(
        Confirmation.org_id == task.org_id, Confirmation.task_id == task.id,
        or_(col(Confirmation.status) == Status.PENDING.value,
            and_(col(Confirmation.status) == Status.APPROVED.value,
                 col(Confirmation.execution).in_([Execution.WAITING.value, Execution.RUNNING.value]))),
    ).limit(1))).first()
    return found is not None


def _is_workspace(path: Path, root: Path) -> bool:
    """A directory right under this process's workspace root (a stored path is never trusted blindly)."""
    try:
        return path.is_dir() and not path.is_symlink() and path.resolve().parent == root.resolve()
    except OSError:
        return False
