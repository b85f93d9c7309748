"""The Eliza coding-agents API (shared/seeds/000): coordinator status and stopping a task.

Eliza's orchestrator runs CLI agents as tasks, as Shepherd does: a session is a task, the coordinator's
supervision level is the autonomy level of the org's coordinator agent, and "the orchestrator service
is unavailable" means no runner is alive to run tasks.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, Route
from core.agents import DEFAULT_LEVEL, LEVEL_NAMES, AgentFilter
from core.errors import ShepherdError, Unavailable
from core.models import Task
from core.tasks import MAX_PAGE, TaskStatus, is_finished

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


def coding_task(task: Task) -> CodingTask:
    return CodingTask(
        session_id=task.id, agent_type=task.runtime, label=task.display_name, original_task=task.prompt,
        workdir=task.workspace or "", status=STATUS[TaskStatus(task.status)], decision_count=task.decision_count,
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
        pending_confirmations=0,  # confirmations (approvals a task waits for) are not served yet
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


_TAG = "coding agents (Eliza)"
ROUTES = [
    Route("GET", "/api/coding-agents/coordinator/status", coordinator_status,
          "Supervision level and the org's tasks, newest first (at most 500; none while no runner is alive)",
          response=CoordinatorStatus, errors=(401, 403), tag=_TAG, operation_id="elizaCoordinatorStatus"),
    Route("POST", "/api/coding-agents/{sessionId}/stop", stop_task,
          "Cancel a task and wait (up to 10 s) until it has stopped; 503 without a runner, 500 if it does not stop",
          response=StopDone, errors=(401, 403, 404, 500, 503), tag=_TAG, operation_id="elizaStopTask"),
]
