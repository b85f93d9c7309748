"""Between a loop's iterations (core.sessions.loop): the loop state follows its task's turns, in the transaction
that starts, pauses or ends them. A turn's end decides what comes next: the agent's mark (done, blocked), the
iteration limit, a failed turn, or the next iteration: queued at once with autoContinue, else asked of people
(`loop.continue`, in the task's threads). Each iteration is one turn of the loop task, so `iteration` is the
loop task's turn count, and every iteration's end is a session event."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.plans import Origin, Plan, Status
from core.clock import utcnow
from core.errors import Conflict
from core.people.access import Principal
from core.sessions.fields import LoopSettings
from core.sessions.loop import CONTINUE_ACTION, ENDED, LoopStatus, is_loop_task, iteration_prompt, mark_of
from core.sessions.rows import ARCHIVED, DELETED
from core.store.events import record
from core.store.models import Confirmation, Session, Task
from core.tasks import state as task_state
from core.tasks.evidence import Evidence
from core.tasks.extensions import next_turn
from core.tasks.state import GATED, Outcome, TaskStatus

if TYPE_CHECKING:
    from core.autonomy.confirmations import Confirmations

SUMMARY_CHARS = 1000


@dataclass(frozen=True)
class NextIteration:
    number: int
    text: str
    ask: bool  # without autoContinue people approve it first


async def _loop_of(session: AsyncSession, task: Task) -> Session | None:
    if not is_loop_task(task):
        return None
    return await session.get(Session, task.session_id, with_for_update=True)


def _touch(row: Session) -> None:
    row.updated_at = row.last_activity_at = utcnow()


async def _say(session: AsyncSession, row: Session, status: LoopStatus, **facts: object) -> None:
    """The loop's new status, written, and a session event that says so."""
    row.loop_status = status.value
    _touch(row)
    session.add(row)
    await record(session, Principal.system(row.org_id), "session", f"loop.{status.value}", session_id=row.id,
                 payload={"iteration": row.loop_iteration, "status": status.value, **facts})


async def turn_started(session: AsyncSession, task: Task) -> None:
    """The loop task's turn runs: iteration `task.turns` is running."""
    row = await _loop_of(session, task)
    if row is None:
        return
    row.loop_iteration = task.turns
    row.loop_status = LoopStatus.RUNNING.value
    _touch(row)
    session.add(row)


async def paused(session: AsyncSession, task: Task, frozen: bool) -> None:
    """The loop task's process was paused (by people, or by its budget's minutes) or resumed."""
    row = await _loop_of(session, task)
    if row is None or LoopStatus(row.loop_status or "idle") in ENDED:
        return
    row.loop_status = (LoopStatus.PAUSED if frozen else LoopStatus.RUNNING).value
    _touch(row)
    session.add(row)


def _summary(evidence: Evidence, outcome: Outcome) -> str:
    lines = [line for line in evidence.last_lines if line.strip()]
    text = lines[-1].strip() if lines else (evidence.reason or outcome.value)
    return text[:SUMMARY_CHARS]


async def turn_ended(session: AsyncSession, task: Task, outcome: Outcome, evidence: Evidence) -> NextIteration | None:
    """The loop task's turn (iteration `task.turns`) ended with `outcome`: the loop ends, or its next iteration
    follows (returned: the caller queues it once the turn's end is written)."""
    row = await _loop_of(session, task)
    if row is None:
        return None
    settings = LoopSettings.of(row)
    n = row.loop_iteration = task.turns
    mark = await mark_of(session, row) if outcome is Outcome.SUCCEEDED else None
    summary = mark.summary if mark is not None else _summary(evidence, outcome)
    row.loop_checkpoint_at = utcnow()
    nxt: NextIteration | None = None
    if mark is not None:
        status = mark.status
        row.loop_next_action = mark.next_action
    elif outcome in (Outcome.CANCELLED, Outcome.INTERRUPTED):
        status = LoopStatus.CANCELLED
    elif outcome is not Outcome.SUCCEEDED:
        status = LoopStatus.FAILED
    elif n >= settings.max_iterations:
        status = LoopStatus.COMPLETED
        summary = f"{summary} (ended at the limit: {settings.max_iterations} iterations)"
    elif row.status in (ARCHIVED, DELETED):
        status = LoopStatus.CANCELLED
        summary = f"{summary} (the session was {row.status}: no more iterations)"
    else:
        status = LoopStatus.STARTING if settings.auto_continue else LoopStatus.AWAITING_INPUT
        nxt = NextIteration(n + 1, iteration_prompt(settings, n + 1, summary), ask=not settings.auto_continue)
    row.loop_summary = summary[:4000]
    if mark is None and status is not LoopStatus.BLOCKED:
        row.loop_next_action = f"iteration {n + 1} of {settings.max_iterations}" if nxt is not None else None
    await _say(session, row, status, outcome=outcome.value, summary=row.loop_summary, taskId=task.id,
               ended=status in ENDED)
    return nxt


