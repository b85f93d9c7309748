"""The Agentuity Coder hub (shared/seeds/002), its sessions: GET /coder (discovery), POST /hub/session,
GET /hub/sessions, GET/PATCH/DELETE /hub/session/{id}, POST …/archive, POST …/resume, GET …/participants.

Agentuity speaks camelCase and lists every documented key in every answer (null where Shepherd has no value). A
session is core's (core.sessions); what the hub derives from it (its bucket, counts and availability flags) is
core.sessions.views', and this module only names it on the wire. Shepherd's sessions are all listed in the
`websocket` group (the group the seed documents); `sandbox` is always empty, `sandboxId` always null. A session's
`mode` is its workflow mode (standard | loop), as is `workflowMode`. `orgId`, when given, must be the token's org.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field

from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Route, Shaped
from core.clock import iso
from core.errors import Forbidden
from core.sessions import fields
from core.sessions.participants import Participant
from core.sessions.service import DEFAULT_PAGE, MAX_PAGE, MAX_SEARCH
from core.sessions.views import SessionView
from core.store.models import Session
from core.tasks.budget import MAX_COST, MAX_MINUTES, MAX_TURNS, checked_budget
from core.tasks.steering import MAX_PROMPT

PUBLIC_URL = web.AppKey("public_url", str)  # SHEPHERD_PUBLIC_URL, when the operator set it
_S = fields.MAX_REPO_FIELD

# --- wire models (they document the shapes; answers are built straight from core's views) --------------------------


class OrgQuery(ApiModel):
    org_id: str | None = Field(None, max_length=64, description="must be the token's org when given")


class ListQuery(OrgQuery):
    search: str | None = Field(None, max_length=MAX_SEARCH, description="words in the label, the task or a tag")
    include_archived: bool = False
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=2**31)


class ParticipantsQuery(OrgQuery):
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    include_disconnected: bool = False


_CLOSED = ConfigDict(**ApiModel.model_config, extra="forbid")  # an unknown key in a nested object is a typo: 400


class Repo(ApiModel):
    model_config = _CLOSED
    repo_id: str | None = Field(None, max_length=_S)
    type: str | None = Field(None, max_length=_S)
    provider: str | None = Field(None, max_length=_S)
    owner: str | None = Field(None, max_length=_S)
    name: str | None = Field(None, max_length=_S)
    full_name: str | None = Field(None, max_length=_S)
    url: str | None = Field(None, max_length=_S)
    clone_url: str | None = Field(None, max_length=_S)
    default_branch: str | None = Field(None, max_length=_S)
    branch: str | None = Field(None, max_length=_S)
    ref: str | None = Field(None, max_length=_S)
    commit: str | None = Field(None, max_length=_S)
    path: str | None = Field(None, max_length=_S)
    root_path: str | None = Field(None, max_length=_S)


class Skill(ApiModel):
    model_config = _CLOSED
    skill_id: str = Field(min_length=1, max_length=_S)
    repo: str = Field(min_length=1, max_length=_S)
    name: str | None = Field(None, max_length=_S)
    url: str | None = Field(None, max_length=_S)


class Loop(ApiModel):
    model_config = _CLOSED
    goal: str | None = Field(None, max_length=fields.MAX_GOAL)
    max_iterations: int | None = Field(None, ge=1, le=fields.MAX_ITERATIONS)
    auto_continue: bool | None = None
    allow_detached: bool | None = None


Visibility = Literal["private", "organization", "collaborate"]


class CreateSession(ApiModel):
    task: str | None = Field(None, max_length=MAX_PROMPT, description="the primary prompt: a standard session "
                                                                      "with a task starts its first task")
    label: str | None = Field(None, max_length=fields.MAX_LABEL)
    agent: str | None = Field(None, max_length=32, description="the default agent CLI (claude, codex, demo, …)")
    visibility: Visibility | None = None
    workflow_mode: Literal["standard", "loop"] | None = None
    loop: Loop | None = None
    tags: list[str] | None = Field(None, max_length=fields.MAX_TAGS)
    saved_skill_ids: list[str] | None = Field(None, max_length=fields.MAX_SKILLS, description="kept in metadata")
    skill_bucket_ids: list[str] | None = Field(None, max_length=fields.MAX_SKILLS, description="kept in metadata")
    skills: list[Skill] | None = Field(None, max_length=fields.MAX_SKILLS)
    repo: Repo | None = None
    repos: list[Repo] | None = Field(None, max_length=fields.MAX_REPOS)
    workspace_id: str | None = Field(None, max_length=fields.MAX_WORKSPACE_ID)
    env: dict[str, str] | None = Field(None, description="names from the agent allowlist and SHEPHERD_AGENT_ENV; "
                                                         "no credentials")
    metadata: dict[str, Any] | None = Field(None, description=f"at most {fields.MAX_METADATA_BYTES} bytes as JSON")
    max_turns: int | None = Field(None, description="Shepherd: its tasks' turn limit", ge=1, le=MAX_TURNS)
    max_minutes: float | None = Field(None, description="Shepherd: its tasks' wall-time limit", gt=0,
                                      le=MAX_MINUTES)
    max_cost: float | None = Field(None, description="Shepherd: its tasks' spending limit (USD)", gt=0,
                                   le=MAX_COST)


class UpdateSession(ApiModel):
    label: str | None = Field(None, max_length=fields.MAX_LABEL)
    agent: str | None = Field(None, max_length=32)
    visibility: Visibility | None = None
    tags: list[str] | None = Field(None, max_length=fields.MAX_TAGS)
    skills: list[Skill] | None = Field(None, max_length=fields.MAX_SKILLS)


class Created(ApiModel):
    session_id: str
    sandbox_id: None
    status: str
    mode: str
    visibility: str


class Owner(ApiModel):
    user_id: str
    name: str


class RepoOut(ApiModel):
    repo_id: str | None
    type: str | None
    provider: str | None
    owner: str | None
    name: str | None
    full_name: str | None
    url: str | None
    clone_url: str | None
    default_branch: str | None
    branch: str | None
    ref: str | None
    commit: str | None
    path: str | None
    root_path: str | None


class SkillOut(ApiModel):
    skill_id: str
    repo: str
    name: str | None
    url: str | None


class Workspace(ApiModel):
    id: str
    name: str
    scope: str


class HubSession(ApiModel):
    session_id: str
    label: str
    status: Literal["active", "archived"]
    mode: str
    visibility: str
    owner: Owner
    origin: dict[str, Any] | str | None
    repo: RepoOut | None
    repos: list[RepoOut]
    workspace: Workspace | None
    session_kind: Literal["hub", "thread"]
    parent_session_id: str | None
    coordination_job_id: str | None
    workflow_mode: Literal["standard", "loop"]
    loop_status: str | None
    loop_iteration: int | None
    created_at: str
    last_activity_at: str
    task_count: int
    sub_agent_count: int
    observer_count: int
    participant_count: int
    tags: list[str]
    skills: list[SkillOut]
    default_agent: str | None
    bucket: Literal["running", "paused", "provisioning", "history"]
    runtime_available: bool
    control_available: bool
    manage_available: bool
    wake_available: bool
    history_only: bool
    live_expected: bool


class HubSessionFull(HubSession):
    task: str
    env: dict[str, str]
    metadata: dict[str, Any]
    updated_at: str


class Grouped(ApiModel):
    websocket: list[HubSession]
    sandbox: list[HubSession] = Field(description="always empty: Shepherd has no sandbox-backed sessions")


class SessionList(ApiModel):
    sessions: Grouped
    total: int


class Updated(ApiModel):
    session_id: str
    label: str
    visibility: str
    tags: list[str]
    skills: list[SkillOut]
    default_agent: str | None


class Lifecycle(ApiModel):
    session_id: str
    status: Literal["active", "archived", "deleted"]


class ParticipantOut(ApiModel):
    id: str
    role: Literal["lead", "observer", "controller"]
    transport: str
    agent_role: str | None
    connected_at: str | None
    disconnected_at: str | None
    last_activity_at: str | None
    metadata: dict[str, Any]


class Participants(ApiModel):
    session_id: str
    participants: list[ParticipantOut]


class Discovery(ApiModel):
    url: str = Field(description="this server's base URL: the hub's routes are under it")


# --- mapping ---------------------------------------------------------------------------------------------------------


def _when(value: Any) -> str | None:
    return iso(value) if value is not None else None


def repo_out(repo: dict[str, Any]) -> dict[str, Any]:
    return {key: repo.get(key) for key in fields.REPO_FIELDS}


def skill_out(skill: dict[str, Any]) -> dict[str, Any]:
    return {key: skill.get(key) for key in fields.SKILL_FIELDS}


def hub_session(view: SessionView, *, full: bool = False) -> dict[str, Any]:
    """A HubSession on the wire (HubSessionFull with `full`), every key present, in the model's order."""
    row = view.row
    loop = row.workflow_mode == "loop"
    body: dict[str, Any] = {
        "sessionId": row.id, "label": row.label, "status": row.status, "mode": row.workflow_mode,
        "visibility": row.visibility, "owner": {"userId": row.owner_id, "name": row.owner_name},
        "origin": row.origin or None, "repo": repo_out(row.repos[0]) if row.repos else None,
        "repos": [repo_out(r) for r in row.repos],
        "workspace": {"id": row.workspace_id, "name": row.workspace_id, "scope": "organization"}
        if row.workspace_id else None,
        "sessionKind": "thread" if row.origin.get("address") else "hub", "parentSessionId": None,
        "coordinationJobId": None, "workflowMode": row.workflow_mode,
        "loopStatus": row.loop_status if loop else None, "loopIteration": row.loop_iteration if loop else None,
        "createdAt": iso(row.created_at), "lastActivityAt": iso(row.last_activity_at),
        "taskCount": view.task_count, "subAgentCount": view.sub_agent_count, "observerCount": view.observer_count,
        "participantCount": view.participant_count, "tags": list(row.tags),
        "skills": [skill_out(s) for s in row.skills], "defaultAgent": row.default_agent, "bucket": view.bucket,
        "runtimeAvailable": view.runtime_available, "controlAvailable": view.control_available,
        "manageAvailable": view.manage_available, "wakeAvailable": view.wake_available,
        "historyOnly": view.history_only, "liveExpected": view.live_expected,
    }
    if full:
        body.update({"task": row.task, "env": dict(row.env), "metadata": dict(row.meta),
                     "updatedAt": iso(row.updated_at)})
    return body


