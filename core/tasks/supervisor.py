"""The task supervisor: the loops of a runner process, and the wiring of the rooms they drive.

It runs in `serve`, `worker` and the console; several may share one database. Each pass of its loop applies
people's controls to the turns it drives, keeps agents that wait on people from idling out, claims waiting
tasks (core.tasks.claims), carries out approved actions (core.autonomy.executor) and, every few seconds,
recovers the work of runners that died (core.tasks.nodes). Beside it run the heartbeat and the output
flusher (core.tasks.output). Commands from other processes reach a running task through its `control`
column, polled every second; in the same process the core's `runs_due` wake-up makes that immediate.
"""

from __future__ import annotations

import asyncio
import logging

from sqlmodel import col, select

from core.autonomy.actions import Executor
from core.autonomy.executor import ApprovedActions
from core.autonomy.plans import Origin, Status
from core.ids import new_node_id
from core.runners import Runner
from core.runners.credentials import GitCredentials
from core.shepherd import Shepherd
from core.store.models import Confirmation, Task
from core.tasks.claims import Caps, Claims, plan_claims
from core.tasks.config import RunnerConfig as RunnerConfig  # re-exported: the shell builds it from Settings
from core.tasks.ending import TurnEnd
from core.tasks.minutes import MinuteBudgets
from core.tasks.nodes import RunnerNodes
from core.tasks.output import TaskOutput
from core.tasks.state import STOPS, Control
from core.tasks.turns import Turns

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 10.0
SHUTDOWN_WAIT_S = 10.0


class TaskSupervisor:
    name = "tasks"

    def __init__(self, shepherd: Shepherd, config: RunnerConfig, *, runner: Runner, executor: Executor,
                 credentials: GitCredentials | None = None) -> None:
        """`runner` runs the agents' turns and `executor` carries out approved actions; `credentials` are what
        clones from the code host carry (a private repository's): the application shell builds them all (core
        builds no implementation of a port)."""
        self.shepherd = shepherd
        self.db = shepherd.db
        self.config = config
        self.node_id = new_node_id()
        self.output = TaskOutput(self.db, flush_s=config.flush_s, written=shepherd.output_written)
        self.claims = Claims(self.db, self.node_id)
        ending = TurnEnd(shepherd, self.output, self.node_id, self.wake)
        self.turns = Turns(shepherd, shepherd.catalog, config, runner, self.output, ending, self.wake,
                           credentials=credentials)
        adopt = (runner.kind, self.turns.adopt) if runner.capabilities.reconnect else None
        self.nodes = RunnerNodes(shepherd, self.node_id, heartbeat_s=config.heartbeat_s,
                                 stale_after_s=config.stale_after_s, adopt=adopt, runner_kind=runner.kind,
                                 ready=runner.ready)
        self.actions = ApprovedActions(shepherd, executor, config, ending, self.node_id)
        self.minutes = MinuteBudgets(shepherd, self.output)
        self._closing = False
        self._jobs: list[asyncio.Task[None]] = []
        self._last_sweep = 0.0

    def wake(self) -> None:
        self.shepherd.runs_due()

    async def start(self) -> None:
        self.config.workspace_root.mkdir(parents=True, exist_ok=True)
        await self.nodes.announce()
        self.shepherd.run_tokens.runner_id = self.node_id  # this process runs tasks: it may hold one-use tokens
        await self.nodes.reconcile(self.turns.running)
        loop = asyncio.get_running_loop()
        self._jobs = [loop.create_task(self._loop()), loop.create_task(self.nodes.beat()),
                      loop.create_task(self.output.run())]
        self.wake()

    async def stop(self) -> None:
        """Stop every turn this process drives; they end `interrupted`, and say so."""
        self._closing = True
        if self.shepherd.run_tokens.runner_id == self.node_id:
            self.shepherd.run_tokens.runner_id = None
        for job in [*self._jobs, *self.actions.jobs]:
            job.cancel()
        await self.turns.stop_all("shutdown", wait_s=SHUTDOWN_WAIT_S)
        await self.output.flush()
        await self.nodes.withdraw(self.turns.running)

    async def _loop(self) -> None:
        while not self._closing:
            await self.shepherd.runs_due.wait(self.config.poll_s)
            try:
                await self._apply_controls()
                await self.minutes.check(self.turns.running)
                await self._keep_askers_alive()
                if not self._closing:
                    await self._claim()
                if not self._closing:
                    await self.actions.run_due()
                now = asyncio.get_running_loop().time()
                if now - self._last_sweep > SWEEP_EVERY_S:
                    self._last_sweep = now
                    await self.nodes.reconcile(self.turns.running)
            except Exception:
                log.exception("task supervisor pass failed; retrying")
                await asyncio.sleep(1)

    async def _claim(self) -> None:
        caps = Caps(self.config.max_tasks, self.config.max_tasks_per_project)
        plan = plan_claims(await self.claims.waiting(), running=len(self.turns.running), caps=caps)
        got = await self.claims.take([task.id for task in plan.take])
        for task in plan.take:
            if task.id in got:
                self.turns.begin(got[task.id].task, got[task.id].token)
        lost = len(got) < len(plan.take)
        if not lost:  # after a lost race the notes may be wrong: the next pass plans again
            await self.claims.tell(plan.notes)

    async def _apply_controls(self) -> None:
        """Stop, pause or resume what people asked for, in whichever process they asked."""
        running = self.turns.running
        if not running:
            return
        async with self.db.read() as session:
            rows = list(await session.exec(
                select(Task.id, Task.control).where(col(Task.id).in_(list(running)), col(Task.control).is_not(None))
            ))
        for task_id, control in rows:
            turn = running.get(task_id)
            if turn is None:
                continue
            if control in STOPS:
                if turn.stop_reason is None:
                    turn.stop_reason = control
                    if turn.handle is not None:
                        asyncio.get_running_loop().create_task(turn.handle.stop())
            elif control in (Control.PAUSE, Control.RESUME) and turn.handle is not None:
                await self.turns.pause_or_resume(turn, Control(control))

    async def _keep_askers_alive(self) -> None:
        """An agent waiting on `shepherd ask` is silent because people have not decided: not idle."""
        running = self.turns.running
        if not running:
            return
        async with self.db.read() as session:
            asking = set(await session.exec(select(Confirmation.task_id).where(
                col(Confirmation.task_id).in_(list(running)), Confirmation.status == Status.PENDING.value,
                Confirmation.origin == Origin.AGENT.value,
            )))
            # an approved answer held back while the agent is suspended: `shepherd ask` still waits
            for conf in await session.exec(select(Confirmation).where(
                col(Confirmation.task_id).in_(list(running)), Confirmation.status == Status.APPROVED.value,
                Confirmation.origin == Origin.AGENT.value,
            )):
                if conf.task_id not in asking and await self.shepherd.confirmations.suspended(
                        session, conf.agent_id, conf.project_id):
                    asking.add(conf.task_id)
        for task_id in asking:
            turn = running.get(task_id or "")
            if turn is not None and turn.handle is not None:
                turn.handle.keep_alive()
