"""Confirmations over REST: Shepherd's own (codespar-style) list and decision, `explain`, and the task
callback behind `shepherd ask` (authenticated by the task's own token, nothing else).

    GET  /api/confirmations                      pending ones (or ?status=…), oldest first
    GET  /api/confirmations/{code}               one, by code or id
    POST /api/confirmations/{code}/decision      {"decision": "approve"|"reject", "comment": "…"}
    GET  /api/policy/explain?action=…&agentId=…  would it run, ask, or be refused, and why
    POST /api/tasks/{taskId}/confirmations       (task token) the agent asks
    GET  /api/tasks/{taskId}/confirmations/{code}?wait=25   (task token) its answer, long-polled
    POST /api/tasks/{taskId}/loop                (task token) `shepherd loop done|blocked`: the loop's goal
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Result, Route, token_from
from core.autonomy.confirmations import Confirmation
from core.autonomy.plans import Plan, Status, check_summary
from core.autonomy.policy import Risk, check_action
from core.clock import iso
from core.sessions.loop import LoopStatus

MAX_WAIT_S = 60
POLL_S = 0.5
VIA = "api"


class ConfirmationOut(ApiModel):
    id: str
    code: str
    task_id: str | None = None
    agent_id: str | None = None
    project_id: str | None = None
    action: str
    risk: str
    level: int
    origin: str = Field(description="policy (Shepherd's own gate), person (a command) or agent (`shepherd ask`)")
    summary: str
    target: dict[str, Any]
    params: dict[str, Any]
    plan_hash: str
    requested_by: str
    quorum: int
    approvals: int
    status: str = Field(description="pending, approved, rejected, expired or void")
    decided_by: str | None = None
    decided_via: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    execution: str | None = Field(None, description="Shepherd carrying out an approved action: waiting, running, "
                                                    "done, failed")
    result: dict[str, Any] | None = None
    created_at: str
    expires_at: str


def confirmation_out(c: Confirmation) -> ConfirmationOut:
    return ConfirmationOut(
        id=c.id, code=c.code, task_id=c.task_id, agent_id=c.agent_id, project_id=c.project_id, action=c.action,
        risk=c.risk, level=c.level, origin=c.origin, summary=c.summary, target=c.target, params=c.params,
        plan_hash=c.plan_hash, requested_by=c.requester_name, quorum=c.quorum, approvals=c.approvals,
        status=c.status, decided_by=c.decided_by, decided_via=c.decided_via,
        decided_at=iso(c.decided_at) if c.decided_at else None, reason=c.reason, execution=c.execution,
        result=c.result or None, created_at=iso(c.created_at), expires_at=iso(c.expires_at),
    )


class StatusFilter(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    VOID = "void"


class ListQuery(ApiModel):
    status: StatusFilter = StatusFilter.PENDING
    task_id: str | None = Field(None, max_length=64)
    limit: int = Field(100, ge=1, le=500)


class DecisionWord(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class DecisionIn(ApiModel):
    decision: DecisionWord
    comment: str = Field("", max_length=1000)


class DecisionOut(ApiModel):
    confirmation: ConfirmationOut
    counted: bool = Field(description="false when this vote changed nothing (a repeat, or already decided alike)")
    message: str


class ExplainQuery(ApiModel):
    action: str = Field(min_length=1, max_length=64)
    agent_id: str | None = Field(None, max_length=64)
    level: int | None = Field(None, ge=0, le=5)
    project: str | None = Field(None, max_length=100)


class ExplainOut(ApiModel):
    action: str
    risk: str
    level: int
    verdict: str = Field(description="run, ask or refuse")
    quorum: int
    always_ask: bool
    reason: str
    policy: str = Field(description="which policy decided: built-in, or the project's file")


class AskIn(ApiModel):
    action: str = Field(min_length=1, max_length=64)
    summary: str = Field(min_length=1, max_length=1000)
    risk: str | None = Field(None, description="low, medium, high or critical: only raises the policy's risk")
    params: dict[str, str] = Field(default_factory=dict, max_length=20)


class AskOut(ApiModel):
    id: str
    code: str
    action: str
    risk: str
    status: str
    quorum: int
    approvals: int
    held: bool = Field(description="approved, but its agent is suspended: wait for `agent resume`")
    decided_by: str | None = None
    decided_via: str | None = None
    reason: str | None = None
    expires_at: str


class WaitQuery(ApiModel):
    wait: int = Field(0, ge=0, le=MAX_WAIT_S, description="seconds to wait for a decision (long poll)")


# --- people ------------------------------------------------------------------------------------------


async def list_confirmations(req: ApiRequest) -> list[ConfirmationOut]:
    q: ListQuery = req.query
    if q.status is StatusFilter.PENDING:
        rows = await req.shepherd.confirmations.pending(req.principal, task_id=q.task_id, limit=q.limit)
    else:
        rows = await req.shepherd.confirmations.history(req.principal, status=q.status.value, task_id=q.task_id,
                                                        limit=q.limit)
    return [confirmation_out(c) for c in rows]


async def get_confirmation(req: ApiRequest) -> ConfirmationOut:
    return confirmation_out(await req.shepherd.confirmations.get(req.principal, req.path("code")))


async def decide(req: ApiRequest) -> DecisionOut:
    body: DecisionIn = req.body
    result = await req.shepherd.confirmations.vote(
        req.principal, req.path("code"), approve=body.decision is DecisionWord.APPROVE, comment=body.comment, via=VIA,
    )
    return DecisionOut(confirmation=confirmation_out(result.confirmation), counted=result.counted, message=result.text)


async def explain(req: ApiRequest) -> ExplainOut:
    q: ExplainQuery = req.query
    decision, _ = await req.shepherd.confirmations.explain(
        req.principal, q.action, agent=q.agent_id, level=q.level, project=q.project,
    )
    return ExplainOut(action=decision.action, risk=decision.risk.label, level=decision.level,
                      verdict=decision.verdict.value, quorum=decision.quorum, always_ask=decision.always_ask,
                      reason=decision.reason, policy=decision.source)


# --- the agent (task token) ---------------------------------------------------------------------------


def ask_out(conf: Confirmation, held: bool = False) -> AskOut:
    return AskOut(id=conf.id, code=conf.code, action=conf.action, risk=conf.risk, status=conf.status,
                  quorum=conf.quorum, approvals=conf.approvals, held=held, decided_by=conf.decided_by,
                  decided_via=conf.decided_via, reason=conf.reason, expires_at=iso(conf.expires_at))


async def task_token(req: ApiRequest) -> None:
    """The task-token routes' guard: the token must be that task's, for its running turn (else 401)."""
    await req.shepherd.questions.check_task_token(req.path("taskId"), token_from(req.http))


async def agent_ask(req: ApiRequest) -> Result:
    body: AskIn = req.body
    plan = Plan(action=check_action(body.action), summary=check_summary(body.summary), params=dict(body.params),
                declared=Risk.parse(body.risk) if body.risk else None)
    conf = await req.shepherd.questions.ask(req.path("taskId"), token_from(req.http), plan)
    return Result(ask_out(conf), status=201 if conf.status == Status.PENDING else 200)


async def agent_answer(req: ApiRequest) -> AskOut:
    token = token_from(req.http)
    q: WaitQuery = req.query
    loop = asyncio.get_running_loop()
    deadline = loop.time() + q.wait
    while True:
        conf, held = await req.shepherd.questions.asked(req.path("taskId"), token, req.path("code"))
        if (conf.status != Status.PENDING and not held) or loop.time() >= deadline:
            return ask_out(conf, held)
        await asyncio.sleep(POLL_S)


class LoopMarkIn(ApiModel):
    status: Literal["done", "blocked"] = Field(description="done: the goal is reached; blocked: it cannot go on")
    summary: str = Field(min_length=1, max_length=4000)
    next: str | None = Field(None, max_length=1000, description="what a person must do next (blocked)")


class LoopMarkOut(ApiModel):
    session_id: str
    iteration: int
    status: str = Field(description="what the loop becomes when this iteration's turn ends: completed or blocked")


async def agent_loop_mark(req: ApiRequest) -> LoopMarkOut:
    body: LoopMarkIn = req.body
    status = LoopStatus.COMPLETED if body.status == "done" else LoopStatus.BLOCKED
    row = await req.shepherd.loops.mark(req.path("taskId"), token_from(req.http), status=status,
                                        summary=body.summary, next_action=body.next)
    return LoopMarkOut(session_id=row.id, iteration=row.loop_iteration, status=status.value)


_TAG = "confirmations"
_ERRORS = (400, 401, 403, 404, 409)
ROUTES = [
    Route("GET", "/api/confirmations", list_confirmations,
          "Confirmations of the org: pending ones oldest first, or ?status=approved|rejected|expired|void newest first",
          response=list[ConfirmationOut], query=ListQuery, errors=(400, 401, 403), tag=_TAG,
          operation_id="listConfirmations"),
    Route("GET", "/api/confirmations/{code}", get_confirmation, "One confirmation, by code or id",
          response=ConfirmationOut, errors=(401, 403, 404), tag=_TAG, operation_id="getConfirmation"),
    Route("POST", "/api/confirmations/{code}/decision", decide,
          "Approve or reject (approve scope). One reject rejects; a repeat is ignored; a decided one stays decided "
          "(409 for the opposite decision)", response=DecisionOut, body=DecisionIn, errors=_ERRORS, tag=_TAG,
          operation_id="decideConfirmation",
          field_errors={"decision": FieldError("INVALID_DECISION", "decision is approve or reject")}),
    Route("GET", "/api/policy/explain", explain,
          "Would an action run, ask people first, or be refused, for an agent (or at a level), and why",
          response=ExplainOut, query=ExplainQuery, errors=(400, 401, 403, 404), tag=_TAG,
          operation_id="explainPolicy"),
    Route("POST", "/api/tasks/{taskId}/confirmations", agent_ask,
          "The task's agent asks before acting (`shepherd ask`). Authenticated by the task's SHEPHERD_TASK_TOKEN "
          "only, valid while its turn runs. 201 pending, 200 decided at once by policy",
          response=AskOut, status=201, body=AskIn, errors=(400, 401), tag=_TAG, auth=False, guard=task_token,
          operation_id="agentAsk"),
    Route("GET", "/api/tasks/{taskId}/confirmations/{code}", agent_answer,
          "The decision on the agent's question; waits up to ?wait= seconds while it is pending (task token only)",
          response=AskOut, query=WaitQuery, errors=(400, 401, 404), tag=_TAG, auth=False, guard=task_token,
          operation_id="agentAnswer"),
    Route("POST", "/api/tasks/{taskId}/loop", agent_loop_mark,
          "A loop task's agent marks its session's goal reached or blocked (`shepherd loop done|blocked`); the loop "
          "ends so when the iteration's turn ends. Task token only; 409 for a task that is not a loop's",
          response=LoopMarkOut, body=LoopMarkIn, errors=(400, 401, 409), tag=_TAG, auth=False, guard=task_token,
          operation_id="agentLoopMark"),
]
