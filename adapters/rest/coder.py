"""The Coder AI Tasks API (shared/seeds/001): /api/v2/tasks[/{user}[/{task}[/input, /logs, /pause, /resume,
/send]]] and /api/v2/workspaceagents/me/tasks/{task}/log-snapshot.

Coder speaks snake_case and runs each task in a workspace built from a template. Shepherd has no
workspaces or templates, so the mapping is: a task's workspace is the task itself (workspace_id = task
id, build number = turns), its template is the agent CLI (template_name = runtime), and the workspace
agent is the task's Shepherd agent. Errors keep Shepherd's `{error, code, status}` envelope.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field

from adapters.rest.framework import ApiRequest, FieldError, Result, Route, Shaped, SnakeApiModel, next_page_headers
from adapters.rest.sse import FOLLOW_POLL, Sse, stream
from core.clock import iso, utcnow
from core.errors import ValidationFailed
from core.people.access import Principal
from core.shepherd import Shepherd
from core.tasks.budget import checked_budget
from core.tasks.follow import Follow, TaskState
from core.tasks.service import MAX_PAGE, Task, TaskFilter
from core.tasks.snapshots import snapshot_entries
from core.tasks.state import State, TaskStatus
from core.tasks.steering import MAX_INPUT, MAX_PROMPT, owner_of

# Template ids are derived from the agent name, so they are the same on every server and every call.
_TEMPLATE_NS = uuid.UUID("6f1f8a52-6c3e-5b7e-9a55-2f3d1c0e4b7a")
LOG_LIMIT = 10_000  # core's largest page of log entries


class CoderStatus(StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    ACTIVE = "active"
    PAUSED = "paused"
    UNKNOWN = "unknown"
    ERROR = "error"


class CoderState(StrEnum):
    """`current_state.state`: what the agent is doing."""

    WORKING = "working"
    IDLE = "idle"
    COMPLETE = "complete"
    FAILED = "failed"


class WorkspaceStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"
    DELETING = "deleting"
    DELETED = "deleted"


class AgentLifecycle(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    START_TIMEOUT = "start_timeout"
    START_ERROR = "start_error"
    READY = "ready"
    SHUTTING_DOWN = "shutting_down"
    SHUTDOWN_TIMEOUT = "shutdown_timeout"
    SHUTDOWN_ERROR = "shutdown_error"
    OFF = "off"


# A finished task keeps its workspace and takes follow-ups, so `completed` stays active (current_state
# says it is complete); a failed or cancelled one is an error until a follow-up reopens it.
STATUS: dict[TaskStatus, CoderStatus] = {
    TaskStatus.PENDING: CoderStatus.PENDING,
    TaskStatus.QUEUED: CoderStatus.PENDING,
    TaskStatus.INITIALIZING: CoderStatus.INITIALIZING,
    TaskStatus.RUNNING: CoderStatus.ACTIVE,
    TaskStatus.PAUSED: CoderStatus.PAUSED,
    TaskStatus.AWAITING: CoderStatus.ACTIVE,  # the turn is over; current_state idle says it waits for people
    TaskStatus.COMPLETED: CoderStatus.ACTIVE,
    TaskStatus.FAILED: CoderStatus.ERROR,
    TaskStatus.CANCELLED: CoderStatus.ERROR,
}
_WORKSPACE: dict[TaskStatus, tuple[WorkspaceStatus, AgentLifecycle]] = {
    TaskStatus.PENDING: (WorkspaceStatus.PENDING, AgentLifecycle.CREATED),
    TaskStatus.QUEUED: (WorkspaceStatus.PENDING, AgentLifecycle.CREATED),
    TaskStatus.INITIALIZING: (WorkspaceStatus.STARTING, AgentLifecycle.STARTING),
    TaskStatus.RUNNING: (WorkspaceStatus.RUNNING, AgentLifecycle.READY),
    TaskStatus.PAUSED: (WorkspaceStatus.STOPPED, AgentLifecycle.OFF),
    TaskStatus.AWAITING: (WorkspaceStatus.RUNNING, AgentLifecycle.READY),
    TaskStatus.COMPLETED: (WorkspaceStatus.RUNNING, AgentLifecycle.READY),
    TaskStatus.FAILED: (WorkspaceStatus.FAILED, AgentLifecycle.OFF),
    TaskStatus.CANCELLED: (WorkspaceStatus.CANCELED, AgentLifecycle.OFF),
}
# Core's words for what the agent does happen to be Coder's; the mapping says so rather than assuming it.
STATE: dict[State, CoderState] = {
    State.WORKING: CoderState.WORKING,
    State.IDLE: CoderState.IDLE,  # waiting on input, or on people (core.tasks.state.waiting_on_people)
    State.COMPLETE: CoderState.COMPLETE,
    State.FAILED: CoderState.FAILED,
}
# A control the runner has not applied yet: the workspace is on its way there.
_CONTROL_WORKSPACE = {"pause": WorkspaceStatus.STOPPING, "resume": WorkspaceStatus.STARTING,
                      "stop": WorkspaceStatus.CANCELING, "delete": WorkspaceStatus.DELETING}
_UNHEALTHY = {
    TaskStatus.PENDING: "agent has not started: the task waits for a runner",
    TaskStatus.QUEUED: "agent has not started: the task is queued",
    TaskStatus.INITIALIZING: "agent is starting",
    TaskStatus.PAUSED: "agent is paused",
    TaskStatus.FAILED: "agent is not running: the task failed",
    TaskStatus.CANCELLED: "agent is not running: the task was cancelled",
}


# --- wire models ---------------------------------------------------------------------------------


class NullUUID(SnakeApiModel):
    uuid: str
    valid: bool


class TaskStateOut(SnakeApiModel):
    state: CoderState
    message: str
    timestamp: str
    uri: str


class AgentHealth(SnakeApiModel):
    healthy: bool
    reason: str


class CoderTask(SnakeApiModel):
    id: str
    name: str
    display_name: str
    initial_prompt: str
    organization_id: str
    owner_id: str
    owner_name: str
    owner_avatar_url: str
    status: CoderStatus
    current_state: TaskStateOut
    created_at: str
    updated_at: str
    template_id: str
    template_name: str
    template_display_name: str
    template_icon: str
    template_version_id: str
    workspace_id: NullUUID
    workspace_name: str
    workspace_status: WorkspaceStatus
    workspace_build_number: int
    workspace_agent_id: NullUUID
    workspace_agent_health: AgentHealth
    workspace_agent_lifecycle: AgentLifecycle
    workspace_app_id: NullUUID
    max_turns: int | None = Field(description="Shepherd: its budget's turns (null: no limit)")
    max_minutes: float | None = Field(description="Shepherd: its budget's minutes of running time (null: no limit)")
    max_cost: float | None = Field(description="Shepherd: its budget in dollars (null: no limit)")
    turns: int = Field(description="Shepherd: the turns it has run")
    run_minutes: float = Field(description="Shepherd: the minutes its finished turns ran")
    cost_usd: float | None = Field(description="Shepherd: what its agent reported spending (null: nothing reported)")


class TasksList(SnakeApiModel):
    count: int = Field(description="how many tasks are listed (the newest 500 at most)")
    tasks: list[CoderTask]


class LogEntry(SnakeApiModel):
    id: int
    content: str
    time: str
    type: Literal["input", "output"]


class TaskLogs(SnakeApiModel):
    logs: list[LogEntry]
    snapshot: bool = Field(description="true while the task is paused: the logs are its snapshot")
    snapshot_at: str | None = Field(None, description="when that snapshot was taken (or uploaded)")


class WorkspaceBuild(SnakeApiModel):
    id: str
    build_number: int
    created_at: str
    updated_at: str
    status: WorkspaceStatus
    transition: Literal["start", "stop"]
    reason: Literal["initiator"]
    has_ai_task: bool
    workspace_id: str
    workspace_name: str
    workspace_owner_id: str
    workspace_owner_name: str
    workspace_owner_avatar_url: str
    initiator_id: str
    initiator_name: str
    template_version_id: str
    template_version_name: str


class BuildResponse(SnakeApiModel):
    workspace_build: WorkspaceBuild


class CreateTask(SnakeApiModel):
    input: str = Field(min_length=1, max_length=MAX_PROMPT, description="the prompt")
    name: str | None = Field(None, max_length=63, description="lower-case letters, digits and '-'")
    display_name: str | None = Field(None, max_length=200)
    template_version_id: str | None = Field(
        None, max_length=64, description="picks the agent: a template_version_id a task of that agent shows"
    )
    template_version_preset_id: str | None = Field(None, max_length=64, description="accepted and ignored")
    agent: str | None = Field(None, max_length=32, description="Shepherd: the agent CLI (claude, codex, …)")
    repo: str | None = Field(None, max_length=500, description="Shepherd: owner/name or a git URL to clone")
    branch: str | None = Field(None, max_length=200, description="Shepherd: the branch to start from")
    project: str | None = Field(None, max_length=100, description="Shepherd: a project id or name")
    session_id: str | None = Field(None, max_length=64, description="Shepherd: the session (Agentuity hub) the task "
                                                                    "joins; it must be live and one you may run in")
    max_turns: int | None = Field(None, description="Shepherd: budget: at most this many turns, then people are "
                                                    "asked to extend it or stop")
    max_minutes: float | None = Field(None, description="Shepherd: budget: minutes of the agent's running time")
    max_cost: float | None = Field(None, description="Shepherd: budget: dollars, as the agent reports its cost")


class TaskInput(SnakeApiModel):
    input: str = Field(min_length=1, max_length=MAX_INPUT)


class ListQuery(SnakeApiModel):
    q: str | None = Field(
        None, max_length=1000,
        description="space-separated filters: owner:<user name|user id|me> organization:<org id> "
                    "status:<pending|initializing|active|paused|unknown|error>",
    )


class LogsQuery(SnakeApiModel):
    after_id: int = Field(0, ge=0, le=2**62, description="only the entries after this id (the cursor of the page "
                                                         "before: X-Next-Cursor)")
    limit: int = Field(LOG_LIMIT, ge=1, le=LOG_LIMIT, description="at most this many entries")
    cursor: str | None = Field(None, max_length=20, pattern=r"^[0-9]+$", description="X-Next-Cursor of the page "
                                                                                      "before (same as after_id)")
    follow: bool = Field(False, description="Shepherd: answer as Server-Sent Events: the entries, then new ones as "
                                            "they are written (`log` events), until the turn ends (`end`)")


class AgentApiMessage(SnakeApiModel):
    """One message of agentapi's `GET /messages`, as Coder reads it back from a snapshot."""

    model_config = ConfigDict(strict=True, extra="allow")
    id: int = Field(ge=0)
    content: str
    role: Literal["user", "agent"]
    time: str = Field(max_length=64, description="RFC 3339")