def participant_out(p: Participant) -> dict[str, Any]:
    return {"id": p.id, "role": p.role, "transport": p.transport, "agentRole": None,
            "connectedAt": _when(p.connected_at), "disconnectedAt": _when(p.disconnected_at),
            "lastActivityAt": _when(p.last_activity_at), "metadata": p.metadata}


def _org(req: ApiRequest) -> None:
    """`orgId` names the org the caller means: it must be the token's (as x-org-id must)."""
    org = req.query.org_id if req.query is not None else None
    if org is not None and org != req.principal.org_id:
        raise Forbidden("orgId does not match this token's org", code="ORG_MISMATCH")


def _dumped(items: list[Any] | None) -> list[dict[str, Any]] | None:
    return None if items is None else [i.model_dump(by_alias=True, exclude_none=True) for i in items]


# --- handlers --------------------------------------------------------------------------------------------------------


async def discover(req: ApiRequest) -> Shaped:
    _org(req)
    base = req.http.app.get(PUBLIC_URL) or f"{req.http.scheme}://{req.http.host}"
    return Shaped({"url": base.rstrip("/")})


async def create_session(req: ApiRequest) -> Shaped:
    _org(req)
    body: CreateSession = req.body
    metadata = dict(body.metadata or {})
    for key, ids in (("savedSkillIds", body.saved_skill_ids), ("skillBucketIds", body.skill_bucket_ids)):
        if ids:
            metadata[key] = fields.tags(ids)  # short one-line ids, checked as tags are
    row = await req.shepherd.sessions.create(
        req.principal, task=body.task or "", label=body.label, agent=body.agent, visibility=body.visibility,
        workflow_mode=body.workflow_mode,
        loop=body.loop.model_dump(by_alias=True, exclude_none=True) if body.loop is not None else None,
        tags=body.tags, skills=_dumped(body.skills),
        repo=body.repo.model_dump(by_alias=True, exclude_none=True) if body.repo is not None else None,
        repos=_dumped(body.repos), workspace_id=body.workspace_id, env=body.env, metadata=metadata,
        budget=checked_budget(body.max_turns, body.max_minutes, body.max_cost), origin={"channel": "rest"},
    )
    return Shaped({"sessionId": row.id, "sandboxId": None, "status": row.status, "mode": row.workflow_mode,
                   "visibility": row.visibility})


