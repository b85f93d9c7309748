"""Eliza's Cloud Coding Containers (shared/seeds/000): promoting a bundle, the Workbench VFS shortcut, and syncing a
container's workspace. Answers in the seed's `{success, data}` envelope; failures in Shepherd's `{error, code,
status}` envelope, as the other Eliza routes. The work is core's (core.containers); this module translates."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Result, Route
from core.clock import iso
from core.containers.bundles import MAX_REQUEST_BYTES, BundleFile, bundle
from core.containers.promotions import AGENTS
from core.containers.sync import Direction, SyncRequest
from core.store.models import Promotion

Agent = Literal["claude", "codex", "opencode"]  # core.containers.promotions.AGENTS


class FileIn(ApiModel):
    path: str = Field(max_length=1024)
    contents: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


class SourceIn(ApiModel):
    source_kind: str = Field(max_length=40, description="what the bundle is: `project`")
    project_id: str = Field(max_length=100, description="one path segment; the workspace is /workspace/<projectId>")
    snapshot_id: str | None = Field(None, max_length=200, description="names the first commit; a sync's default "
                                                                      "baseRevision")
    files: list[FileIn] = Field(description="the bundle: relative paths, each at most 5 MiB, 50 MiB in all")


class PromoteIn(ApiModel):
    source: SourceIn
    preferred_agent: Agent | None = None


class ShortcutIn(ApiModel):
    """The Workbench shortcut's body: the project is the path's; Shepherd keeps no VFS, so the files come along."""

    snapshot_id: str | None = Field(None, max_length=200)
    files: list[FileIn]
    preferred_agent: Agent | None = None


class SourceOut(ApiModel):
    source_kind: str
    project_id: str


class PromotionOut(ApiModel):
    promotion_id: str
    status: Literal["accepted"]
    source: SourceOut
    workspace_path: str
    created_at: str


class PromotionAnswer(ApiModel):
    success: bool
    data: PromotionOut


class TargetIn(ApiModel):
    source_kind: str | None = Field(None, max_length=40)
    project_id: str | None = Field(None, max_length=100)
    base_revision: str | None = Field(None, max_length=200, description="the promotion's snapshotId (default) or a "
                                                                        "commit of the workspace")


class PatchIn(ApiModel):
    patch: str = Field(description="a unified diff (git diff or diff -u), paths a/… b/…")
    path: str | None = Field(None, max_length=1024)


class PathIn(ApiModel):
    path: str = Field(max_length=1024)


class SyncIn(ApiModel):
    direction: Direction
    target: TargetIn | None = None
    changed_files: list[FileIn] = Field(default_factory=list)
    deleted_files: list[str | PathIn] = Field(default_factory=list, max_length=10_000)
    patches: list[str | PatchIn] = Field(default_factory=list, max_length=1000,
                                         description="unified diffs against baseRevision, applied three-way")


class FileOut(ApiModel):
    path: str
    contents: str
    encoding: Literal["utf-8", "base64"]


class TargetOut(ApiModel):
    source_kind: str
    project_id: str
    base_revision: str | None = None


class SyncOut(ApiModel):
    sync_id: str
    container_id: str
    status: str
    direction: Direction
    target: TargetOut
    changed_files: list[FileOut] = Field(description="push: as sent; pull and roundtrip: what changed since "
                                                      "baseRevision, base64")
    deleted_files: list[str]
    patches: list[str | PatchIn]
    created_at: str


class SyncAnswer(ApiModel):
    success: bool
    data: SyncOut



async def fail_closed(req: ApiRequest) -> None:
    """As Eliza's control plane: no runner to take containers (none alive, none ready) is a 503 with why, never a
    fake success."""
    await req.shepherd.containers.require_available()


def _files(files: list[FileIn], where: str) -> list[BundleFile]:
    return bundle([f.model_dump() for f in files], where)


def _promotion_out(row: Promotion) -> PromotionAnswer:
    return PromotionAnswer(success=True, data=PromotionOut(
        promotion_id=row.id, status="accepted", source=SourceOut(source_kind=row.source_kind,
                                                                 project_id=row.project_id),
        workspace_path=row.workspace_path, created_at=iso(row.created_at, "milliseconds")))


async def promote(req: ApiRequest) -> PromotionAnswer:
    body: PromoteIn = req.body
    await fail_closed(req)
    row = await req.shepherd.promotions.create(
        req.principal, source_kind=body.source.source_kind, project_id=body.source.project_id,
        snapshot_id=body.source.snapshot_id, files=_files(body.source.files, "source.files"),
        preferred_agent=body.preferred_agent)
    return _promotion_out(row)


async def promote_project(req: ApiRequest) -> PromotionAnswer:
    body: ShortcutIn = req.body
    await fail_closed(req)
    row = await req.shepherd.promotions.create(
        req.principal, source_kind="project", project_id=req.path("id"), snapshot_id=body.snapshot_id,
        files=_files(body.files, "files"), preferred_agent=body.preferred_agent)
    return _promotion_out(row)


def _b64(f: BundleFile) -> FileOut:
    return FileOut(path=f.path, contents=base64.b64encode(f.data).decode(), encoding="base64")


async def sync(req: ApiRequest) -> Result:
    body: SyncIn = req.body
    await fail_closed(req)
    target = body.target or TargetIn()
    done = await req.shepherd.syncs.sync(req.principal, req.path("containerId"), SyncRequest(
        direction=body.direction, base_revision=target.base_revision,
        changed=_files(body.changed_files, "changedFiles"),
        deleted=[d if isinstance(d, str) else d.path for d in body.deleted_files],
        patches=[p if isinstance(p, str) else p.patch for p in body.patches],
    ))
    if body.direction == Direction.PUSH:
        changed = [FileOut(path=f.path, contents=f.contents, encoding=f.encoding) for f in body.changed_files]
        deleted = [d if isinstance(d, str) else d.path for d in body.deleted_files]
    else:
        changed, deleted = [_b64(f) for f in done.exported], done.removed
    answer: Any = SyncAnswer(success=True, data=SyncOut(
        sync_id=done.sync.id, container_id=done.container.id, status=done.sync.status, direction=body.direction,
        target=TargetOut(source_kind=target.source_kind or done.promotion.source_kind,
                         project_id=target.project_id or done.promotion.project_id,
                         base_revision=target.base_revision),
        changed_files=changed, deleted_files=deleted, patches=body.patches,
        created_at=iso(done.sync.created_at, "milliseconds")))
    return Result(answer, status=202)


_TAG = "cloud coding containers (Eliza)"
_AGENT_ERROR = FieldError("INVALID_AGENT", f"preferredAgent must be one of {', '.join(AGENTS)}")
_DIRECTION_ERROR = FieldError("INVALID_DIRECTION", "direction must be push, pull or roundtrip")
ROUTES = [
    Route("POST", "/api/cloud/coding-containers/promotions", promote,
          "Promote a bundle of files to a workspace (a git repository whose first commit is the snapshot); 503 when "
          "no runner can take containers", response=PromotionAnswer, body=PromoteIn,
          errors=(400, 401, 403, 413, 503), tag=_TAG, operation_id="elizaPromote",
          field_errors={"preferredAgent": _AGENT_ERROR}, max_body=MAX_REQUEST_BYTES),
    Route("POST", "/api/workbench/vfs/projects/{id}/promote-to-cloud", promote_project,
          "The Workbench shortcut: promote a project's files (the body carries them: Shepherd keeps no VFS)",
          response=PromotionAnswer, body=ShortcutIn, errors=(400, 401, 403, 413, 503), tag=_TAG,
          operation_id="elizaPromoteProject", field_errors={"preferredAgent": _AGENT_ERROR},
          max_body=MAX_REQUEST_BYTES),
    Route("POST", "/api/cloud/coding-containers/{containerId}/sync", sync,
          "Push files, deletions and patches (applied three-way, all or nothing: 409 PATCH_CONFLICT names the paths) "
          "to a container's workspace, pull what changed since baseRevision (base64), or both; 409 while a turn runs",
          response=SyncAnswer, status=202, body=SyncIn, errors=(400, 401, 403, 404, 409, 413, 503), tag=_TAG,
          operation_id="elizaSyncContainer", field_errors={"direction": _DIRECTION_ERROR},
          max_body=MAX_REQUEST_BYTES),
]