async def queue(session: AsyncSession, confirmations: Confirmations, task: Task, nxt: NextIteration) -> None:
    """After the turn's end is written: the next iteration waits for a runner (its budget permitting), or for
    people to approve it (`loop.continue`)."""
    task.pending_inputs = [*task.pending_inputs, nxt.text]
    if not nxt.ask:
        return  # the caller starts it like any follow-up (core.tasks.ending), its budget checked
    row = await _loop_of(session, task)
    assert row is not None
    settings = LoopSettings.of(row)
    plan = Plan(action=CONTINUE_ACTION,
                summary=f"loop {row.label}: iteration {nxt.number - 1} of {settings.max_iterations} done "
                        f"({(row.loop_summary or '')[:300]}); run iteration {nxt.number}?",
                params={"sessionId": row.id, "iteration": nxt.number})
    gate = await confirmations.gate(
        session, org_id=task.org_id, plan=plan, origin=Origin.POLICY, level=task.autonomy_level,
        requester_id=task.owner_id, requester_name=task.owner_name, task=task, agent_id=task.agent_id,
        project_id=task.project_id, asked=True,
    )
    task_state.hold(task, f"waiting for approval {gate.confirmation.code}: run loop iteration {nxt.number}?")
    session.add(task)


async def waiting_on_budget(session: AsyncSession, task: Task) -> None:
    """The next iteration waits for people to extend the task's budget."""
    row = await _loop_of(session, task)
    if row is not None and LoopStatus(row.loop_status or "idle") not in ENDED:
        row.loop_status = LoopStatus.AWAITING_INPUT.value
        row.loop_next_action = "extend the budget (budget.extend) or stop"
        _touch(row)
        session.add(row)


async def refuse_while_asked(session: AsyncSession, task: Task) -> None:
    """A follow-up to a loop task whose next iteration people are asked about (`loop.continue`) is refused (409):
    taken, it would void the question and its turn would run the queued iteration unapproved, the follow-up
    queued behind it and lost if people then stopped the loop."""
    if not is_loop_task(task) or TaskStatus(task.status) not in GATED:
        return
    asked = (await session.exec(select(Confirmation.code).where(
        Confirmation.task_id == task.id, Confirmation.action == CONTINUE_ACTION,
        Confirmation.status == Status.PENDING.value))).first()
    if asked is not None:
        raise Conflict(f"task {task.name} is a loop waiting for approval {asked} of its next iteration: approve it "
                       "(the iteration runs) or reject it (the loop stops) before sending input", code="LOOP_AWAITING")


async def continue_decided(session: AsyncSession, confirmations: Confirmations, conf: Confirmation, task: Task,
                           status: Status, by: str) -> None:
    """People decided `loop.continue`: the next iteration goes (its budget permitting), or the loop is
    cancelled and its task ends. A void one (the task was stopped, or sent a follow-up) changes nothing."""
    row = await _loop_of(session, task)
    gated = TaskStatus(task.status) in GATED
    if status is Status.APPROVED and row is not None and row.status not in (ARCHIVED, DELETED):
        if gated and await next_turn(session, confirmations, task,
                                     f"{conf.code} approved by {by}: loop iteration {conf.params.get('iteration')} "
                                     "waiting for a runner"):
            row.loop_status = LoopStatus.STARTING.value
            row.loop_next_action = None
            _touch(row)
            session.add(row)
        elif gated:
            await waiting_on_budget(session, task)
        return
    if status not in (Status.APPROVED, Status.REJECTED, Status.EXPIRED):
        return
    how = {Status.APPROVED: f"approved by {by}, but the session is {row.status if row is not None else 'gone'}",
           Status.REJECTED: f"rejected by {by}", Status.EXPIRED: "expired"}[status]
    reason = f"{CONTINUE_ACTION} {conf.code} {how}: the loop stops"
    if gated:
        task.pending_inputs = []
        task_state.settle(task, Outcome.CANCELLED, replace(Evidence.of(task), reason=reason, confirmation=conf.code))
        session.add(task)
    if row is not None:
        row.loop_next_action = None
        await _say(session, row, LoopStatus.CANCELLED, reason=reason, ended=True)


async def going_on(session: AsyncSession, task: Task) -> None:
    """The loop task waits for a runner again (people extended its budget): its next iteration is starting."""
    row = await _loop_of(session, task)
    if row is not None and TaskStatus(task.status) is TaskStatus.PENDING \
            and LoopStatus(row.loop_status or "idle") not in ENDED:
        row.loop_status = LoopStatus.STARTING.value
        row.loop_next_action = None
        _touch(row)
        session.add(row)


async def task_ended(session: AsyncSession, task: Task) -> None:
    """The loop task ended outside a turn's end (stopped while waiting, its budget not extended): the loop
    ends with it, unless it had ended already."""
    row = await _loop_of(session, task)
    if row is None or LoopStatus(row.loop_status or "idle") in ENDED or not task_state.is_finished(task):
        return
    failed = task.outcome not in (Outcome.CANCELLED.value, Outcome.BUDGET_EXCEEDED.value, Outcome.SUCCEEDED.value)
    row.loop_next_action = None
    await _say(session, row, LoopStatus.FAILED if failed else LoopStatus.CANCELLED, outcome=task.outcome,
               ended=True)