async def list_sessions(req: ApiRequest) -> Shaped:
    _org(req)
    q: ListQuery = req.query
    page = await req.shepherd.sessions.list(req.principal, search=q.search, include_archived=q.include_archived,
                                            limit=q.limit, offset=q.offset)
    views = await req.shepherd.sessions.views(req.principal, page.rows)
    return Shaped({"sessions": {"websocket": [hub_session(v) for v in views], "sandbox": []},
                   "total": page.total})


async def get_session(req: ApiRequest) -> Shaped:
    _org(req)
    view = await req.shepherd.sessions.view(req.principal, req.path("sessionId"))
    return Shaped(hub_session(view, full=True))


def _updated(row: Session) -> Shaped:
    return Shaped({"sessionId": row.id, "label": row.label, "visibility": row.visibility, "tags": list(row.tags),
                   "skills": [skill_out(s) for s in row.skills], "defaultAgent": row.default_agent})


async def update_session(req: ApiRequest) -> Shaped:
    _org(req)
    body: UpdateSession = req.body
    row = await req.shepherd.sessions.update(req.principal, req.path("sessionId"), label=body.label,
                                             agent=body.agent, visibility=body.visibility, tags=body.tags,
                                             skills=_dumped(body.skills))
    return _updated(row)


async def archive_session(req: ApiRequest) -> Shaped:
    _org(req)
    row = await req.shepherd.sessions.archive(req.principal, req.path("sessionId"))
    return Shaped({"sessionId": row.id, "status": row.status})


