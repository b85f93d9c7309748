"""A task's budget reached: its work waits while people are asked (`budget.extend`) to extend the limit by a
stated amount or stop (issue 17). Turns and cost are checked before a turn starts (the task waits `awaiting`,
its input kept); minutes while a turn runs (its process is paused, the existing pause). Approved: the limit is
raised and the work goes on; rejected or expired: the task ends `budget_exceeded`.

Everything here runs inside the caller's transaction, with the task's row locked by it."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.plans import Origin, Plan, Status, Target
from core.people.access import Principal
from core.store.events import record
from core.store.models import Confirmation, Task
from core.tasks import state as task_state
from core.tasks.budget import EXTEND_ACTION, Limit, amount, burn_down, limit_value, raised, reached_before_turn
from core.tasks.evidence import Evidence
from core.tasks.state import ACTIVE, GATED, Control, Outcome, TaskStatus

if TYPE_CHECKING:
    from core.autonomy.confirmations import Confirmations


async def next_turn(session: AsyncSession, confirmations: Confirmations, task: Task, message: str) -> bool:
    """A finished (or awaiting) task whose next turn's input waits takes that turn: it waits for a runner, or,
    when a limit of its budget is reached, for people to extend it. True when it waits for a runner."""
    limit = reached_before_turn(task)
    if limit is None:
        task_state.follow_up(task, message)
        return True
    await ask(session, confirmations, task, limit)
    return False


async def _stated_amount(session: AsyncSession, task: Task, limit: Limit) -> float:
    """By how much people are asked to extend `limit`: the limit the task had first (what the first ask of
    that limit offered), so every extension is the same stated amount."""
    asked = await session.exec(select(Confirmation.params).where(
        Confirmation.task_id == task.id, Confirmation.action == EXTEND_ACTION,
    ).order_by(col(Confirmation.created_at), col(Confirmation.id)))
    for params in asked:
        if params and params.get("limit") == limit.value and params.get("by"):
            return float(params["by"])
    return limit_value(task, limit)


async def ask(session: AsyncSession, confirmations: Confirmations, task: Task, limit: Limit,
              *, running_s: float = 0.0) -> Confirmation:
    """Ask people to extend `limit` or stop. A task between turns waits `awaiting`; a running one (its minutes)
    was paused by the caller and stays paused."""
    by = await _stated_amount(session, task, limit)
    used = ", ".join(burn_down(task, running_s))
    summary = (f"{task.name} reached its budget of {amount(limit, limit_value(task, limit))} ({used}): "
               f"extend by {amount(limit, by)} or stop")
    plan = Plan(action=EXTEND_ACTION, summary=summary, target=Target(repo=task.repo, branch=task.work_branch),
                params={"limit": limit.value, "by": by, "from": limit_value(task, limit), "turn": task.turns})
    gate = await confirmations.gate(
        session, org_id=task.org_id, plan=plan, origin=Origin.POLICY, level=task.autonomy_level,
        requester_id=task.owner_id, requester_name=task.owner_name, task=task, agent_id=task.agent_id,
        project_id=task.project_id, asked=True,
    )
    conf = gate.confirmation
    waiting = f"waiting for approval {conf.code}: {summary}"
    if TaskStatus(task.status) in ACTIVE:
        task.state_message = waiting[:task_state.MAX_MESSAGE]
    else:
        task_state.hold(task, waiting)
    session.add(task)
    await record(session, Principal.system(task.org_id), "task", "task.budget_reached", agent_id=task.agent_id,
                 task_id=task.id, payload={"limit": limit.value, "code": conf.code, "by": by, "used": used})
    return conf


async def decided(session: AsyncSession, confirmations: Confirmations, conf: Confirmation, task: Task,
                  status: Status, by: str) -> None:
    """People decided a `budget.extend`: the limit raised and the work goes on, or the task ends
    `budget_exceeded` (a running turn is stopped for it). A void one (the task was stopped, a new follow-up
    asks anew) changes nothing."""
    limit, more = Limit(conf.params["limit"]), float(conf.params["by"])
    now = TaskStatus(task.status)
    if status is Status.APPROVED:
        raised(task, limit, more)
        said = f"{conf.code} approved by {by}: its budget is {amount(limit, limit_value(task, limit))} now"
        if now in GATED:
            await next_turn(session, confirmations, task, f"{said}; next turn waiting for a runner")
        elif now is TaskStatus.PAUSED and task.control is None:
            task.control = Control.RESUME.value  # its runner resumes the process
    elif status in (Status.REJECTED, Status.EXPIRED):
        how = f"{status.value} by {by}" if status is Status.REJECTED else status.value
        reason = f"{EXTEND_ACTION} {conf.code} {how}: its limit of {amount(limit, conf.params['from'])} stands"
        if now in GATED:
            task.pending_inputs = []
            task_state.settle(task, Outcome.BUDGET_EXCEEDED,
                              replace(Evidence.of(task), reason=reason, confirmation=conf.code))
        elif now in ACTIVE and task.control not in (Control.STOP, Control.DELETE):
            task.control = Control.EXCEEDED.value  # its runner ends the process: the turn ends budget_exceeded
    session.add(task)


async def void_pending(session: AsyncSession, confirmations: Confirmations, task: Task, reason: str,
                       pending: list[Confirmation]) -> None:
    """The turn that reached its minutes ended anyway (stopped, finished): nobody waits for that answer. `pending`:
    the task's pending confirmations, read locked (core.autonomy.questions.pending_of)."""
    for conf in [conf for conf in pending if conf.action == EXTEND_ACTION and conf.status == Status.PENDING.value]:
        await confirmations.void(session, conf, reason)