class LogSnapshot(SnakeApiModel):
    """agentapi's `GET /messages` answer (Coder requires `messages`; other fields are kept as sent)."""

    model_config = ConfigDict(strict=True, extra="allow")
    messages: list[AgentApiMessage]


class SnapshotQuery(SnakeApiModel):
    format: Literal["agentapi"]


# --- mapping -------------------------------------------------------------------------------------


def template_id(runtime: str) -> str:
    return str(uuid.uuid5(_TEMPLATE_NS, f"template/{runtime}"))


def template_version_id(runtime: str) -> str:
    return str(uuid.uuid5(_TEMPLATE_NS, f"template-version/{runtime}"))


def _template_title(shepherd: Shepherd, runtime: str) -> str:
    preset = shepherd.catalog.presets.get(runtime)
    return preset.title if preset is not None else runtime


def workspace_name(task: Task) -> str:
    return f"shepherd-{task.name}"


def workspace_status(task: Any) -> WorkspaceStatus:
    status = TaskStatus(task.status)
    if task.control in _CONTROL_WORKSPACE and status in (TaskStatus.RUNNING, TaskStatus.INITIALIZING,
                                                         TaskStatus.PAUSED):
        return _CONTROL_WORKSPACE[task.control]
    return _WORKSPACE[status][0]