async def resume_session(req: ApiRequest) -> Shaped:
    _org(req)
    row = await req.shepherd.sessions.resume(req.principal, req.path("sessionId"))
    return Shaped({"sessionId": row.id, "status": row.status})


async def delete_session(req: ApiRequest) -> Shaped:
    _org(req)
    row = await req.shepherd.sessions.delete(req.principal, req.path("sessionId"))
    return Shaped({"sessionId": row.id, "status": "deleted"})


async def session_participants(req: ApiRequest) -> Shaped:
    _org(req)
    q: ParticipantsQuery = req.query
    sid = req.path("sessionId")
    found = await req.shepherd.sessions.participants(req.principal, sid, include_disconnected=q.include_disconnected,
                                                     limit=q.limit)
    return Shaped({"sessionId": sid, "participants": [participant_out(p) for p in found]})


_TAG = "sessions (Agentuity hub)"
_ONE = "/hub/session/{sessionId}"
_BY_ID = (400, 401, 403, 404)
_BODY_ERRORS = {
    "visibility": FieldError("INVALID_VISIBILITY", "visibility is one of private, organization, collaborate"),
    "workflowMode": FieldError("INVALID_WORKFLOWMODE", "workflowMode is one of standard, loop"),
    "maxTurns": FieldError("INVALID_BUDGET", f"--max-turns (maxTurns) is a whole number from 1 to {MAX_TURNS}"),
    "maxMinutes": FieldError("INVALID_BUDGET", f"--max-minutes (maxMinutes) is more than 0, at most {MAX_MINUTES:g}"),
    "maxCost": FieldError("INVALID_BUDGET", f"--max-cost (maxCost) is more than 0, at most {MAX_COST:g}"),
}

ROUTES = [
    Route("GET", "/coder", discover, "Discover the Coder base URL: this server's (SHEPHERD_PUBLIC_URL when set)",
          response=Discovery, query=OrgQuery, errors=(400, 401, 403), tag=_TAG, operation_id="agentuityDiscover"),
    Route("POST", "/hub/session", create_session,
          "Create a session. A standard session with a task starts its first task (the default agent, the primary "
          "repository and its branch); a loop session keeps its loop settings (loop state idle). env takes names "
          "from the agent allowlist and SHEPHERD_AGENT_ENV only, never credentials. Shepherd extensions: maxTurns, "
          "maxMinutes, maxCost (its tasks' budget)",
          response=Created, status=201, body=CreateSession, query=OrgQuery, errors=(400, 401, 403, 409, 413),
          tag=_TAG, operation_id="agentuityCreateSession", field_errors=_BODY_ERRORS),
    Route("GET", "/hub/sessions", list_sessions,
          "The sessions one may read, the most recently active first (search over label, task and tags; archived "
          "ones with includeArchived), grouped by transport: all of Shepherd's under websocket",
          response=SessionList, query=ListQuery, errors=(400, 401, 403), tag=_TAG,
          operation_id="agentuityListSessions"),
    Route("GET", _ONE, get_session, "A session: everything the list shows, and its task, env, metadata, updatedAt",
          response=HubSessionFull, query=OrgQuery, errors=_BY_ID, tag=_TAG, operation_id="agentuityGetSession"),
    Route("PATCH", _ONE, update_session, "Change a session's label, default agent, visibility, tags or skills "
          "(its owner or an admin)", response=Updated, body=UpdateSession, query=OrgQuery,
          errors=(400, 401, 403, 404, 413), tag=_TAG, operation_id="agentuityUpdateSession",
          field_errors=_BODY_ERRORS),
    Route("DELETE", _ONE, delete_session, "Delete a session: its unfinished tasks are stopped first; its tasks stay "
          "as history", response=Lifecycle, query=OrgQuery, errors=_BY_ID, tag=_TAG,
          operation_id="agentuityDeleteSession"),
    Route("POST", f"{_ONE}/archive", archive_session, "Archive a session: history only, its unfinished tasks "
          "stopped, nothing runs in it until resumed", response=Lifecycle, query=OrgQuery, errors=_BY_ID, tag=_TAG,
          operation_id="agentuityArchiveSession"),
    Route("POST", f"{_ONE}/resume", resume_session, "Resume an archived session: it takes tasks again",
          response=Lifecycle, query=OrgQuery, errors=_BY_ID, tag=_TAG, operation_id="agentuityResumeSession"),
    Route("GET", f"{_ONE}/participants", session_participants,
          "Who and what is attached: its owner (lead), the threads watching its tasks (observer), the people who "
          "voted on its confirmations (controller); the connected ones unless includeDisconnected",
          response=Participants, query=ParticipantsQuery, errors=_BY_ID, tag=_TAG,
          operation_id="agentuityListParticipants"),
]
