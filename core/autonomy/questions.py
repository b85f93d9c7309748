"""The agent's own questions: `shepherd ask` through the task's callback token.

Each turn gets a new task-scoped token (its SHA-256 kept, valid only for that task while its turn runs);
with it the agent asks, and waits for the decision. A question is a confirmation of origin `agent`
(core.autonomy.confirmations decides it); while one is pending the running task shows as waiting on people
(`note_waiting`, the one writer of that fact), and when the turn ends what nobody decided is void.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.plans import Origin, Plan, Status, checked_plan
from core.errors import NotFound, Unauthorized
from core.store.db import Database
from core.store.models import Agent, Confirmation, Task
from core.tasks import state as task_state
from core.tasks.state import ACTIVE, TaskStatus

if TYPE_CHECKING:
    from core.autonomy.confirmations import Confirmations

TASK_TOKEN_PREFIX = "sht_"


def new_task_token() -> tuple[str, str]:
    """A task-scoped callback token and its SHA-256 (only the hash is stored)."""
    secret = TASK_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest()


async def note_waiting(session: AsyncSession, task: Task, decided: str = "") -> None:
    """The one writer of "this running agent waits on people": while one of its `shepherd ask` questions is
    pending, the task's state is `idle` with the question (the one it asked last: what it waits on now);
    once people decided them all, `working` again (`decided` says how). The log flusher leaves an idle
    task's message alone (core.tasks.service.waiting_on_people)."""
    if TaskStatus(task.status) is not TaskStatus.RUNNING:
        return  # a paused task is idle anyway; resuming it asks again
    asking = (await session.exec(select(Confirmation).where(
        Confirmation.task_id == task.id, Confirmation.status == Status.PENDING.value,
        Confirmation.origin == Origin.AGENT.value,
    ).order_by(col(Confirmation.created_at).desc(), col(Confirmation.id).desc()))).first()
    if asking is not None:
        task_state.wait_on_people(task, f"waiting for approval {asking.code}: {asking.summary}")
    elif task.state == task_state.State.IDLE:
        task_state.back_to_work(task, decided or "people decided; the agent goes on")
    else:
        return
    session.add(task)


class Questions:
    def __init__(self, db: Database, confirmations: Confirmations) -> None:
        self.db = db
        self.confirmations = confirmations

    async def task_by_token(self, session: AsyncSession, task_id: str, token: str, *, lock: bool = False) -> Task:
        """The task a callback token belongs to, while its turn runs. Any other token, or a finished turn,
        is refused with the same words: a token tells nothing about other tasks."""
        query = select(Task).where(Task.id == task_id)
        task = (await session.exec(query.with_for_update() if lock else query)).first()
        digest = hashlib.sha256(token.encode()).hexdigest()
        if (task is None or not task.callback_hash or not hmac.compare_digest(task.callback_hash, digest)
                or TaskStatus(task.status) not in ACTIVE):
            raise Unauthorized("this task token is not valid for that task (or its turn has ended)",
                               code="INVALID_TASK_TOKEN")
        return task

    async def check_task_token(self, task_id: str, token: str) -> None:
        """Refuse (401) a token that is not this task's for its running turn, before anything else is read."""
        async with self.db.read() as session:
            await self.task_by_token(session, task_id, token)

    async def ask(self, task_id: str, token: str, plan: Plan) -> Confirmation:
        async with self.db.write() as session:
            task = await self.task_by_token(session, task_id, token, lock=True)
            plan = checked_plan(plan)  # the token first: a stranger learns nothing, not even what is refused
            agent = await session.get(Agent, task.agent_id) if task.agent_id else None
            level = agent.autonomy_level if agent else task.autonomy_level
            gate = await self.confirmations.gate(
                session, org_id=task.org_id, plan=plan, origin=Origin.AGENT, level=level,
                requester_id=task.owner_id, requester_name=task.owner_name, task=task, agent_id=task.agent_id,
                project_id=task.project_id,
            )
            await note_waiting(session, task)
            return gate.confirmation

    async def asked(self, task_id: str, token: str, code: str) -> tuple[Confirmation, bool]:
        """A question of this task, and whether its answer is held back (its agent is suspended)."""
        async with self.db.read() as session:
            task = await self.task_by_token(session, task_id, token)
            conf = (await session.exec(select(Confirmation).where(
                Confirmation.org_id == task.org_id, Confirmation.task_id == task.id,
                Confirmation.code == code.strip().upper()))).first()
            if conf is None:
                raise NotFound(f"confirmation {code!r} not found for this task", code="CONFIRMATION_NOT_FOUND")
            held = conf.status == Status.APPROVED and await self.confirmations.suspended(
                session, task.agent_id, task.project_id)
            return conf, held

    async def void_questions(self, session: AsyncSession, task: Task, reason: str,
                             pending: list[Confirmation] | None = None) -> int:
        """Void what the task's agent asked (`shepherd ask`) and people have not decided yet: the turn that
        asked is over, so nobody waits for the answer, and a later decision would decide nothing. `pending`: the
        task's pending confirmations, when the caller has read them (locked) already."""
        if pending is None:
            pending = await pending_of(session, task)
        rows = [conf for conf in pending if conf.origin == Origin.AGENT.value]
        for conf in rows:
            await self.confirmations.void(session, conf, reason)
        return len(rows)


async def pending_of(session: AsyncSession, task: Task) -> list[Confirmation]:
    """The task's confirmations nobody has decided yet, locked: what its turn's end voids (its agent's questions, a
    budget extension the turn waited on), read once for them all."""
    return list(await session.exec(select(Confirmation).where(
        Confirmation.task_id == task.id, Confirmation.status == Status.PENDING.value).with_for_update()))
