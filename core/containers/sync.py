"""Syncing a coding container's workspace: `push` writes changed files, removes deleted ones and applies patches
(all of it or nothing: core.containers.patches), `pull` exports what changed since a base revision, `roundtrip`
does both. The workspace is Shepherd's copy of the container's task (`workspace_root/<task id>`); a sync is refused
while a turn runs, because the agent writes there then. Every sync is recorded (ContainerSync)."""

from __future__ import annotations

import asyncio
import re
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sqlmodel import select

from core.clock import utcnow
from core.containers import gitops, patches, scratch
from core.containers.bundles import MAX_BUNDLE_BYTES, BundleFile, TooLarge, clean_path
from core.containers.promotions import Promotions
from core.errors import Conflict, NotFound, Unavailable, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.store.db import Database
from core.store.models import CodingContainer, ContainerSync, Promotion, Task
from core.tasks.state import ACTIVE, TaskStatus

_SHA = re.compile(r"^[0-9a-f]{7,64}$")
READY = "ready"  # the seed's status of a sync carried out


class Direction(StrEnum):
    PUSH = "push"
    PULL = "pull"
    ROUNDTRIP = "roundtrip"


@dataclass(frozen=True)
class SyncRequest:
    direction: Direction
    base_revision: str | None = None  # the promotion's snapshotId (default) or a commit of the workspace
    changed: list[BundleFile] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # raw paths, checked here
    patches: list[str] = field(default_factory=list)  # unified diffs against base_revision


@dataclass(frozen=True)
class SyncDone:
    sync: ContainerSync
    container: CodingContainer
    promotion: Promotion
    exported: list[BundleFile]  # pull and roundtrip: the files changed since the base revision
    removed: list[str]  # pull and roundtrip: the paths deleted since


