"""The CodeSpar agent API (shared/seeds/004): /api/agents, /api/agents/{id}[/action], /api/agent-types, and
CodeSpar's approval vote (/api/approval/vote) over Shepherd's confirmations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Result, Route, Shaped, next_page_headers
from core.agents import (
    ACTION_NAMES,
    MAX_PAGE,
    AgentAction,
    AgentFilter,
    AgentRow,
    AgentStatus,
    AgentView,
    Lifecycle,
    uptime,
)
from core.clock import iso, utcnow
from core.errors import NotFound, ShepherdError

# --- wire models ---------------------------------------------------------------------------------


class ProjectRef(ApiModel):
    id: str
    name: str
    repo: str | None = None
    default_branch: str


class AgentStats(ApiModel):
    messages_processed: int
    tasks_completed: int
    reviews_performed: int
    deploys_triggered: int
    incidents_handled: int


class AgentMemory(ApiModel):
    embeddings: int
    storage_mb: float = Field(alias="storageMB")


class AgentSummary(ApiModel):
    id: str
    name: str
    type: str
    status: AgentStatus
    autonomy_level: int = Field(ge=0, le=5)
    project_id: str | None = None
    uptime: int = Field(ge=0, description="seconds since the agent (re)started")
    last_activity: str = Field(description="ISO 8601")
    channels: list[str] | None = Field(None, description="connected channels (project agents only)")
    task: str | None = Field(None, description="current task (task agents only)")


class AgentDetails(AgentSummary):
    project: ProjectRef | None = None
    stats: AgentStats
    memory: AgentMemory


class AgentCreated(ApiModel):
    id: str
    name: str
    type: str
    status: AgentStatus
    autonomy_level: int
    project_id: str | None = None
    created_at: str


class AgentDeleted(ApiModel):
    id: str
    deleted: bool
    message: str


class ActionDone(ApiModel):
    id: str
    action: AgentAction
    previous_status: AgentStatus | None = None
    current_status: AgentStatus | None = None
    previous_level: int | None = None
    current_level: int | None = None
    uptime: int | None = None
    timestamp: str


class AgentTypeOut(ApiModel):
    type: str
    lifecycle: Lifecycle
    description: str


class CreateAgent(ApiModel):
    name: str = Field(min_length=1, max_length=100)
    type: str = Field(min_length=1, max_length=32)
    project_id: str | None = Field(None, max_length=100, description="a project id or name")
    autonomy_level: int = Field(1, ge=0, le=5)


class ActionParams(ApiModel):
    level: int | None = Field(None, ge=0, le=5)


class AgentActionBody(ApiModel):
    action: AgentAction
    params: ActionParams | None = None


class RegisterType(ApiModel):
    type: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    lifecycle: Lifecycle
    description: str = Field(min_length=1, max_length=500)


class ListQuery(ApiModel):
    type: str | None = None
    status: AgentStatus | None = None
    project_id: str | None = Field(None, alias="projectId", max_length=100, description="a project id or name")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000, description="rows to skip (the cursor is cheaper further in)")
    cursor: str | None = Field(None, max_length=500, description="where the next page begins: the X-Next-Cursor "
                                                                 "of the page before (offset is then ignored)")


# --- mapping -------------------------------------------------------------------------------------


def summary(view: AgentView, now: datetime) -> AgentSummary:
    a = view.agent
    return AgentSummary(
        id=a.id,
        name=a.name,
        type=a.type,
        status=AgentStatus(a.status),
        autonomy_level=a.autonomy_level,
        project_id=a.project_id,
        uptime=view.uptime(now),
        last_activity=iso(a.last_activity),
        channels=list(view.project.channels if view.project else []) if a.type == "project" else None,
        task=a.task if a.type == "task" else None,
    )


def details(view: AgentView) -> AgentDetails:
    a, p = view.agent, view.project
    return AgentDetails(
        **summary(view, utcnow()).model_dump(),
        project=ProjectRef(id=p.id, name=p.name, repo=p.repo, default_branch=p.default_branch) if p else None,
        stats=AgentStats(
            messages_processed=a.messages_processed,
            tasks_completed=a.tasks_completed,
            reviews_performed=a.reviews_performed,
            deploys_triggered=a.deploys_triggered,
            incidents_handled=a.incidents_handled,
        ),
        memory=AgentMemory(embeddings=a.memory_embeddings, storage_mb=a.memory_storage_mb),
    )


def summary_wire(row: AgentRow, now: datetime) -> dict[str, Any]:
    """An AgentSummary on the wire, straight from a listed row (the list's hot path: no model in between; tests
    check it against AgentSummary)."""
    out: dict[str, Any] = {"id": row.id, "name": row.name, "type": row.type, "status": row.status,
                           "autonomyLevel": row.autonomy_level}
    if row.project_id is not None:
        out["projectId"] = row.project_id
    out["uptime"] = uptime(row.started_at, now)
    out["lastActivity"] = iso(row.last_activity)
    if row.type == "project":
        out["channels"] = list(row.channels or [])
    elif row.type == "task" and row.task is not None:
        out["task"] = row.task
    return out


# --- handlers ------------------------------------------------------------------------------------


async def list_agents(req: ApiRequest) -> Result:
    q: ListQuery = req.query
    page = await req.shepherd.agents.page(
        req.principal,
        AgentFilter(type=q.type, status=q.status, project_id=q.project_id),
        limit=q.limit,
        offset=q.offset,
        cursor=q.cursor,
    )
    now = utcnow()
    headers = {"X-Total-Count": str(page.total)}
    if page.next_cursor is not None:
        headers.update(next_page_headers(req, page.next_cursor))
    return Result(Shaped([summary_wire(row, now) for row in page.rows]), headers=headers)



async def get_agent(req: ApiRequest) -> AgentDetails:
    return details(await req.shepherd.agents.get(req.principal, req.path("id")))


async def create_agent(req: ApiRequest) -> AgentCreated:
    body: CreateAgent = req.body
    view = await req.shepherd.agents.create(
        req.principal, name=body.name, type=body.type, project_id=body.project_id,
        autonomy_level=body.autonomy_level,
    )
    a = view.agent
    return AgentCreated(
        id=a.id, name=a.name, type=a.type, status=AgentStatus(a.status), autonomy_level=a.autonomy_level,
        project_id=a.project_id, created_at=iso(a.created_at),
    )


async def delete_agent(req: ApiRequest) -> AgentDeleted:
    agent_id = req.path("id")
    await req.shepherd.agents.delete(req.principal, agent_id)
    return AgentDeleted(id=agent_id, deleted=True, message="Agent removed")


async def agent_action(req: ApiRequest) -> ActionDone:
    body: AgentActionBody = req.body
    params = body.params.model_dump(exclude_none=True) if body.params is not None else None
    r = await req.shepherd.agents.act(req.principal, req.path("id"), body.action, params)
    out = ActionDone(id=r.agent_id, action=r.action, timestamp=iso(r.timestamp))
    if r.action is AgentAction.SET_AUTONOMY:
        out.previous_level, out.current_level = r.previous_level, r.current_level
    else:
        out.previous_status = AgentStatus(r.previous_status)
        out.current_status = AgentStatus(r.current_status)
        out.uptime = r.uptime
    return out


async def list_types(req: ApiRequest) -> list[AgentTypeOut]:
    types = await req.shepherd.agents.types(req.principal)
    return [AgentTypeOut(type=t.type, lifecycle=t.lifecycle, description=t.description) for t in types]


async def register_type(req: ApiRequest) -> AgentTypeOut:
    body: RegisterType = req.body
    t = await req.shepherd.agents.register_type(
        req.principal, type_name=body.type, lifecycle=body.lifecycle, description=body.description
    )
    return AgentTypeOut(type=t.type, lifecycle=t.lifecycle, description=t.description)


class VoteWord(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class VoteIn(ApiModel):
    token: str = Field(min_length=1, max_length=64, description="the approval's code (Shepherd: K7P2)")
    vote: VoteWord
    user_id: str | None = Field(None, max_length=200, description="accepted for CodeSpar clients; the voter is "
                                                                  "the API token's own identity")
    channel_type: str | None = Field(None, max_length=32, description="accepted for CodeSpar clients; the vote "
                                                                      "is recorded as made through the API")


class VoteResult(ApiModel):
    status: str = Field(description="pending, approved, denied or expired")
    votes_received: int
    votes_required: int


class VoteOut(ApiModel):
    success: bool
    result: VoteResult


_CODESPAR_STATUS = {"rejected": "denied", "void": "denied"}


async def approval_vote(req: ApiRequest) -> VoteOut:
    """CodeSpar's approval vote: one deny denies, approvals count to the quorum. Like CodeSpar, a vote that
    cannot count (unknown, resolved, the requester's own, a repeat) is 404."""
    body: VoteIn = req.body
    rejected = "Token not found, already resolved, or vote rejected"
    try:
        result = await req.shepherd.confirmations.vote(req.principal, body.token, approve=body.vote is VoteWord.APPROVE,
                                                       via="api")  # where it came from: not the client's say
    except ShepherdError as exc:
        if exc.code in ("CONFIRMATION_NOT_FOUND", "CONFIRMATION_DECIDED", "SELF_APPROVAL"):
            raise NotFound(f"{rejected}: {exc.message}", code="VOTE_REJECTED") from None
        raise
    if not result.counted:
        raise NotFound(f"{rejected}: {result.text}", code="VOTE_REJECTED")
    conf = result.confirmation
    return VoteOut(success=True, result=VoteResult(
        status=_CODESPAR_STATUS.get(conf.status, conf.status), votes_received=conf.approvals,
        votes_required=conf.quorum))


_LEVEL = FieldError("INVALID_AUTONOMY_LEVEL", "Autonomy level must be between 0 and 5")
_ACTION = FieldError("INVALID_ACTION", f"Invalid action. Must be one of: {ACTION_NAMES}")
_TAG = "agents (CodeSpar)"
_ID_ERRORS = (401, 403, 404)

ROUTES = [
    Route("GET", "/api/agents", list_agents,
          "List agents (a page, oldest first; X-Total-Count has the total; X-Next-Cursor and Link rel=next give the "
          "next page, if any, as ?cursor=)",
          response=list[AgentSummary], query=ListQuery, errors=(400, 401, 403), tag=_TAG,
          operation_id="listAgents"),
    Route("POST", "/api/agents", create_agent, "Create an agent", response=AgentCreated, status=201,
          body=CreateAgent, errors=(400, 401, 403, 404, 409, 413), tag=_TAG, operation_id="createAgent",
          field_errors={"autonomyLevel": _LEVEL}),
    Route("GET", "/api/agents/{id}", get_agent, "Agent details, with its project, stats and memory",
          response=AgentDetails, errors=_ID_ERRORS, tag=_TAG, operation_id="getAgent"),
    Route("DELETE", "/api/agents/{id}", delete_agent, "Remove an agent", response=AgentDeleted,
          errors=_ID_ERRORS, tag=_TAG, operation_id="deleteAgent"),
    Route("POST", "/api/agents/{id}/action", agent_action,
          "Suspend, resume, restart, or set_autonomy (params.level 0-5; raising it needs the approve scope)",
          response=ActionDone, body=AgentActionBody, errors=(400, 401, 403, 404, 413), tag=_TAG,
          operation_id="agentAction", field_errors={"action": _ACTION, "params.level": _LEVEL}),
    Route("GET", "/api/agent-types", list_types, "Agent types: the six built-ins and registered ones",
          response=list[AgentTypeOut], errors=(401, 403), tag=_TAG, operation_id="listAgentTypes"),
    Route("POST", "/api/agent-types", register_type, "Register an agent type (admin scope)",
          response=AgentTypeOut, status=201, body=RegisterType, errors=(400, 401, 403, 409, 413), tag=_TAG,
          operation_id="registerAgentType"),
    Route("POST", "/api/approval/vote", approval_vote,
          "Vote on an approval by its token (code): approve or deny (approve scope). One deny denies; 404 when the "
          "vote cannot count (unknown or resolved token, the requester's own vote at quorum 2, a repeat)",
          response=VoteOut, body=VoteIn, errors=(400, 401, 403, 404), tag=_TAG, operation_id="approvalVote",
          field_errors={"vote": FieldError("INVALID_VOTE", "vote must be 'approve' or 'deny'"),
                        "token": FieldError("INVALID_TOKEN", "token, vote, and userId are required")}),
]
