"""Runner nodes: the processes that run tasks, each a RunnerNode row with a heartbeat. Several may share one
database. A node that stopped beating (or whose process is gone from this host) is dead: the tasks it held
end `interrupted`, what is left of their agents is killed, and actions it was carrying out are handed back
to be carried out again (every action is safe to repeat).

A turn on a remote engine (a Kubernetes Job, a Docker exec) is not interrupted by its node's end: it runs on in
the engine, so a node with a runner of that kind that can reconnect claims it and follows it again (`adopt`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select

from core.autonomy.plans import Execution
from core.clock import as_utc, utcnow
from core.people.access import Principal
from core.runners.local import group_members
from core.shepherd import Shepherd
from core.store.events import record
from core.store.models import Confirmation, RunnerNode, Task
from core.tasks import state as task_state
from core.tasks.rows import agent_after
from core.tasks.state import ACTIVE, WAITING, TaskStatus

log = logging.getLogger(__name__)

PROCESS_STARTED = utcnow()
MAX_NOT_READY = 500  # RunnerNode.not_ready


async def readiness(ready: Callable[[], Awaitable[str | None]], limit_s: float) -> str | None:
    """What a runner's `ready()` says, within `limit_s`: an engine that hangs or a check that fails is not ready."""
    try:
        why = await asyncio.wait_for(ready(), timeout=limit_s)
    except TimeoutError:
        why = f"the runner's readiness check did not answer within {limit_s:g} s"
    except Exception as exc:  # a client library's own error: not ready, and why
        why = f"the runner's readiness check failed: {type(exc).__name__}: {exc}"
    return None if why is None else why[:MAX_NOT_READY]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_nodes(
    nodes: Sequence[RunnerNode], *, me: str, host: str, pid: int, started: datetime, cutoff: datetime,
    alive: Callable[[int], bool] = pid_alive,
) -> set[str]:
    """Which other nodes are gone: silent since `cutoff`, or on this host with their process gone, or this
    very pid from before this process began (a container's pid 1 restarted)."""
    return {
        n.id for n in nodes
        if n.id != me and (
            as_utc(n.heartbeat_at) < cutoff
            or (n.host == host and ((n.pid == pid and as_utc(n.started_at) < started) or not alive(n.pid)))
        )
    }


def reap_orphans(pgid: int, workspace: str) -> int:
    """Kill what is left of a dead runner's agent: members of its process group working in its workspace.

    A runner killed outright (SIGKILL, OOM) cannot end its agents; they would go on editing the workspace.
    The working-directory check guards against a reused process-group id.
    """
    killed = 0
    root = os.path.realpath(workspace)
    for pid in group_members(pgid):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