@lru_cache(maxsize=256)
def _template_ids(runtime: str) -> tuple[str, str]:
    return template_id(runtime), template_version_id(runtime)  # uuid5: a SHA-1 each, the same every time


_NO_APP = {"uuid": "", "valid": False}  # Shepherd has no workspace apps


def coder_task(shepherd: Shepherd, task: Any) -> dict[str, Any]:
    """A CoderTask on the wire, from a Task or a row of core.tasks.listing.LISTING_COLUMNS: built once, in the
    model's field order (tests check it against CoderTask, which documents it)."""
    status = TaskStatus(task.status)
    reason = _UNHEALTHY.get(status)
    template, version = _template_ids(task.runtime)
    return {
        "id": task.id,
        "name": task.name,
        "display_name": task.display_name,
        "initial_prompt": task.prompt,
        "organization_id": task.org_id,
        "owner_id": task.owner_id,
        "owner_name": task.owner_name,
        "owner_avatar_url": "",
        "status": STATUS[status].value,
        "current_state": {"state": STATE[State(task.state)].value, "message": task.state_message,
                          "timestamp": iso(task.state_at), "uri": ""},
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "template_id": template,
        "template_name": task.runtime,
        "template_display_name": _template_title(shepherd, task.runtime),
        "template_icon": "",
        "template_version_id": version,
        "workspace_id": {"uuid": task.id, "valid": True},
        "workspace_name": f"shepherd-{task.name}",
        "workspace_status": workspace_status(task).value,
        "workspace_build_number": task.turns,
        "workspace_agent_id": {"uuid": task.agent_id or "", "valid": task.agent_id is not None},
        "workspace_agent_health": {"healthy": reason is None, "reason": reason or ""},
        "workspace_agent_lifecycle": _WORKSPACE[status][1].value,
        "workspace_app_id": _NO_APP,
        "max_turns": task.max_turns,
        "max_minutes": task.max_minutes,
        "max_cost": task.max_cost,
        "turns": task.turns,
        "run_minutes": round(task.run_seconds / 60, 2),
        "cost_usd": task.cost_usd,
    }


