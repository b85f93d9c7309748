"""The Eliza coding-agents API (shared/seeds/000): coordinator status, stopping a task, and the
coordinator's pending confirmations with their decision.

Eliza's orchestrator runs CLI agents as tasks, as Shepherd does: a session is a task, the coordinator's
supervision level is the autonomy level of the org's coordinator agent, and "the orchestrator service
is unavailable" means no runner is alive to run tasks. Eliza's coordinator escalates what it will not
decide to people (`pending`, then `confirm/{sessionId}`); here those are the task's confirmations.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Route
from core.agents import DEFAULT_LEVEL, LEVEL_NAMES, AgentFilter
from core.autonomy.confirmations import Confirmation
from core.clock import as_utc
from core.errors import Conflict, NotFound, ShepherdError, Unavailable
from core.tasks.service import MAX_PAGE, Task
from core.tasks.state import TaskStatus, is_finished, waiting_on_people

STOP_WAIT_S = 10.0  # how long a stop may take before it is reported as failed
STOP_POLL_S = 0.1


class ElizaStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ERROR = "error"
    STOPPED = "stopped"
    BLOCKED = "blocked"


STATUS: dict[TaskStatus, ElizaStatus] = {
    TaskStatus.PENDING: ElizaStatus.ACTIVE,
    TaskStatus.QUEUED: ElizaStatus.ACTIVE,
    TaskStatus.INITIALIZING: ElizaStatus.ACTIVE,
    TaskStatus.RUNNING: ElizaStatus.ACTIVE,
    TaskStatus.COMPLETED: ElizaStatus.COMPLETED,
    TaskStatus.FAILED: ElizaStatus.ERROR,
    TaskStatus.CANCELLED: ElizaStatus.STOPPED,
    TaskStatus.PAUSED: ElizaStatus.BLOCKED,
    TaskStatus.AWAITING: ElizaStatus.BLOCKED,  # waiting for people to decide a gated action
}


class CodingTask(ApiModel):
    session_id: str = Field(description="the task id")
    agent_type: str = Field(description="the agent CLI: claude, codex, …")
    label: str
    original_task: str = Field(description="the prompt")
    workdir: str = Field(description="the task's workspace; empty until it is prepared")
    status: ElizaStatus
    decision_count: int
    auto_resolved_count: int


class CoordinatorStatus(ApiModel):
    supervision_level: str = Field(description="the org coordinator agent's autonomy level, lower-case")
    task_count: int
    pending_confirmations: int
    tasks: list[CodingTask]


class StopDone(ApiModel):
    ok: bool


class Override(ApiModel):
    response: str | None = Field(None, max_length=1000, description="Eliza: the text to send instead; kept as "
                                                                      "the decision's comment")
    use_keys: bool | None = None
    keys: list[str] | None = Field(None, max_length=20)


class PendingConfirmation(ApiModel):
    """Eliza's pending decision, plus what Shepherd's confirmations add (code, action, risk, votes, expiry)."""

    session_id: str = Field(description="the task id")
    prompt_text: str = Field(description="what is asked")
    suggested_action: str = Field(description="always `escalate`: people decide what the policy would not")
    reasoning: str = Field(description="why people must decide (the policy's words)")
    agent_type: str
    label: str
    created_at: int = Field(description="epoch milliseconds")
    code: str = Field(description="what people type in chat: approve K7P2")
    confirmation_id: str
    action: str
    risk: str
    approvals: int
    quorum: int
    expires_at: int = Field(description="epoch milliseconds")


class ConfirmIn(ApiModel):
    approved: bool = Field(True, description="false rejects; absent approves, as in Eliza")
    override: Override | None = None
    code: str | None = Field(None, max_length=64, description="which confirmation (code or id); needed when the "
                                                              "task waits on more than one")


class ConfirmDone(ApiModel):
    success: bool
    session_id: str
    approved: bool
    code: str
    status: str = Field(description="the confirmation after this decision: pending (more approvals needed), "
                                    "approved or rejected")
    counted: bool


def eliza_status(task: Task) -> ElizaStatus:
    """The seed's mapping, and `blocked` whenever the task waits on people: a decision, a `shepherd ask`, a
    question its turn ended on (as Eliza's own orchestrator reports an agent blocked on a prompt)."""
    return ElizaStatus.BLOCKED if waiting_on_people(task) else STATUS[TaskStatus(task.status)]


def coding_task(task: Task) -> CodingTask:
    return CodingTask(
        session_id=task.id, agent_type=task.runtime, label=task.display_name, original_task=task.prompt,
        workdir=task.workspace or "", status=eliza_status(task), decision_count=task.decision_count,
        auto_resolved_count=task.auto_resolved_count,
    )


async def coordinator_status(req: ApiRequest) -> CoordinatorStatus:
    coordinators, _ = await req.shepherd.agents.list(req.principal, AgentFilter(type="coordinator"), limit=1)
    level = coordinators[0].agent.autonomy_level if coordinators else DEFAULT_LEVEL
    tasks: list[Task] = []
    if await req.shepherd.tasks.runner_available():  # else Eliza's answer: an empty list, not an error
        tasks, _ = await req.shepherd.tasks.list(req.principal, limit=MAX_PAGE)
    return CoordinatorStatus(
        supervision_level=LEVEL_NAMES[level].lower(), task_count=len(tasks),
        pending_confirmations=len(await req.shepherd.confirmations.pending(req.principal, limit=500)),
        tasks=[coding_task(t) for t in tasks],
    )


async def stop_task(req: ApiRequest) -> StopDone:
    """Cancel a task and wait until its runner has ended it, as Eliza's stop does."""
    if not await req.shepherd.tasks.runner_available():
        raise Unavailable("no runner is available to stop tasks", code="RUNNER_UNAVAILABLE")
    ref = req.path("sessionId")
    task = await req.shepherd.tasks.get(req.principal, ref)
    if is_finished(task):
        return StopDone(ok=True)
    await req.shepherd.tasks.stop(req.principal, task.id)
    deadline = asyncio.get_running_loop().time() + STOP_WAIT_S
    while not is_finished(task := await req.shepherd.tasks.get(req.principal, task.id)):
        if asyncio.get_running_loop().time() >= deadline:
            raise ShepherdError(
                f"task {task.name} did not stop within {STOP_WAIT_S:g} s (it is {task.status}); "
                "its runner may be stuck", code="CANCEL_FAILED", status=500,
            )
        await asyncio.sleep(STOP_POLL_S)
    return StopDone(ok=True)


def _ms(value: Any) -> int:
    return int(as_utc(value).timestamp() * 1000)


def _pending_out(conf: Confirmation, task: Task) -> PendingConfirmation:
    return PendingConfirmation(
        session_id=task.id, prompt_text=conf.summary, suggested_action="escalate",
        reasoning=conf.reason or f"{conf.action} is {conf.risk} risk at autonomy level {conf.level}",
        agent_type=task.runtime, label=task.display_name, created_at=_ms(conf.created_at), code=conf.code,
        confirmation_id=conf.id, action=conf.action, risk=conf.risk, approvals=conf.approvals, quorum=conf.quorum,
        expires_at=_ms(conf.expires_at),
    )


async def pending(req: ApiRequest) -> list[PendingConfirmation]:
    """What the org's tasks wait on people for, oldest first."""
    rows = await req.shepherd.confirmations.pending(req.principal, limit=500)
    out = []
    for conf in rows:
        if conf.task_id is None:
            continue
        try:
            task = await req.shepherd.tasks.get(req.principal, conf.task_id)
        except NotFound:
            continue
        out.append(_pending_out(conf, task))
    return out


async def confirm(req: ApiRequest) -> ConfirmDone:
    """Decide what a task waits on (its oldest pending confirmation)."""
    body: ConfirmIn = req.body
    task = await req.shepherd.tasks.get(req.principal, req.path("sessionId"))
    waiting = await req.shepherd.confirmations.pending(req.principal, task_id=task.id)
    if body.code:
        waiting = [c for c in waiting if body.code.strip().upper() in (c.code, c.id.upper())]
    if not waiting:
        raise NotFound(f"No pending decision for session {task.id}", code="NO_PENDING_CONFIRMATION")
    if len(waiting) > 1:  # never decide something the client did not show
        codes = ", ".join(c.code for c in waiting)
        raise Conflict(f"session {task.id} waits on {len(waiting)} decisions ({codes}): say which with `code`",
                       code="AMBIGUOUS_CONFIRMATION")
    note = body.override.response or "" if body.override else ""
    result = await req.shepherd.confirmations.vote(req.principal, waiting[0].id, approve=body.approved,
                                                   comment=note, via="api")
    conf = result.confirmation
    return ConfirmDone(success=True, session_id=task.id, approved=body.approved, code=conf.code, status=conf.status,
                       counted=result.counted)


_TAG = "coding agents (Eliza)"
ROUTES = [
    Route("GET", "/api/coding-agents/coordinator/status", coordinator_status,
          "Supervision level and the org's tasks, newest first (at most 500; none while no runner is alive)",
          response=CoordinatorStatus, errors=(401, 403), tag=_TAG, operation_id="elizaCoordinatorStatus"),
    Route("POST", "/api/coding-agents/{sessionId}/stop", stop_task,
          "Cancel a task and wait (up to 10 s) until it has stopped; 503 without a runner, 500 if it does not stop",
          response=StopDone, errors=(401, 403, 404, 500, 503), tag=_TAG, operation_id="elizaStopTask"),
    *[
        route
        for prefix, suffix in (("/api/coding-agents", ""), ("/api/coding-agents/coordinator", "Coordinator"))
        for route in (
            Route("GET", f"{prefix}/pending", pending,
                  "Confirmations the org's tasks wait on, oldest first (what the coordinator escalated to people)",
                  response=list[PendingConfirmation], errors=(401, 403), tag=_TAG,
                  operation_id=f"elizaPending{suffix}"),
            Route("POST", f"{prefix}/confirm/{{sessionId}}", confirm,
                  "Approve (default) or reject what a task waits on (approve scope); 404 when it waits on nothing",
                  response=ConfirmDone, body=ConfirmIn, errors=(400, 401, 403, 404, 409), tag=_TAG,
                  operation_id=f"elizaConfirm{suffix}",
                  field_errors={"approved": FieldError("INVALID_DECISION", "approved must be true or false")}),
        )
    ],
]
