"""A task's rows beyond its own: its log and its ephemeral agent, as a turn ends or the task goes."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import AgentStatus
from core.clock import utcnow
from core.store.models import Agent, Task, TaskLog
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
    agent = await session.get(Agent, task.agent_id) if task.agent_id else None
    if agent is None:
        return
    if agent.status != AgentStatus.SUSPENDED:
        agent.status = AgentStatus.IDLE
    if outcome is Outcome.SUCCEEDED:
        agent.tasks_completed += 1
    agent.last_activity = utcnow()
    session.add(agent)
