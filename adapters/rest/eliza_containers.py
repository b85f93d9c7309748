"""Eliza's cloud coding containers (shared/seeds/000, "Start Coding Container"): start an agent on a promoted
workspace, and (Shepherd's addition) read a container's status and its task's outcome. Answers in the seed's
`{success, data}` envelope; failures in the API's error envelope. Fails closed like the seed's control plane: 503
`CONTAINERS_UNAVAILABLE`, with why, while no runner can take containers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import Field

from adapters.rest.agentuity import PUBLIC_URL
from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Route
from core.clock import iso
from core.containers.bundles import MAX_REQUEST_BYTES, bundle
from core.containers.containers import Containers, ContainerStatus, ContainerView, Source
from core.containers.promotions import AGENTS
from core.errors import ValidationFailed


class FileIn(ApiModel):
    path: str = Field(max_length=1024, description="relative to the workspace: no absolute path, no `..`, no .git")
    contents: str
    encoding: str | None = Field(None, description="utf-8 (default) or base64")


class SourceIn(ApiModel):
    source_kind: str = Field("project", max_length=40)
    project_id: str | None = Field(None, max_length=100, description="a single path segment: workspacePath is "
                                                                      "/workspace/<projectId>")
    snapshot_id: str | None = Field(None, max_length=200)
    files: list[FileIn] = Field(default_factory=list)


class StartIn(ApiModel):
    agent: str = Field(max_length=40, description=f"one of {', '.join(AGENTS)}")
    promotion_id: str | None = Field(None, max_length=40, description="the promotion to start from; with "
                                     "source.files a new promotion of those files is made instead")
    source: SourceIn | None = None
    prompt: str = Field(max_length=20000)


class ContainerMetadata(ApiModel):
    source_file_count: int
    source_total_bytes: int
    volume_mount_path: str = Field(description="where the agent sees the workspace (see workspacePath)")


class Container(ApiModel):
    container_id: str
    status: ContainerStatus
    agent: str
    promotion_id: str
    workspace_path: str = Field(description="where the agent sees the workspace: /workspace/<projectId> on a runner "
                                            "that mounts it (Docker, Kubernetes, the local sandbox); else the real "
                                            "path of Shepherd's copy, where the unsandboxed local agent runs")
    url: str = Field(description="the container's task in Shepherd's Coder Tasks API (its page: /ui/tasks/<task>)")
    created_at: str
    metadata: ContainerMetadata


class ContainerDetail(Container):
    """Shepherd's addition: the task behind the container and how it ended."""

    task_id: str
    outcome: str | None = Field(None, description="succeeded, failed, timed_out, cancelled, interrupted, denied, "
                                                   "budget_exceeded; none while it runs")
    reason: str | None = None


class Started(ApiModel):
    success: bool
    data: Container


class Found(ApiModel):
    success: bool
    data: ContainerDetail



def _fields(req: ApiRequest, view: ContainerView) -> dict[str, Any]:
    row = view.container
    base = req.http.app.get(PUBLIC_URL) or f"{req.http.scheme}://{req.http.host}"
    owner = view.task.owner_id if view.task is not None else "me"
    return {
        "container_id": row.id, "status": view.status, "agent": row.agent, "promotion_id": row.promotion_id,
        "workspace_path": view.mount_path,
        "url": f"{base.rstrip('/')}/api/v2/tasks/{quote(owner, safe='')}/{row.task_id}",
        "created_at": iso(row.created_at, "milliseconds"),
        "metadata": ContainerMetadata(source_file_count=row.file_count, source_total_bytes=row.total_bytes,
                                      volume_mount_path=view.mount_path),
    }


async def start(req: ApiRequest) -> Started:
    body: StartIn = req.body
    containers: Containers = req.shepherd.containers
    await containers.require_available()  # before anything is checked or written: never a fake success
    source = None
    if body.source is not None and body.source.files:
        if body.source.project_id is None:
            raise ValidationFailed("source.projectId: needed to promote source.files", code="INVALID_PROJECT_ID")
        files = bundle([f.model_dump() for f in body.source.files], "source.files")
        source = Source(source_kind=body.source.source_kind, project_id=body.source.project_id,
                        snapshot_id=body.source.snapshot_id, files=files)
    view = await containers.start(req.principal, agent=body.agent, prompt=body.prompt,
                                  promotion_id=body.promotion_id, source=source)
    return Started(success=True, data=Container(**_fields(req, view)))


async def get(req: ApiRequest) -> Found:
    containers: Containers = req.shepherd.containers
    view = await containers.get(req.principal, req.path("containerId"))
    ended = Containers.outcome_of(view)
    return Found(success=True, data=ContainerDetail(
        **_fields(req, view), task_id=view.container.task_id, outcome=ended["outcome"], reason=ended["reason"]))


_TAG = "cloud coding containers (Eliza)"
ROUTES = [
    Route("POST", "/api/cloud/coding-containers", start,
          "Start an agent (claude, codex or opencode) on a promotion, or on source.files promoted first; 503 while "
          "no runner can take containers", response=Started, body=StartIn,
          errors=(400, 401, 403, 404, 413, 503), tag=_TAG, operation_id="elizaStartCodingContainer",
          field_errors={"agent": FieldError("INVALID_AGENT", f"agent must be one of {', '.join(AGENTS)}")},
          max_body=MAX_REQUEST_BYTES),
    Route("GET", "/api/cloud/coding-containers/{containerId}", get,
          "A container's status and its task's outcome (Shepherd's addition to the seed)", response=Found,
          errors=(401, 403, 404), tag=_TAG, operation_id="elizaGetCodingContainer",
          patterns={"containerId": r"(?!promotions$)[^{}/]+"}),
]
