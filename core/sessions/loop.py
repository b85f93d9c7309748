"""Loop mode (Agentuity's meaning, issue 17): a session works toward a goal in iterations, each one turn of the
session's loop task. `Loops` starts the loop, reads its state and takes the agent's own word that the goal is
reached or blocked (`shepherd loop done|blocked`); what happens between iterations is core.sessions.iterations'.

    idle -> starting -> running <-> paused
                        running -> awaiting_input (without autoContinue: `loop.continue` asks people) -> starting
                        running -> completed (done, or maxIterations run) | blocked | failed | cancelled
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.errors import Conflict, ValidationFailed
from core.people.access import Principal, Scope
from core.sessions.fields import LoopSettings, repo_ref
from core.sessions.rows import find_session, live_session, readable_session
from core.store.db import Database
from core.store.events import record
from core.store.models import Event, Session, Task
from core.textcheck import free_text

if TYPE_CHECKING:
    from core.autonomy.questions import Questions
    from core.tasks.service import Tasks

LOOP_MODE = "loop"
CONTINUE_ACTION = "loop.continue"  # the confirmation that asks people before the next iteration
MARKED = "loop.marked"  # the event of the agent's `shepherd loop done|blocked`
MAX_SUMMARY = 4000
MAX_NEXT = 1000


class LoopStatus(StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_INPUT = "awaiting_input"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


ENDED = frozenset({LoopStatus.BLOCKED, LoopStatus.COMPLETED, LoopStatus.CANCELLED, LoopStatus.FAILED})


def loop_key(session_id: str) -> str:
    """The loop task's request key: one loop task per session, and asking to start it again finds it."""
    return f"loop:{session_id}"


def is_loop_task(task: Task) -> bool:
    return task.session_id is not None and task.request_key == loop_key(task.session_id)


def iteration_prompt(settings: LoopSettings, n: int, summary: str | None) -> str:
    """What the agent reads at iteration `n`: the goal, where it is, how to say it is done or stuck."""
    lines = [f"Loop iteration {n} of {settings.max_iterations}.", f"Goal: {settings.goal}"]
    if summary:
        lines.append(f"Last iteration's summary: {summary}")
    lines.append("Work one step toward the goal. When the goal is reached run "
                 "`shepherd loop done --summary \"what was done\"`; when you cannot go on run "
                 "`shepherd loop blocked --summary \"why\" --next \"what a person must do\"`.")
    return "\n".join(lines)


@dataclass(frozen=True)
class Mark:
    """The agent's word on an iteration: the goal reached (`done`) or not reachable without people (`blocked`)."""

    iteration: int
    status: LoopStatus
    summary: str
    next_action: str | None


async def mark_of(session: AsyncSession, row: Session) -> Mark | None:
    """The agent's mark on the session's current iteration, if it made one."""
    event = (await session.exec(select(Event).where(Event.session_id == row.id, Event.name == MARKED)
                                .order_by(col(Event.id).desc()).limit(1))).first()
    data = event.payload if event is not None else None
    if not data or data.get("iteration") != row.loop_iteration:
        return None
    return Mark(int(data["iteration"]), LoopStatus(data["status"]), str(data.get("summary") or ""),
                data.get("next"))


class Loops:
    """Start a session's loop, read its state, take the agent's mark."""

    def __init__(self, db: Database, tasks: Tasks, questions: Questions) -> None:
        self.db = db
        self.tasks = tasks
        self.questions = questions  # whose task token is whose: one place checks it

    async def start(self, principal: Principal, session_id: str) -> Task:
        """Create the session's loop task, iteration 1 (loop `starting`; `running` once its turn runs). Starting a
        loop that has started returns its task."""
        principal.require(Scope.WRITE, "starting a loop")
        async with self.db.write() as session:
            row = await live_session(session, principal.org_id, session_id)
            if row.workflow_mode != LOOP_MODE:
                raise Conflict(f"session {session_id} is in {row.workflow_mode} mode, not loop mode",
                               code="NOT_A_LOOP")
            settings = LoopSettings.of(row)
            if not settings.goal:
                raise ValidationFailed("a loop needs a goal (loop.goal, or the session's task)", code="INVALID_LOOP")
            earlier = (await session.exec(select(Task).where(
                Task.org_id == principal.org_id, Task.request_key == loop_key(row.id)))).first()
            if earlier is not None:
                return earlier
            before = row.loop_status, row.loop_iteration
            row.loop_status, row.loop_iteration = LoopStatus.STARTING.value, 1
            row.updated_at = utcnow()
            session.add(row)
        try:
            view = await self.tasks.create(
                principal, prompt=iteration_prompt(settings, 1, None), runtime=row.default_agent,
                repo=repo_ref(row.repos[0]) if row.repos else None,
                branch=row.repos[0].get("branch") if row.repos else None, session_id=row.id,
                request_key=loop_key(row.id),
                display_name=f"loop: {row.label}"[:200],
            )
        except Exception:
            async with self.db.write() as session:  # nothing started: the loop is as it was
                again = await find_session(session, principal.org_id, session_id)
                again.loop_status, again.loop_iteration = before
                session.add(again)
            raise
        async with self.db.write() as session:
            await record(session, principal, "session", "loop.started", session_id=row.id,
                         payload={"taskId": view.task.id, "iteration": 1, "maxIterations": settings.max_iterations,
                                  "autoContinue": settings.auto_continue})
        return view.task

    async def get(self, principal: Principal, session_id: str) -> Session:
        """The session, for its loop state (404 for another org's, and for a private one hidden from the principal:
        its goal and the agent's summaries are the session's)."""
        principal.require(Scope.READ, "reading a loop")
        async with self.db.read() as session:
            return await readable_session(session, principal, session_id)

    async def mark(self, task_id: str, token: str, *, status: LoopStatus, summary: str,
                   next_action: str | None = None) -> Session:
        """The running loop task's agent says the goal is reached (`completed`) or blocked: kept for the end of
        its turn, which ends the loop so. Only its own task's session, with its task token."""
        if status not in (LoopStatus.COMPLETED, LoopStatus.BLOCKED):
            raise ValidationFailed("the agent marks a loop done or blocked", code="INVALID_LOOP_MARK")
        summary = free_text((summary or "").strip(), "the summary")
        if not summary or len(summary) > MAX_SUMMARY:
            raise ValidationFailed(f"a summary is 1-{MAX_SUMMARY} characters", code="INVALID_SUMMARY")
        next_action = free_text((next_action or "").strip(), "the next action") or None
        if next_action is not None and len(next_action) > MAX_NEXT:
            raise ValidationFailed(f"a next action is at most {MAX_NEXT} characters", code="INVALID_NEXT_ACTION")
        async with self.db.write() as session:
            task = await self.questions.task_by_token(session, task_id, token, lock=True)
            if not is_loop_task(task):
                raise Conflict("this task is not a session's loop task: `shepherd loop` has nothing to mark",
                               code="NOT_A_LOOP")
            row = await find_session(session, task.org_id, task.session_id or "")
            row.loop_summary, row.loop_next_action = summary, next_action
            row.updated_at = row.last_activity_at = utcnow()
            session.add(row)
            await record(session, Principal.system(task.org_id, "agent"), "session", MARKED, session_id=row.id,
                         payload={"iteration": row.loop_iteration, "status": status.value, "summary": summary,
                                  "next": next_action, "taskId": task.id})
            return row