def log_entry(row: Any) -> dict[str, Any]:
    """A LogEntry on the wire, from a log row (id, time, type, content)."""
    return {"id": row.id, "content": row.content, "time": iso(row.time),
            "type": "input" if row.type == "input" else "output"}


def build(principal: Principal, task: Task, transition: Literal["start", "stop"]) -> BuildResponse:
    """The workspace build a pause (stop) or resume (start) amounts to, as far as Shepherd has one."""
    status = TaskStatus(task.status)
    if transition == "stop":
        done = status is TaskStatus.PAUSED
        state = WorkspaceStatus.STOPPED if done else WorkspaceStatus.STOPPING
    else:
        done = status is TaskStatus.RUNNING and task.control is None
        state = WorkspaceStatus.RUNNING if done else WorkspaceStatus.STARTING
    initiator_id, initiator_name = owner_of(principal)
    now = iso(utcnow())
    return BuildResponse(workspace_build=WorkspaceBuild(
        id=str(uuid.uuid4()), build_number=task.turns, created_at=now, updated_at=now, status=state,
        transition=transition, reason="initiator", has_ai_task=True, workspace_id=task.id,
        workspace_name=workspace_name(task), workspace_owner_id=task.owner_id,
        workspace_owner_name=task.owner_name, workspace_owner_avatar_url="", initiator_id=initiator_id,
        initiator_name=initiator_name, template_version_id=template_version_id(task.runtime),
        template_version_name=task.runtime,
    ))


