"""A budget's minutes, watched while turns run: a turn whose wall time (pauses left out) with the turns before
reaches the task's `max_minutes` is paused (the existing pause: its process group frozen) and people are asked
to extend it or stop (core.tasks.extensions). Checked by the supervisor at each pass, for the turns it drives."""

from __future__ import annotations

from sqlmodel import col, select

from core.autonomy.plans import Status
from core.people.access import Principal
from core.sessions import iterations
from core.shepherd import Shepherd
from core.store.events import record
from core.store.models import Confirmation, Task
from core.tasks import extensions
from core.tasks import state as task_state
from core.tasks.budget import EXTEND_ACTION, Limit, minutes_reached
from core.tasks.output import TaskOutput
from core.tasks.snapshots import take_snapshot
from core.tasks.state import TaskStatus
from core.tasks.turns import Turn


class MinuteBudgets:
    def __init__(self, shepherd: Shepherd, output: TaskOutput) -> None:
        self.shepherd = shepherd
        self.db = shepherd.db
        self.output = output

    async def check(self, running: dict[str, Turn]) -> None:
        """Pause and ask for each running turn that has used its task's minutes."""
        live = [task_id for task_id, turn in running.items()
                if turn.handle is not None and turn.began is not None and turn.paused_at is None]
        if not live:
            return
        async with self.db.read() as session:
            limited = list(await session.exec(select(Task).where(
                col(Task.id).in_(live), col(Task.max_minutes).is_not(None),
                Task.status == TaskStatus.RUNNING.value)))
        for task in limited:
            turn = running.get(task.id)
            if turn is not None and minutes_reached(task, turn.running_s()):
                await self._pause_and_ask(turn)

    async def _pause_and_ask(self, turn: Turn) -> None:
        assert turn.handle is not None
        await self.output.flush()  # the snapshot is taken from the stored log: store what was read first
        async with self.db.write() as session:
            task = await session.get(Task, turn.task_id, with_for_update=True)
            if task is None or task.status != TaskStatus.RUNNING or task.control is not None:
                return  # people are pausing or stopping it: their word first
            asked = (await session.exec(select(Confirmation.id).where(
                Confirmation.task_id == task.id, Confirmation.action == EXTEND_ACTION,
                Confirmation.status == Status.PENDING.value))).first()
            if not self.shepherd.tasks.runner_capabilities.pause:
                # an engine that cannot freeze (Kubernetes): the turn runs on while people decide; rejected or
                # expired, it is stopped (core.tasks.extensions)
                if asked is None:
                    await extensions.ask(session, self.shepherd.confirmations, task, Limit.MINUTES,
                                         running_s=turn.running_s())
                    await record(session, Principal.system(task.org_id), "task", "task.budget_reached",
                                 agent_id=task.agent_id, task_id=task.id, payload={"limit": Limit.MINUTES.value})
                return
            await turn.handle.pause()
            turn.note_pause(True)
            task_state.pause(task)
            await take_snapshot(session, task)
            await iterations.paused(session, task, True)
            if asked is None:  # resumed by hand while its ask waits: paused again, not asked twice
                await extensions.ask(session, self.shepherd.confirmations, task, Limit.MINUTES,
                                     running_s=turn.running_s())
            session.add(task)
            await record(session, Principal.system(task.org_id), "task", "task.paused", agent_id=task.agent_id,
                         task_id=task.id, payload={"by": "budget", "limit": Limit.MINUTES.value})
