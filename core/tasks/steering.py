"""Steering tasks once they exist: pause, resume, stop, delete, a follow-up, a new prompt, a log snapshot.

`TaskSteering` is the half of the Tasks service (core.tasks.service) that acts on a task people name: it finds the
task (of the principal's org, and theirs when asked), checks the move against the task's state, and leaves
a request for the runner that holds it (`control`) or changes it at once when no runner does. Every status
change goes through core.tasks.state.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import as_utc, utcnow
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.people.access import Principal, Scope
from core.runners import Capabilities
from core.runners.sandbox import home_for
from core.sessions import iterations
from core.sessions.rows import refuse_archived, shown_tasks
from core.store.db import Database
from core.store.events import record
from core.store.models import Task
from core.tasks import extensions
from core.tasks import state as task_state
from core.tasks.rows import agent_after, delete_rows
from core.tasks.snapshots import MAX_SNAPSHOT_BYTES
from core.tasks.state import ACTIVE, FINISHED, GATED, STOPS, WAITING, Control, Outcome, TaskStatus
from core.textcheck import free_text
from core.wakeup import Wakeup

if TYPE_CHECKING:
    from core.autonomy.confirmations import Confirmations

MAX_PROMPT = 20_000
MAX_INPUT = 20_000
MAX_PENDING_INPUTS = 20


def owner_of(principal: Principal) -> tuple[str, str]:
    """(owner id, owner name) of whoever is acting: their user, or the token itself (core.people.access)."""
    return principal.identity, principal.name


def checked_input(text: str, limit: int) -> str:
    text = free_text((text or "").strip(), "the input")
    if not text or len(text) > limit:
        raise ValidationFailed(f"input is 1-{limit} characters", code="INVALID_INPUT")
    return text

log = logging.getLogger(__name__)


class TaskSteering:
    db: Database
    confirmations: Confirmations
    runs_due: Wakeup
    workspace_root: Path | None
    runner_capabilities: Capabilities
    # what removes the engine's side of a workspace (a volume, a container) in a process with a remote runner
    workspace_discard: Callable[[str], Awaitable[None]] | None

    async def _void_gate(self, session: AsyncSession, task: Task, why: str) -> None:
        """A task leaving `awaiting` by people's hand: what it waited on can no longer run."""
        if TaskStatus(task.status) in GATED:
            await self.confirmations.void_open(session, task, why)

    @staticmethod
    def _owned_by(task: Task, principal: Principal, owner: str) -> bool:
        if owner == "me":
            return task.owner_id == owner_of(principal)[0]
        return owner in (task.owner_id, task.owner_name)

    @classmethod
    async def _find(
        cls, session: AsyncSession, principal: Principal, ref: str, owner: str | None = None, *, lock: bool = False
    ) -> Task:
        """A task of the principal's org by id or name; with `owner`, only if it is theirs. A task of someone else's
        private session is not found (core.sessions.rows.shown_tasks). With `lock`, the row is held until the
        transaction ends (PostgreSQL), so that concurrent changes cannot undo each other."""
        query = select(Task).where(Task.org_id == principal.org_id, or_(col(Task.id) == ref, col(Task.name) == ref),
                                   *shown_tasks(principal))
        task = (await session.exec(query.with_for_update() if lock else query)).first()
        if task is None or (owner is not None and not cls._owned_by(task, principal, owner)):
            raise NotFound(f"task {ref!r} not found", code="TASK_NOT_FOUND")
        return task

    async def pause(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        return await self._control(principal, ref, Control.PAUSE, owner=owner)

    async def resume(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        return await self._control(principal, ref, Control.RESUME, owner=owner)

    async def stop(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        """Cancel: a waiting task ends at once; a running one is stopped by its runner (whole group)."""
        return await self._control(principal, ref, Control.STOP, owner=owner)

    async def delete(self, principal: Principal, ref: str, *, owner: str | None = None) -> Task:
        """Remove the task, its logs, its agent and its workspace (a running task is stopped first)."""
        return await self._control(principal, ref, Control.DELETE, owner=owner)

    async def _control(self, principal: Principal, ref: str, control: Control, *, owner: str | None) -> Task:
        principal.require(Scope.WRITE, f"{control.value} of a task")
        workspace: str | None = None
        deleted = False
        async with self.db.write() as session:
            task = await self._find(session, principal, ref, owner, lock=True)
            status = TaskStatus(task.status)
            # Coder answers 409 for the wrong state, a repeat included: pausing a paused task is a mistake the
            # client should hear about. Until the runner has applied one, the other takes it back; neither
            # takes back a stop.
            if control in (Control.PAUSE, Control.RESUME) and task.control in STOPS:
                raise Conflict(f"task {task.name} is being stopped", code="TASK_STOPPING")
            if control is Control.PAUSE and not self.runner_capabilities.pause:
                raise Conflict(f"task {task.name} cannot be paused: {self.runner_capabilities.why_no_pause} "
                               "(stop it, or let it finish)", code="PAUSE_UNSUPPORTED")
            if control is Control.PAUSE:
                if not ((status is TaskStatus.RUNNING and task.control != Control.PAUSE)
                        or (status is TaskStatus.PAUSED and task.control == Control.RESUME)):
                    now = "being paused" if task.control == Control.PAUSE else status.value
                    raise Conflict(f"task {task.name} is {now}: only a running task can be paused",
                                   code="TASK_NOT_RUNNING")
                task.control = control.value
            elif control is Control.RESUME:
                if not ((status is TaskStatus.PAUSED and task.control != Control.RESUME)
                        or (status is TaskStatus.RUNNING and task.control == Control.PAUSE)):
                    now = "being resumed" if task.control == Control.RESUME else status.value
                    raise Conflict(f"task {task.name} is {now}: only a paused task can be resumed",
                                   code="TASK_NOT_PAUSED")
                task.control = control.value
            elif status in ACTIVE:
                task.control = control.value  # the runner stops the process group, then finishes the task
            elif control is Control.STOP:
                if status in FINISHED:
                    return task
                await self._void_gate(session, task, f"the task was cancelled by {principal.actor}")
                task_state.cancel(task, principal.actor)
                await agent_after(session, task, Outcome.CANCELLED)
                await iterations.task_ended(session, task)  # a loop task's loop ends with it
            else:  # delete a task no runner holds
                await self._void_gate(session, task, f"the task was deleted by {principal.actor}")
                workspace, deleted = task.workspace, True
                await delete_rows(session, task)
            if not deleted:
                task.updated_at = utcnow()
                session.add(task)
            await record(session, principal, "task", f"task.{control.value}_requested",
                         agent_id=task.agent_id, task_id=task.id, payload={"status": task.status})
        if workspace:
            self.remove_workspace(workspace)
            await self.discard_remote(task.id)
        self.runs_due()
        return task

    async def discard_remote(self, task_id: str) -> None:
        """The engine's side of a removed workspace goes too (a remote runner's volume); a failure is logged, the
        next removal of the task's leftovers (the cleanup job) tries again."""
        if self.workspace_discard is None:
            return
        try:
            await self.workspace_discard(task_id)
        except Exception:
            log.exception("task %s: removing its workspace from the engine failed", task_id)

    def remove_workspace(self, path: str) -> None:
        """Delete a workspace, but only inside the workspace root: a stored path is never trusted blindly."""
        root = self.workspace_root
        target = Path(path)
        if root is None or not target.is_dir():
            return
        if target.resolve().parent != root.resolve():
            raise Forbidden(f"refusing to delete {path}: not a workspace", code="NOT_A_WORKSPACE")
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(home_for(target.resolve()), ignore_errors=True)  # a sandboxed agent's home, if it had one

    async def send(self, principal: Principal, ref: str, text: str, *, owner: str | None = None) -> Task:
        """A follow-up turn: queued while the agent works, started when it is idle (finished).

        Refused while paused, or before the first turn has begun (Coder: 409).
        """
        principal.require(Scope.WRITE, "sending input to a task")
        text = checked_input(text, MAX_INPUT)
        async with self.db.write() as session:
            task = await self._find(session, principal, ref, owner, lock=True)
            await refuse_archived(session, principal.org_id, task.session_id)
            status = TaskStatus(task.status)
            if status is TaskStatus.PAUSED or task.control == Control.PAUSE:
                raise Conflict(f"task {task.name} is paused: resume it before sending input", code="TASK_PAUSED")
            if task.turns == 0 and status not in FINISHED:
                raise Conflict(
                    f"task {task.name} is {status.value} and has not started its first turn; "
                    "change its prompt instead (PATCH …/input)", code="TASK_NOT_STARTED",
                )
            if task.control in STOPS:
                raise Conflict(f"task {task.name} is being stopped", code="TASK_STOPPING")
            if task.workspace_pruned_at is not None:  # core.housekeeping: nothing left for a turn to work in
                raise Conflict(
                    f"task {task.name} finished long ago and its workspace was removed on "
                    f"{as_utc(task.workspace_pruned_at):%Y-%m-%d} (SHEPHERD_WORKSPACE_RETENTION): a follow-up has "
                    "nothing to work on; start a new task instead", code="WORKSPACE_PRUNED")
            if len(task.pending_inputs) >= MAX_PENDING_INPUTS:
                raise Conflict(f"task {task.name} already has {MAX_PENDING_INPUTS} follow-ups waiting",
                               code="TOO_MANY_INPUTS")
            await iterations.refuse_while_asked(session, task)  # a loop's next iteration asked: people answer first
            task.pending_inputs = [*task.pending_inputs, text]
            queued = status not in FINISHED and status not in GATED
            if not queued:
                await self._void_gate(session, task, "a follow-up was sent: the next turn's result is asked anew")
                # its turn waits for a runner, or for people to extend its budget when a limit is reached
                await extensions.next_turn(session, self.confirmations, task, "follow-up waiting for a runner")
            session.add(task)
            await record(session, principal, "task", "task.input_sent", agent_id=task.agent_id, task_id=task.id,
                         payload={"queued": queued, "length": len(text)})
        self.runs_due()
        return task

    async def update_input(self, principal: Principal, ref: str, text: str, *, owner: str | None = None) -> Task:
        """Change the prompt of a task that has not started yet."""
        principal.require(Scope.WRITE, "changing a task's input")
        text = checked_input(text, MAX_PROMPT)
        async with self.db.write() as session:
            task = await self._find(session, principal, ref, owner, lock=True)
            if task.turns > 0 or TaskStatus(task.status) not in WAITING:
                raise Conflict(f"task {task.name} has started: send a follow-up instead", code="TASK_STARTED")
            task.prompt = text
            task.updated_at = utcnow()
            session.add(task)
            await record(session, principal, "task", "task.input_updated", agent_id=task.agent_id, task_id=task.id)
        return task

    async def store_snapshot(self, principal: Principal, ref: str, payload: dict[str, Any], size: int) -> None:
        """Keep a log snapshot a workspace agent uploaded (Coder's agentapi format), at most 64 KB: for a task of
        one's own (an admin: any), its messages' text checked like any other text given to Shepherd."""
        principal.require(Scope.WRITE, "uploading a log snapshot")
        if size > MAX_SNAPSHOT_BYTES:
            raise ValidationFailed(f"a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes", code="SNAPSHOT_TOO_LARGE",
                                   status=413)
        for i, message in enumerate(payload.get("messages") or []):
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = free_text(message["content"], f"messages[{i}].content")
        async with self.db.write() as session:
            owner = None if principal.can(Scope.ADMIN) else "me"
            task = await self._find(session, principal, ref, owner, lock=True)
            task.log_snapshot = payload
            task.snapshot_at = utcnow()
            session.add(task)