_FILTERS = ("owner", "organization", "status")


def parse_q(q: str | None, principal: Principal) -> TaskFilter | None:
    """Coder's `q` as a TaskFilter; None when it can match nothing (status:unknown)."""
    values: dict[str, str] = {}
    for term in (q or "").split():
        key, sep, value = term.partition(":")
        key = key.lower()
        if not sep or not key or not value:
            raise ValidationFailed(f"q: {term!r} is not a key:value filter (e.g. owner:me status:active)",
                                   code="INVALID_QUERY")
        if key not in _FILTERS:
            raise ValidationFailed(f"q: unknown filter {key!r}: use {', '.join(k + ':' for k in _FILTERS)}",
                                   code="INVALID_QUERY")
        if key in values:
            raise ValidationFailed(f"q: {key}: given twice", code="INVALID_QUERY")
        values[key] = value
    statuses = None
    if "status" in values:
        try:
            wanted = CoderStatus(values["status"].lower())
        except ValueError:
            raise ValidationFailed(
                f"q: unknown status {values['status']!r}: one of {', '.join(s.value for s in CoderStatus)}",
                code="INVALID_QUERY",
            ) from None
        statuses = frozenset(s for s, c in STATUS.items() if c is wanted)
        if not statuses:
            return None
    owner = values.get("owner")
    if owner == "me":
        owner = owner_of(principal)[0]
    return TaskFilter(status=statuses, owner_id=owner, org_id=values.get("organization"))


def _runtime(req: ApiRequest, body: CreateTask) -> str | None:
    if body.template_version_id is None:
        return body.agent
    by_version = {template_version_id(name): name for name in req.shepherd.catalog.names()}
    runtime = by_version.get(body.template_version_id)
    if runtime is None:
        raise ValidationFailed(f"template_version_id {body.template_version_id!r} names no agent here",
                               code="UNKNOWN_TEMPLATE_VERSION")
    if body.agent is not None and body.agent != runtime:
        raise ValidationFailed(f"template_version_id is agent {runtime!r} but agent is {body.agent!r}",
                               code="AGENT_MISMATCH")
    return runtime


# --- handlers ------------------------------------------------------------------------------------


async def list_tasks(req: ApiRequest) -> Shaped:
    q: ListQuery = req.query
    flt = parse_q(q.q, req.principal)
    rows = await req.shepherd.tasks.newest(req.principal, flt, limit=MAX_PAGE) if flt is not None else []
    return Shaped({"count": len(rows), "tasks": [coder_task(req.shepherd, r) for r in rows]})


async def create_task(req: ApiRequest) -> Shaped:
    body: CreateTask = req.body
    budget = checked_budget(body.max_turns, body.max_minutes, body.max_cost)
    view = await req.shepherd.tasks.create(
        req.principal, prompt=body.input, runtime=_runtime(req, body), repo=body.repo, branch=body.branch,
        project=body.project, name=body.name, display_name=body.display_name, owner=req.path("user"),
        session_id=body.session_id,
        budget=None if budget.empty else budget,
    )
    return Shaped(coder_task(req.shepherd, view.task))


async def get_task(req: ApiRequest) -> Shaped:
    task = await req.shepherd.tasks.get(req.principal, req.path("task"), owner=req.path("user"))
    return Shaped(coder_task(req.shepherd, task))


async def delete_task(req: ApiRequest) -> None:
    await req.shepherd.tasks.delete(req.principal, req.path("task"), owner=req.path("user"))


async def update_input(req: ApiRequest) -> None:
    body: TaskInput = req.body
    await req.shepherd.tasks.update_input(req.principal, req.path("task"), body.input, owner=req.path("user"))