class Syncs:
    def __init__(self, db: Database, promotions: Promotions, workspace_root: Path | None) -> None:
        self.db = db
        self.promotions = promotions
        self.workspace_root = workspace_root
        self._locks: dict[str, asyncio.Lock] = {}  # one sync of a container at a time in this process

    async def _load(self, principal: Principal, container_id: str) -> tuple[CodingContainer, Task | None, Promotion]:
        async with self.db.read() as session:
            box = (await session.exec(select(CodingContainer).where(
                CodingContainer.id == container_id, CodingContainer.org_id == principal.org_id))).first()
            if box is None:
                raise NotFound(f"no coding container {container_id[:80]!r} in this org", code="CONTAINER_NOT_FOUND")
            task = await session.get(Task, box.task_id)
            promotion = (await session.exec(select(Promotion).where(
                Promotion.id == box.promotion_id, Promotion.org_id == principal.org_id))).first()
        if promotion is None:
            raise NotFound(f"the promotion of container {box.id} is gone", code="PROMOTION_NOT_FOUND")
        return box, task, promotion

    def _workspace(self, box: CodingContainer, task: Task | None) -> Path:
        if self.workspace_root is None:
            raise Unavailable("syncing needs Shepherd's data directory, and this process has none",
                              code="CONTAINERS_UNAVAILABLE")
        if task is None or task.org_id != box.org_id:
            raise Conflict(f"container {box.id} has stopped: its task is deleted, and its workspace with it",
                           code="CONTAINER_STOPPED")
        if TaskStatus(task.status) in ACTIVE:
            raise Conflict(f"container {box.id} is {task.status}: its agent writes in the workspace now; sync once "
                           "its turn is over", code="CONTAINER_BUSY")
        workspace = self.workspace_root / task.id
        if not workspace.is_dir() or workspace.is_symlink():
            raise Conflict(f"container {box.id} has no workspace yet (its task is {task.status}); sync once it has "
                           "started", code="WORKSPACE_NOT_READY")
        return workspace

    async def _base(self, git_dir: Path, promotion: Promotion, revision: str | None) -> str:
        """The commit `revision` names: the snapshot (by its id or its commit), or a commit of the workspace that
        descends from the snapshot."""
        if revision is None or revision in (promotion.snapshot_id, promotion.base_sha):
            return promotion.base_sha
        why = (f"baseRevision {revision[:80]!r} is neither the promotion's snapshotId nor a commit of the "
               "container's workspace")
        if not _SHA.match(revision):
            raise Conflict(why, code="UNKNOWN_REVISION")
        found = await gitops.run("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", git_dir=git_dir,
                                 check=False)
        if found.code != 0:
            raise Conflict(why, code="UNKNOWN_REVISION")
        sha = found.text
        ancestor = await gitops.run("merge-base", "--is-ancestor", promotion.base_sha, sha, git_dir=git_dir,
                                    check=False)
        if ancestor.code != 0:
            raise Conflict(why + " (it does not descend from the snapshot)", code="UNKNOWN_REVISION")
        return sha

    async def sync(self, principal: Principal, container_id: str, request: SyncRequest) -> SyncDone:
        pushing = request.direction in (Direction.PUSH, Direction.ROUNDTRIP)
        principal.require(Scope.WRITE if pushing else Scope.READ, f"a {request.direction.value} sync")
        deleted = [clean_path(p, f"deletedFiles[{i}]") for i, p in enumerate(request.deleted)]
        for i, patch in enumerate(request.patches):
            patches.named_paths(patch, f"patches[{i}]")  # a path out of bounds is a 400 before anything else
        box, task, promotion = await self._load(principal, container_id)
        workspace = self._workspace(box, task)
        lock = self._locks.setdefault(box.id, asyncio.Lock())
        async with lock:
            with tempfile.TemporaryDirectory(prefix="shepherd-sync-") as tmp:
                exported, removed = await self._carry_out(Path(tmp), workspace, promotion, request, deleted)
        row = ContainerSync(
            id=new_id("sync"), org_id=principal.org_id, container_id=box.id, direction=request.direction.value,
            status=READY, base_revision=request.base_revision, changed=len(request.changed), deleted=len(deleted),
            patches=len(request.patches), created_by=principal.identity, created_at=utcnow(),
        )
        async with self.db.write() as session:
            session.add(row)
        return SyncDone(row, box, promotion, exported, removed)

    async def _carry_out(self, tmp: Path, workspace: Path, promotion: Promotion, request: SyncRequest,
                         deleted: list[str]) -> tuple[list[BundleFile], list[str]]:
        git_dir = await scratch.open_scratch(tmp / "repo", self.promotions.repo_path(promotion), workspace)
        base = await self._base(git_dir, promotion, request.base_revision)
        now = await scratch.workspace_tree(git_dir, workspace, start=base, index=tmp / "now.idx")
        final = now
        if request.direction in (Direction.PUSH, Direction.ROUNDTRIP):
            ours = await self._with_files(git_dir, tmp, now, request.changed, deleted)
            final = ours
            if request.patches:
                theirs = await patches.patched_tree(request.patches, base=base, git_dir=git_dir,
                                                    index=tmp / "patched.idx")
                final = await patches.merged_tree(base=base, ours=ours, theirs=theirs, git_dir=git_dir)
            if final != now:
                todo = await scratch.changes(git_dir, now, final)
                # only a patch can make one (git reads modes in forms named_paths may not know): the workspace would
                # not get it, and the sync would answer a change it did not make
                odd = [c.path for c in todo if c.status != "D" and c.mode not in scratch.REGULAR]
                if odd:
                    raise ValidationFailed(f"patches: {', '.join(odd)[:300]} would be a symlink or a submodule, which "
                                           "a sync does not write", code="INVALID_PATCH")
                await scratch.write_changes(git_dir, workspace, todo)
        if request.direction == Direction.PUSH:
            return [], []
        return await self._export(git_dir, base, final)

    async def _with_files(self, git_dir: Path, tmp: Path, tree: str, changed: list[BundleFile],
                          deleted: list[str]) -> str:
        """`tree` with the changed files written (an executable keeps its mode) and the deleted ones removed."""
        if not changed and not deleted:
            return tree
        env = {"GIT_INDEX_FILE": str(tmp / "ours.idx")}
        await gitops.run("read-tree", tree, git_dir=git_dir, env=env)
        listed = await gitops.run("ls-files", "-s", "-z", git_dir=git_dir, env=env)
        modes = {}
        for entry in listed.out.decode(errors="surrogateescape").split("\0"):
            if entry:
                meta, path = entry.split("\t", 1)
                modes[path] = meta.split(" ")[0]
        info = [b"0 " + b"0" * 40 + b"\t" + p.encode(errors="surrogateescape") + b"\0" for p in deleted]  # 0: remove
        if changed:
            folder = tmp / "blobs"
            folder.mkdir()
            for i, f in enumerate(changed):
                (folder / str(i)).write_bytes(f.data)
            names = "".join(f"{folder / str(i)}\n" for i in range(len(changed))).encode()
            shas = (await gitops.run("hash-object", "-w", "--no-filters", "--stdin-paths", git_dir=git_dir,
                                     stdin=names)).text.split()
            info += [f"{'100755' if modes.get(f.path) == '100755' else '100644'} {sha}\t".encode()
                     + f.path.encode(errors="surrogateescape") + b"\0" for f, sha in zip(changed, shas, strict=True)]
        await gitops.run("update-index", "--add", "--replace", "-z", "--index-info", git_dir=git_dir, env=env,
                         stdin=b"".join(info))
        return (await gitops.run("write-tree", git_dir=git_dir, env=env)).text

    async def _export(self, git_dir: Path, base: str, tree: str) -> tuple[list[BundleFile], list[str]]:
        """The files of `tree` that differ from `base` (regular files only: a symlink or a submodule is not a file
        a client can write) and the paths `tree` no longer has."""
        todo = await scratch.changes(git_dir, f"{base}^{{tree}}", tree)
        files = [c for c in todo if c.status != "D" and c.mode in scratch.REGULAR]
        sizes = await gitops.run("cat-file", "--batch-check=%(objectsize)", git_dir=git_dir,
                                 stdin="".join(f"{c.sha}\n" for c in files).encode()) if files else None
        total = sum(int(n) for n in sizes.text.split()) if sizes else 0
        if total > MAX_BUNDLE_BYTES:
            raise TooLarge(f"the files changed since the base revision are {total} bytes, more than one sync answers "
                           f"({MAX_BUNDLE_BYTES} bytes): pull from a later baseRevision")
        contents = await scratch.blobs(git_dir, [c.sha for c in files])
        return [BundleFile(c.path, contents[c.sha]) for c in files], [c.path for c in todo if c.status == "D"]
