"""A task's rows beyond its own: its log and its ephemeral agent, as a turn ends or the task goes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, bindparam, case, delete, inspect, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import AgentStatus
from core.clock import utcnow
from core.store.bulk import each
from core.store.models import Agent, Task, TaskLog, table_of
from core.tasks.state import Outcome


async def delete_rows(session: AsyncSession, task: Task) -> None:
    """A task, its log and its ephemeral agent, gone in the caller's transaction."""
    await session.exec(delete(TaskLog).where(col(TaskLog.task_id) == task.id))
    if task.agent_id:
        agent = await session.get(Agent, task.agent_id)
        if agent is not None:
            await session.delete(agent)
    await session.delete(task)


async def agent_after(session: AsyncSession, task: Task, outcome: Outcome) -> None:
    """The task's agent once a turn has ended: idle (a suspension stands), one more task done on success."""
    await _touch(session, [task.agent_id], AgentStatus.IDLE, _A.c.tasks_completed,
                 1 if outcome is Outcome.SUCCEEDED else 0)


async def agent_started(session: AsyncSession, task: Task) -> None:
    """The task's agent as a turn starts: active (a suspension stands), one more message processed."""
    await _touch(session, [task.agent_id], AgentStatus.ACTIVE, _A.c.messages_processed, 1)


async def agents_started(session: AsyncSession, agent_ids: Sequence[str | None]) -> None:
    """`agent_started` for the agents of many turns starting together, with one statement."""
    await _touch(session, agent_ids, AgentStatus.ACTIVE, _A.c.messages_processed, 1)


_A = table_of(Agent)


async def _touch(session: AsyncSession, agent_ids: Sequence[str | None], status: AgentStatus, counter: Column[int],
                 step: int) -> None:
    """One Core UPDATE of the agents' status, counter and last activity, executed once per agent (each turn's start
    and end wrote one: an ORM load and flush cost more than the statement). A copy of an agent this session holds is
    flushed first if changed, and expired after, so it is read again as written."""
    ids = sorted(agent_id for agent_id in agent_ids if agent_id)  # (rows locked in one order)
    if not ids:
        return
    identities = session.sync_session.identity_map
    held = [found for agent_id in ids
            if (found := identities.get(session.sync_session.identity_key(Agent, agent_id))) is not None]
    if any(inspect(agent).modified for agent in held):  # (not session.dirty: that walks every object it holds)
        await session.flush()  # their changes written first: the expiry below would drop them
    now = utcnow()
    await (await session.connection()).execute(
        update(_A).where(_A.c.id == bindparam("agent_id")).values({
            _A.c.status: case((_A.c.status == AgentStatus.SUSPENDED.value, _A.c.status), else_=status.value),
            counter: counter + step,
            _A.c.last_activity: now,
        }), each([{"agent_id": agent_id} for agent_id in ids]))
    for agent in held:
        session.expire(agent)
