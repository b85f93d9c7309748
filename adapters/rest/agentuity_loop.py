"""Agentuity's coder hub: a session's loop state (issue 17; the other hub routes are adapters/rest/agentuity.py).

    GET /hub/session/{sessionId}/loop?orgId=…   {sessionId, workflowMode, loop: {…} | null}

Every documented key is present, null where Shepherd has no value; `loop` is null for a session that is not in
loop mode."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, Route, Shaped
from core.clock import iso
from core.errors import Forbidden
from core.sessions.fields import LoopSettings
from core.sessions.loop import LOOP_MODE, LoopStatus
from core.store.models import Session


class OrgQuery(ApiModel):
    org_id: str | None = Field(None, max_length=64, description="must be the token's organization when given")


class LoopState(ApiModel):
    goal: str | None
    max_iterations: int | None
    auto_continue: bool | None
    allow_detached: bool | None
    status: str | None = Field(description="idle, starting, running, paused, awaiting_input, blocked, completed, "
                                           "cancelled or failed")
    iteration: int = Field(description="the 1-based number of the iteration running or last run (0: none yet)")
    summary: str | None
    next_action: str | None
    last_checkpoint_at: str | None


class LoopOut(ApiModel):
    session_id: str
    workflow_mode: str
    loop: LoopState | None


def loop_out(row: Session) -> dict[str, Any]:
    """The wire shape, every key present."""
    loop: dict[str, Any] | None = None
    if row.workflow_mode == LOOP_MODE:
        settings = LoopSettings.of(row)
        loop = {
            "goal": settings.goal or None, "maxIterations": settings.max_iterations,
            "autoContinue": settings.auto_continue, "allowDetached": settings.allow_detached,
            "status": row.loop_status or LoopStatus.IDLE.value, "iteration": row.loop_iteration,
            "summary": row.loop_summary, "nextAction": row.loop_next_action,
            "lastCheckpointAt": iso(row.loop_checkpoint_at) if row.loop_checkpoint_at else None,
        }
    return {"sessionId": row.id, "workflowMode": row.workflow_mode, "loop": loop}


async def get_loop(req: ApiRequest) -> Shaped:
    q: OrgQuery = req.query
    if q.org_id is not None and q.org_id != req.principal.org_id:
        raise Forbidden("orgId is not this token's organization", code="ORG_MISMATCH")
    return Shaped(loop_out(await req.shepherd.loops.get(req.principal, req.path("sessionId"))))


routes = [
    Route("GET", "/hub/session/{sessionId}/loop", get_loop,
          "A session's loop state: its settings, status, iteration, summary and next action (loop is null for a "
          "session not in loop mode)", response=LoopOut, query=OrgQuery, errors=(400, 401, 403, 404),
          tag="agentuity", operation_id="getHubSessionLoop"),
]