async def task_logs(req: ApiRequest) -> Result | web.StreamResponse:
    """The log, a page at a time (keyset on the entries' ids); while paused, as Coder answers, the snapshot taken
    at the pause (or uploaded since). With `follow`, the entries live (`follow_logs`)."""
    q: LogsQuery = req.query
    after = int(q.cursor) if q.cursor is not None else q.after_id
    task, rows, more = await req.shepherd.tasks.log_page(req.principal, req.path("task"), owner=req.path("user"),
                                                         after_id=after, limit=q.limit)
    if q.follow:
        return await stream(req.http, follow_logs(req, task, rows, after))
    if task.status == TaskStatus.PAUSED and task.log_snapshot is not None and task.snapshot_at is not None:
        entries = [{"id": e.id, "content": e.content, "time": e.time,
                    "type": "input" if e.type == "input" else "output"} for e in snapshot_entries(task.log_snapshot)]
        return Result(Shaped({"logs": entries, "snapshot": True, "snapshot_at": iso(task.snapshot_at)}))
    headers = next_page_headers(req, str(rows[-1].id)) if more else {}
    return Result(Shaped({"logs": [log_entry(r) for r in rows], "snapshot": False}), headers=headers)


async def follow_logs(req: ApiRequest, task: Task, page: list[Any], after: int = 0) -> AsyncIterator[Sse]:
    """The page's entries, then each new one as it is written (`log` events, the entry's id as the event's id), until
    the task's turn is over: then an `end` event with its status. The same follow as CloudCoding's invoke (one
    query a tick, woken early when this process's runner stores output)."""
    for row in page:
        yield Sse(log_entry(row), event="log", id=str(row.id))
    after = page[-1].id if page else after  # a client resuming at the end: nothing again
    follow = Follow(req.shepherd.db, [task.id], after_id=after, pulse=req.shepherd.output_written,
                    poll_s=req.http.app.get(FOLLOW_POLL, 1.0))
    last: TaskState | None = None
    async for tick in follow.ticks():
        for line in tick.lines:
            yield Sse(log_entry(line), event="log", id=str(line.id))
        last = tick.states.get(task.id)
    if last is None:  # deleted while followed
        yield Sse({"status": "deleted", "state": None, "outcome": None, "message": "the task was deleted"},
                  event="end")
        return
    yield Sse({"status": STATUS[last.status].value, "state": STATE[last.state].value, "outcome": last.outcome,
               "message": last.state_message}, event="end")


async def pause_task(req: ApiRequest) -> BuildResponse:
    task = await req.shepherd.tasks.pause(req.principal, req.path("task"), owner=req.path("user"))
    return build(req.principal, task, "stop")


async def resume_task(req: ApiRequest) -> BuildResponse:
    task = await req.shepherd.tasks.resume(req.principal, req.path("task"), owner=req.path("user"))
    return build(req.principal, task, "start")


async def send_input(req: ApiRequest) -> None:
    body: TaskInput = req.body
    await req.shepherd.tasks.send(req.principal, req.path("task"), body.input, owner=req.path("user"))


async def upload_snapshot(req: ApiRequest) -> None:
    # validated as agentapi's shape, stored as sent (the body as parsed once, by the framework)
    await req.shepherd.tasks.store_snapshot(req.principal, req.path("task"), req.data, req.size)


_TAG = "tasks (Coder)"
_TASK = "/api/v2/tasks/{user}/{task}"
_BY_ID = (401, 403, 404)
_INPUT = FieldError("INVALID_INPUT", f"input is 1-{MAX_INPUT} characters")
_USER = "{user} is a user name, a user id, or me."

