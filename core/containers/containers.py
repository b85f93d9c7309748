"""Coding containers (the Eliza dialect's "Start Coding Container"): an agent run on a promoted workspace. A
container is a task whose workspace is cloned from the promotion's repository and whose agent sees it at the
promotion's workspacePath (core.tasks.turns); its status is the task's, in the seed's words (`container_status`).

Fail closed, as the seed's control plane does: no container starts while no runner can take it (`available`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.containers.bundles import BundleFile
from core.containers.promotions import AGENTS, Promotions
from core.errors import NotFound, Unavailable, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.store.db import Database
from core.store.models import CodingContainer, Promotion, RunnerNode, Task
from core.tasks.service import RUNNER_STALE_S, Tasks
from core.tasks.state import Outcome, TaskStatus


class ContainerStatus(StrEnum):
    REQUESTED = "requested"
    PENDING = "pending"
    BUILDING = "building"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


_ENDED_WELL = frozenset({Outcome.SUCCEEDED.value, Outcome.CANCELLED.value})


def container_status(task: Task | None) -> ContainerStatus:
    """The seed's status of a container from its task: requested (created, no runner has claimed it yet), pending
    (waiting for a runner or for capacity), building (its workspace being prepared), running (its agent at work,
    paused, or waiting on people), failed (failed, timed out, interrupted, denied, over budget) or stopped (finished
    otherwise: succeeded or cancelled; or its task deleted)."""
    if task is None:
        return ContainerStatus.STOPPED
    status = TaskStatus(task.status)
    if status is TaskStatus.PENDING:
        return ContainerStatus.REQUESTED if task.turns == 0 and task.runner_id is None else ContainerStatus.PENDING
    if status is TaskStatus.QUEUED:
        return ContainerStatus.PENDING
    if status is TaskStatus.INITIALIZING:
        return ContainerStatus.BUILDING
    if status in (TaskStatus.RUNNING, TaskStatus.PAUSED):
        return ContainerStatus.RUNNING
    if status is TaskStatus.AWAITING:  # a gated action of its own waits for people: its start, or after a turn
        return ContainerStatus.PENDING if task.turns == 0 else ContainerStatus.RUNNING
    return ContainerStatus.STOPPED if task.outcome in _ENDED_WELL else ContainerStatus.FAILED


@dataclass(frozen=True)
class Source:
    """A container's `source`: the bundle to promote first (files checked by core.containers.bundles)."""

    source_kind: str
    project_id: str
    snapshot_id: str | None
    files: Sequence[BundleFile]


@dataclass(frozen=True)
class ContainerView:
    container: CodingContainer
    task: Task | None  # None: deleted since
    status: ContainerStatus
    mount_path: str  # where its agent sees the workspace (its workspacePath and volume mount path)


class Containers:
    def __init__(self, db: Database, tasks: Tasks, promotions: Promotions) -> None:
        self.db = db
        self.tasks = tasks
        self.promotions = promotions

    async def available(self) -> str | None:
        """None when a runner can take containers now; else why not: no runner alive, or every live runner not
        ready (its engine unreachable, its required sandbox weak: RunnerNode.not_ready, from `Runner.ready`)."""
        cutoff = utcnow() - timedelta(seconds=RUNNER_STALE_S)
        async with self.db.read() as session:
            nodes = list(await session.exec(select(RunnerNode).where(col(RunnerNode.heartbeat_at) > cutoff)))
        if not nodes:
            return "no runner is alive to run containers (start `shepherd serve` or `shepherd worker`)"
        if any(node.not_ready is None for node in nodes):
            return None
        whys = sorted({f"{node.runner_kind or 'runner'}: {node.not_ready}" for node in nodes})
        return "no runner can start containers now: " + "; ".join(whys)

    async def require_available(self) -> None:
        why = await self.available()
        if why is not None:
            raise Unavailable(why, code="CONTAINERS_UNAVAILABLE")

    async def start(self, principal: Principal, *, agent: str, prompt: str, promotion_id: str | None = None,
                    source: Source | None = None) -> ContainerView:
        """A container running `agent` on a promotion: the one named, or (with `source.files`) a new one of those
        files. Its task and its row are made in one transaction."""
        principal.require(Scope.WRITE, "starting a coding container")
        if agent not in AGENTS:
            raise ValidationFailed(f"agent: {str(agent)[:40]!r} is not one of {', '.join(AGENTS)}",
                                   code="INVALID_AGENT")
        if source is None and promotion_id is None:
            raise ValidationFailed("a container starts from promotionId or source.files", code="NO_SOURCE")
        await self.require_available()
        promotion = await self._promotion(principal, agent, promotion_id, source)
        container_id = new_id("container")

        async def add_row(session: AsyncSession, task: Task) -> None:
            session.add(CodingContainer(
                id=container_id, org_id=principal.org_id, task_id=task.id, promotion_id=promotion.id, agent=agent,
                workspace_path=promotion.workspace_path, file_count=promotion.file_count,
                total_bytes=promotion.total_bytes, created_by=principal.name[:200], created_at=task.created_at))

        await self.tasks.create(principal, prompt=prompt, runtime=agent, display_name=f"container {container_id}",
                                promotion_id=promotion.id, mount_path=promotion.workspace_path, also=add_row)
        return await self.get(principal, container_id)

    async def _promotion(self, principal: Principal, agent: str, promotion_id: str | None,
                         source: Source | None) -> Promotion:
        """With files, a new promotion of them (a promotionId beside them is not used: the answer names the new
        one); without, the promotion named, which must be this org's."""
        if source is not None and source.files:
            return await self.promotions.create(
                principal, source_kind=source.source_kind, project_id=source.project_id,
                snapshot_id=source.snapshot_id, files=source.files, preferred_agent=agent)
        if promotion_id is None:
            raise ValidationFailed("source.files is empty and no promotionId names a promotion",
                                   code="NO_SOURCE")
        return await self.promotions.get(principal, promotion_id)

    async def get(self, principal: Principal, container_id: str) -> ContainerView:
        principal.require(Scope.READ, "reading a coding container")
        async with self.db.read() as session:
            row = (await session.exec(select(CodingContainer).where(
                CodingContainer.id == container_id, CodingContainer.org_id == principal.org_id))).first()
            if row is None:  # another org's is not found either
                raise NotFound(f"container {container_id[:80]} not found", code="CONTAINER_NOT_FOUND")
            task = await session.get(Task, row.task_id)
        return ContainerView(row, task, container_status(task), self.mount_path(row, task))

    def mount_path(self, row: CodingContainer, task: Task | None) -> str:
        """Where its agent sees the workspace: the workspacePath where the runner mounts it there (a remote engine,
        the local sandbox); else the real path of Shepherd's copy, in which the agent runs (the local runner
        without a sandbox cannot show a folder elsewhere)."""
        if self.tasks.runner_capabilities.mounts:
            return row.workspace_path
        if task is not None and task.workspace:
            return task.workspace
        root = self.tasks.workspace_root
        return str(Path(root) / row.task_id) if root is not None else row.workspace_path

    @staticmethod
    def outcome_of(view: ContainerView) -> Mapping[str, str | None]:
        task = view.task
        if task is None:
            return {"outcome": None, "reason": "its task was deleted"}
        reason = (task.evidence or {}).get("reason") if isinstance(task.evidence, dict) else None
        return {"outcome": task.outcome, "reason": reason or task.state_message or None}