class RunnerNodes:
    """This process's node (announced, beating, removed) and the recovery of other nodes' work."""

    def __init__(self, shepherd: Shepherd, node_id: str, *, heartbeat_s: float, stale_after_s: float,
                 adopt: tuple[str, Callable[[Task], None]] | None = None, runner_kind: str | None = None,
                 ready: Callable[[], Awaitable[str | None]] | None = None) -> None:
        """`adopt` is (runner kind, what follows a claimed task) when this node's runner reconnects to its units;
        `ready` is its runner's readiness (`Runner.ready`), recorded on the node at announce and every heartbeat."""
        self.shepherd = shepherd
        self.adopt = adopt
        self.runner_kind = runner_kind
        self.ready = ready
        self.db = shepherd.db
        self.node_id = node_id
        self.host = socket.gethostname()
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s

    async def _not_ready(self) -> str | None:
        return None if self.ready is None else await readiness(self.ready, max(1.0, self.heartbeat_s))

    async def announce(self) -> None:
        not_ready = await self._not_ready()
        async with self.db.write() as session:
            now = utcnow()
            session.add(RunnerNode(id=self.node_id, host=self.host, pid=os.getpid(), started_at=now, heartbeat_at=now,
                                   runner_kind=self.runner_kind, not_ready=not_ready))

    async def beat(self) -> None:
        """Heartbeat forever (a background job)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                not_ready = await self._not_ready()  # asked outside the transaction: an engine may be slow
                async with self.db.write() as session:
                    node = await session.get(RunnerNode, self.node_id)
                    if node is None:  # swept as stale after a long stall: announce ourselves again
                        node = RunnerNode(id=self.node_id, host=self.host, pid=os.getpid())
                    node.heartbeat_at = utcnow()
                    node.runner_kind, node.not_ready = self.runner_kind, not_ready
                    session.add(node)
            except Exception:
                log.exception("runner heartbeat failed")

    async def withdraw(self, local: Collection[str]) -> None:
        """This process stops: the tasks it still holds end `interrupted`, and its node is gone."""
        # a remote turn this process left running is not interrupted: the next node of its kind follows it
        await self.interrupt(lambda task: task.runner_id == self.node_id and not self._follows(task), local,
                             "Shepherd stopped while the agent was working")
        async with self.db.write() as session:
            node = await session.get(RunnerNode, self.node_id)
            if node is not None:
                await session.delete(node)
        await self.unpin()  # what waited for this process alone can no longer start

    async def reconcile(self, local: Collection[str]) -> None:
        """Tasks held by a runner that is gone (crashed, killed, restarted) end `interrupted`; `local` are the
        tasks this process drives right now."""
        cutoff = utcnow() - timedelta(seconds=self.stale_after_s)
        async with self.db.read() as session:
            nodes = list(await session.exec(select(RunnerNode)))
        dead = dead_nodes(nodes, me=self.node_id, host=self.host, pid=os.getpid(), started=PROCESS_STARTED,
                          cutoff=cutoff)
        live = {n.id for n in nodes} - dead
        async with self.db.write() as session:
            # an action a dead runner was carrying out runs again (every action is safe to repeat)
            await session.exec(
                update(Confirmation)
                .where(col(Confirmation.execution) == Execution.RUNNING.value,
                       col(Confirmation.executor).not_in([*live, self.node_id]))
                .values(execution=Execution.WAITING.value, executor=None)
            )
        await self.interrupt(
            lambda task: task.runner_id not in live, local,
            "the runner holding this task stopped (a crash or restart) while the agent was working",
            alive=lambda runner_id: runner_id not in dead,
        )
        if dead:
            async with self.db.write() as session:
                for node_id in dead:
                    node = await session.get(RunnerNode, node_id)
                    if node is not None:
                        await session.delete(node)
        await self.unpin()

    async def unpin(self) -> None:
        """Waiting tasks pinned to a runner that is gone (its node row removed: stopped, or swept as dead) end
        `interrupted`: only its process held their one-use credentials (core.runners.run_tokens), so no other
        runner can start them as they were asked. Decided in one transaction against the nodes there are now."""
        async with self.db.write() as session:
            lost = list(await session.exec(select(Task).where(
                col(Task.pinned_runner).is_not(None), col(Task.pinned_runner).not_in(select(RunnerNode.id)),
                col(Task.status).in_([s.value for s in WAITING])).with_for_update()))
            for task in lost:
                task_state.lose_pin(task, "the Shepherd process that held its GitHub token stopped before the task "
                                          "started; invoke it again with the token")
                session.add(task)
                await agent_after(session, task, task_state.Outcome.INTERRUPTED)
                await record(session, Principal.system(task.org_id), "task", "task.interrupted",
                             agent_id=task.agent_id, task_id=task.id,
                             payload={"reason": task.state_message, "runner": None})

    def _follows(self, task: Task) -> bool:
        """Whether this node can find the task's unit again (a remote one, on an engine of its runner's kind)."""
        return self.adopt is not None and bool(task.runner_unit) and task.runner_kind == self.adopt[0]

    async def _claim(self, stale: Task, alive: Callable[[str], bool] | None) -> bool:
        """Take over a remote turn of a node that is gone, decided again under the task's lock (as `interrupt`)."""
        async with self.db.write() as session:
            task = await session.get(Task, stale.id, with_for_update=True)
            if task is None or TaskStatus(task.status) not in ACTIVE or task.runner_id != stale.runner_id:
                return False
            if alive is not None and task.runner_id and alive(task.runner_id) \
                    and await session.get(RunnerNode, task.runner_id) is not None:
                return False
            task.runner_id = self.node_id
            session.add(task)
            await record(session, Principal.system(task.org_id), "task", "task.reattached", agent_id=task.agent_id,
                         task_id=task.id, payload={"runner": stale.runner_id, "unit": task.runner_unit})
        stale.runner_id = self.node_id
        log.warning("task %s: its runner is gone; following its %s unit %s from this process", stale.id,
                    stale.runner_kind, stale.runner_unit)
        return True

    async def interrupt(self, held: Callable[[Task], bool], local: Collection[str], reason: str, *,
                        alive: Callable[[str], bool] | None = None) -> None:
        """End the active tasks `held` picks (none of `local`) `interrupted`, killing their agents' leftovers.

        Each is decided again under its lock: a task claimed meanwhile by another runner is not this decision's,
        and with `alive` a runner that announced itself after the nodes were read (its node is there now, and not
        among the dead) keeps its task."""
        async with self.db.read() as session:
            rows = list(await session.exec(select(Task).where(col(Task.status).in_([s.value for s in ACTIVE]))))
        for stale in [t for t in rows if held(t) and t.id not in local]:
            if self._follows(stale):
                if await self._claim(stale, alive) and self.adopt is not None:
                    self.adopt[1](stale)
                continue
            async with self.db.write() as session:
                task = await session.get(Task, stale.id, with_for_update=True)
                if task is None or TaskStatus(task.status) not in ACTIVE or task.runner_id != stale.runner_id:
                    continue
                if alive is not None and task.runner_id and alive(task.runner_id) \
                        and await session.get(RunnerNode, task.runner_id) is not None:
                    continue
                await self.shepherd.questions.void_questions(session, task, f"the turn ended: {reason}")
                task_state.interrupt(task, reason)
                session.add(task)
                # its agent's leftovers killed only now, the task decided and still locked: killed first, a runner
                # thought dead but only stalled saw its agent die and could end the turn `failed` before this
                if stale.pid and stale.workspace:
                    leftovers = reap_orphans(stale.pid, stale.workspace)
                    if leftovers:
                        log.warning("task %s: ended %d agent processes left by a dead runner", stale.id, leftovers)
                await agent_after(session, task, task_state.Outcome.INTERRUPTED)
                await record(session, Principal.system(task.org_id), "task", "task.interrupted",
                             agent_id=task.agent_id, task_id=task.id,
                             payload={"reason": reason, "runner": stale.runner_id})
                log.warning("task %s interrupted: %s", task.id, reason)