ROUTES = [
    Route("GET", "/api/v2/tasks", list_tasks,
          "List tasks, newest first (at most 500). q filters: owner:<user|me> organization:<org id> "
          "status:<pending|initializing|active|paused|unknown|error>",
          response=TasksList, query=ListQuery, errors=(400, 401, 403), tag=_TAG, operation_id="coderListTasks"),
    Route("POST", "/api/v2/tasks/{user}", create_task,
          f"Create a task for {{user}} (another user needs the admin scope). {_USER} Shepherd extensions: "
          "agent (the agent CLI; or template_version_id of a task of that agent), repo (owner/name or git URL), "
          "branch, project (id or name), session_id (a session it joins). template_version_preset_id is ignored.",
          response=CoderTask, status=201, body=CreateTask, errors=(400, 401, 403, 404, 409, 413), tag=_TAG,
          operation_id="coderCreateTask", field_errors={"input": FieldError(
              "INVALID_PROMPT", f"input (the prompt) is 1-{MAX_PROMPT} characters")}),
    Route("GET", _TASK, get_task, f"A task by id or name, if {{user}} owns it. {_USER}", response=CoderTask,
          errors=_BY_ID, tag=_TAG, operation_id="coderGetTask"),
    Route("DELETE", _TASK, delete_task, "Delete a task, its logs and workspace (a running one is stopped first)",
          status=202, errors=_BY_ID, tag=_TAG, operation_id="coderDeleteTask"),
    Route("PATCH", f"{_TASK}/input", update_input, "Change the prompt of a task that has not started (else 409)",
          status=204, body=TaskInput, errors=(400, 401, 403, 404, 409, 413), tag=_TAG,
          operation_id="coderUpdateTaskInput", field_errors={"input": _INPUT}),
    Route("GET", f"{_TASK}/logs", task_logs,
          "The log entries in order: the inputs sent and what the agent printed, up to `limit` (10,000) after "
          "`after_id`; when more follow, X-Next-Cursor and Link rel=next name the next page. While paused, the "
          "snapshot (its last messages, at most 64 KB) with snapshot true and snapshot_at. Shepherd: with "
          "follow=true, a text/event-stream of `log` events (each a LogEntry), new ones as they are written, and "
          "an `end` event ({status, state, outcome, message}) once the task's turn is over", response=TaskLogs,
          query=LogsQuery, errors=(400, 401, 403, 404), tag=_TAG, operation_id="coderTaskLogs",
          produces="text/event-stream"),  # with follow=true (the page is JSON)
    Route("POST", f"{_TASK}/pause", pause_task, "Pause a running task (its processes freeze; else 409)",
          response=BuildResponse, status=202, errors=(401, 403, 404, 409), tag=_TAG, operation_id="coderPauseTask"),
    Route("POST", f"{_TASK}/resume", resume_task, "Resume a paused task (else 409)", response=BuildResponse,
          status=202, errors=(401, 403, 404, 409), tag=_TAG, operation_id="coderResumeTask"),
    Route("POST", f"{_TASK}/send", send_input,
          "Send a follow-up: queued while the agent works, a new turn once it is done; 409 while paused or "
          "before the first turn", status=204, body=TaskInput, errors=(400, 401, 403, 404, 409, 413), tag=_TAG,
          operation_id="coderSendTaskInput", field_errors={"input": _INPUT}),
    Route("POST", "/api/v2/workspaceagents/me/tasks/{task}/log-snapshot", upload_snapshot,
          "Upload a task's log snapshot (agentapi's {messages: [...]}, at most 64 KB); format must be agentapi. "
          "It replaces the one Shepherd took when it paused the task",
          status=204, body=LogSnapshot, query=SnapshotQuery, errors=(400, 401, 403, 404, 413), tag=_TAG,
          operation_id="coderUploadLogSnapshot",
          field_errors={"format": FieldError("INVALID_FORMAT", "format must be agentapi"),
                        "messages": FieldError("INVALID_SNAPSHOT", "an agentapi snapshot is {messages: [{id, "
                                                                   "content, role: user|agent, time}]}")}),
]
