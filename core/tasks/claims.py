"""Claiming waiting tasks. `plan_claims` decides, with no I/O, which waiting tasks this runner takes and what
the others are told (a suspended agent, a full runner, a full project); `Claims` reads what the plan needs,
takes tasks with one conditional update each (of several runners exactly one wins) and writes the notes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, func, update
from sqlmodel import col, select

from core.agents import Suspensions, suspensions
from core.autonomy.questions import new_task_token
from core.clock import utcnow
from core.people.access import Principal
from core.store.bulk import each
from core.store.db import Database
from core.store.events import record
from core.store.models import Task, table_of
from core.tasks import state as task_state
from core.tasks.state import ACTIVE, WAITING, TaskStatus

WINDOW = 200  # waiting tasks looked at per pass, oldest first
_T = table_of(Task)
_CLAIM = update(_T).where(_T.c.id == bindparam("b_id"))  # (the table's: an executemany, not an ORM bulk update)


@dataclass(frozen=True)
class Caps:
    max_tasks: int  # on this runner (SHEPHERD_MAX_TASKS)
    max_per_project: int  # on all runners together (SHEPHERD_MAX_TASKS_PER_PROJECT)


@dataclass(frozen=True)
class ClaimPlan:
    take: tuple[Task, ...] = ()
    notes: tuple[tuple[Task, str], ...] = ()  # queued tasks whose note is new, with the note


@dataclass(frozen=True)
class Waiting:
    """What a plan is made from: the waiting tasks (oldest first), the suspensions that concern them, and how
    many tasks of each of their projects are active anywhere."""

    tasks: Sequence[Task] = ()
    held: Suspensions = field(default_factory=Suspensions)
    busy: Mapping[str, int] = field(default_factory=dict)


def plan_claims(waiting: Waiting, *, running: int, caps: Caps) -> ClaimPlan:
    """Oldest first: a task of a suspended agent waits for `agent resume`, one beyond a cap waits for room;
    any other is taken (and counts against the caps of the tasks after it). `running`: tasks this runner runs."""
    busy = dict(waiting.busy)
    take: list[Task] = []
    notes: list[tuple[Task, str]] = []
    for task in waiting.tasks:
        blocker = waiting.held.blocker(task.agent_id, task.project_id)
        in_project = busy.get(task.project_id, 0) if task.project_id else 0
        if blocker is not None:
            note = f"waiting: agent {blocker} is suspended; `agent resume {blocker}` lets it start"
        elif running + len(take) >= caps.max_tasks:
            note = (f"queued: {running + len(take)} tasks running on this runner, the cap is {caps.max_tasks} "
                    "(SHEPHERD_MAX_TASKS)")
        elif task.project_id and in_project >= caps.max_per_project:
            note = (f"queued: its project has {in_project} tasks running, the cap is {caps.max_per_project} "
                    "(SHEPHERD_MAX_TASKS_PER_PROJECT)")
        else:
            take.append(task)
            if task.project_id:
                busy[task.project_id] = in_project + 1
            continue
        if task.status != TaskStatus.QUEUED or task.state_message != note:
            notes.append((task, note))
    return ClaimPlan(tuple(take), tuple(notes))


@dataclass(frozen=True)
class Claimed:
    """A task this runner got: its turn's callback token, and the task's row as the claim left it."""

    token: str
    task: Task


class Claims:
    def __init__(self, db: Database, runner_id: str) -> None:
        self.db = db
        self.runner_id = runner_id

    async def waiting(self) -> Waiting:
        async with self.db.read() as session:
            tasks = list(await session.exec(
                select(Task).where(task_state.claimable(self.runner_id))
                .order_by(col(Task.created_at), col(Task.id)).limit(WINDOW)
            ))
            if not tasks:
                return Waiting()
            project_ids = {t.project_id for t in tasks if t.project_id}
            held = await suspensions(session, [t.agent_id for t in tasks], project_ids)
            busy = {
                pid: int(n) for pid, n in await session.exec(
                    select(Task.project_id, func.count()).where(
                        col(Task.project_id).in_(project_ids), col(Task.status).in_([s.value for s in ACTIVE])
                    ).group_by(Task.project_id)
                ) if pid
            } if project_ids else {}
        return Waiting(tasks, held, busy)

    async def take(self, task_ids: Sequence[str]) -> dict[str, Claimed]:
        """Claim waiting tasks for this runner, all in one commit (a hundred tasks at once are a hundred claims, and
        on SQLite a commit is an fsync); returns those it got, each with the callback token of its turn (its
        SHEPHERD_TASK_TOKEN for `shepherd ask`), whose hash the claim stores: on disk before the agent can use it,
        with no write of its own before the agent starts. Each task is its own conditional update, all of them one
        executemany; which it got is read back in the same transaction: a task whose row holds its new hash
        (random: no other claim can have written it). One that another runner (or a stop) came first for is simply
        not among them. On PostgreSQL an update each, awaited in turn, had been a round trip each on an event loop
        busy with the tasks starting: a hundred claims took half a second. The rows read back are the tasks as
        claimed, which their turns start from (a read each after the claim had been a round trip each, again)."""
        if not task_ids:
            return {}
        tokens = {task_id: new_task_token() for task_id in dict.fromkeys(task_ids)}
        async with self.db.write() as session:
            conn = await session.connection()
            await conn.execute(
                _CLAIM.where(task_state.claimable(self.runner_id)).values(
                    **task_state.claimed(self.runner_id, utcnow()), callback_hash=bindparam("b_hash")),
                each([{"b_id": task_id, "b_hash": digest} for task_id, (_, digest) in tokens.items()]))
            stored = await session.exec(select(Task).where(col(Task.id).in_(list(tokens))))
            return {task.id: Claimed(tokens[task.id][0], task) for task in stored
                    if task.callback_hash == tokens[task.id][1]}

    async def tell(self, notes: Sequence[tuple[Task, str]]) -> None:
        """Queue the tasks with their notes; the first time, an event says why."""
        if not notes:
            return
        async with self.db.write() as session:
            for stale, note in notes:
                # locked: a runner elsewhere may be claiming it this moment (a claim must not be undone)
                task = await session.get(Task, stale.id, with_for_update=True)
                if task is None or TaskStatus(task.status) not in WAITING:
                    continue
                first = task_state.queue(task, note)
                session.add(task)
                if first:
                    await record(session, Principal.system(task.org_id), "task", "task.queued",
                                 agent_id=task.agent_id, task_id=task.id, payload={"reason": note})
