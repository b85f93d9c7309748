"""A task's rows beyond its own: its log and its ephemeral agent, as a turn ends or the task goes."""

from __future__ import annotations

from sqlalchemy import Column, case, delete, inspect, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import AgentStatus
from core.clock import utcnow
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
    await _touch(session, task.agent_id, AgentStatus.IDLE, _A.c.tasks_completed,
                 1 if outcome is Outcome.SUCCEEDED else 0)


async def agent_started(session: AsyncSession, task: Task) -> None:
    """The task's agent as a turn starts: active (a suspension stands), one more message processed."""
    await _touch(session, task.agent_id, AgentStatus.ACTIVE, _A.c.messages_processed, 1)


_A = table_of(Agent)


async def _touch(session: AsyncSession, agent_id: str | None, status: AgentStatus, counter: Column[int],
                 step: int) -> None:
    """One Core UPDATE of the agent's status, counter and last activity (its start and end each wrote one for every
    turn: an ORM load and flush cost more than the statement). A copy of the agent this session holds is flushed first
    if changed, and expired after, so it is read again as written."""
    if not agent_id:
        return
    held = session.sync_session.identity_map.get(session.sync_session.identity_key(Agent, agent_id))
    if held is not None and inspect(held).modified:  # (not session.dirty: that walks every object the session holds)
        await session.flush()  # its changes written first: the expiry below would drop them
    await (await session.connection()).execute(
        update(_A).where(_A.c.id == agent_id).values({
            _A.c.status: case((_A.c.status == AgentStatus.SUSPENDED.value, _A.c.status), else_=status.value),
            counter: counter + step,
            _A.c.last_activity: utcnow(),
        }))
    if held is not None:
        session.expire(held)
