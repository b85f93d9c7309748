"""What a task's next turn waits on people for, besides a gated action of its own: its budget reached
(`budget.extend`, core.tasks.extensions) and a loop's next iteration (`loop.continue`, core.sessions.iterations).
Shepherd carries nothing out for these; their decision, in the transaction that records it, is what follows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.plans import Status
from core.sessions import iterations
from core.sessions.loop import CONTINUE_ACTION
from core.store.models import Confirmation, Task
from core.tasks import extensions
from core.tasks.budget import EXTEND_ACTION

if TYPE_CHECKING:
    from core.autonomy.confirmations import Confirmations

HELD_ACTIONS = frozenset({EXTEND_ACTION, CONTINUE_ACTION})


async def decided(session: AsyncSession, confirmations: Confirmations, conf: Confirmation, task: Task,
                  status: Status, by: str) -> None:
    """A held action decided (or void): the work goes on or ends; a loop task that ended takes its loop along."""
    if conf.action == EXTEND_ACTION:
        await extensions.decided(session, confirmations, conf, task, status, by)
    else:
        await iterations.continue_decided(session, confirmations, conf, task, status, by)
    await iterations.going_on(session, task)
    await iterations.task_ended(session, task)
