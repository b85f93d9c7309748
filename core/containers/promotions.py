"""Promoted workspaces: a bundle of files kept as a git repository whose first commit is the snapshot (author
Shepherd, message `snapshot <snapshotId>`), so that everything a container's agent or a sync changes later is a
diff against it. The repository lives at `<data dir>/promotions/<org>/<promotion id>`, a bare repository a task's
workspace is cloned from; its path is Shepherd's own, derived from the row, never taken from a request."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from sqlmodel import select

from core.clock import utcnow
from core.containers import gitops
from core.containers.bundles import BundleFile
from core.errors import NotFound, Unavailable, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.store.db import Database
from core.store.models import Promotion

AGENTS = ("claude", "codex", "opencode")  # the agents a coding container may run (the seed's list)
BRANCH = "main"
MOUNT_ROOT = "/workspace"  # where a container's agent sees its workspace: /workspace/<projectId>
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
MAX_SNAPSHOT_ID = 200


def check_agent(agent: str | None, where: str) -> str | None:
    if agent is not None and agent not in AGENTS:
        raise ValidationFailed(f"{where}: {str(agent)[:40]!r} is not one of {', '.join(AGENTS)}",
                               code="INVALID_AGENT")
    return agent


def check_project_id(project_id: str) -> str:
    """A project id names a folder (/workspace/<projectId>): one safe path segment."""
    if not isinstance(project_id, str) or not _SEGMENT.match(project_id) or project_id.strip(".") == "":
        raise ValidationFailed(f"source.projectId: {str(project_id)[:80]!r} is not a usable project id (1-100 of "
                               "letters, digits, `.`, `_` and `-`, starting with a letter or digit)",
                               code="INVALID_PROJECT_ID")
    return project_id


def _check_snapshot_id(snapshot_id: str | None) -> str | None:
    if snapshot_id is None:
        return None
    if (not isinstance(snapshot_id, str) or not snapshot_id.strip() or len(snapshot_id) > MAX_SNAPSHOT_ID
            or any(ord(c) < 32 or c == "\x7f" for c in snapshot_id)):
        raise ValidationFailed(f"source.snapshotId: 1-{MAX_SNAPSHOT_ID} printable characters",
                               code="INVALID_SNAPSHOT_ID")
    return snapshot_id


def _commit_stream(files: Sequence[BundleFile], message: str) -> bytes:
    """A git fast-import stream of one commit holding `files` (each regular, not executable)."""
    now = int(time.time())
    who = f"Shepherd <shepherd@localhost> {now} +0000"
    msg = message.encode()
    out = [f"commit refs/heads/{BRANCH}\nauthor {who}\ncommitter {who}\ndata {len(msg)}\n".encode(), msg, b"\n"]
    for f in files:
        out += [f"M 100644 inline {gitops.quote(f.path)}\ndata {len(f.data)}\n".encode(), f.data, b"\n"]
    out.append(b"done\n")
    return b"".join(out)


class Promotions:
    """Create and read promotions; `root` is the data directory's promotions folder (None: Shepherd has no data
    directory, as in a core built without a workspace root, and cannot keep promotions)."""

    def __init__(self, db: Database, root: Path | None) -> None:
        self.db = db
        self.root = root

    def repo_path(self, promotion: Promotion) -> Path:
        """The promotion's repository (a bare git repository), from the row alone."""
        if self.root is None:
            raise Unavailable("promotions need Shepherd's data directory, and this process has none",
                              code="CONTAINERS_UNAVAILABLE")
        for part in (promotion.org_id, promotion.id):  # both Shepherd's own ids; checked all the same
            if not _SEGMENT.match(part):
                raise ValidationFailed(f"{part[:80]!r} cannot name a folder", code="INVALID_ID")
        return self.root / promotion.org_id / promotion.id

    async def create(
        self, principal: Principal, *, source_kind: str, project_id: str, snapshot_id: str | None,
        files: Sequence[BundleFile], preferred_agent: str | None = None,
    ) -> Promotion:
        """Store `files` (checked already: core.containers.bundles) as a new promotion's first commit."""
        principal.require(Scope.WRITE, "promoting a bundle")
        if not isinstance(source_kind, str) or not _KIND.match(source_kind):
            raise ValidationFailed("source.sourceKind: a short lower-case word such as `project`",
                                   code="INVALID_SOURCE_KIND")
        check_project_id(project_id)
        snapshot_id = _check_snapshot_id(snapshot_id)
        check_agent(preferred_agent, "preferredAgent")
        row = Promotion(
            id=new_id("promotion"), org_id=principal.org_id, source_kind=source_kind, project_id=project_id,
            snapshot_id=snapshot_id, preferred_agent=preferred_agent, workspace_path=f"{MOUNT_ROOT}/{project_id}",
            base_sha="", file_count=len(files), total_bytes=sum(len(f.data) for f in files),
            created_by=principal.identity, created_at=utcnow(),
        )
        repo = self.repo_path(row)
        repo.mkdir(parents=True)
        try:
            await gitops.run("init", "-q", "--bare", "--template=", "-b", BRANCH, str(repo), git_dir=repo)
            stream = _commit_stream(files, f"snapshot {snapshot_id}" if snapshot_id else "snapshot")
            await gitops.run("fast-import", "--quiet", "--done", git_dir=repo, stdin=stream)
            row.base_sha = (await gitops.run("rev-parse", f"refs/heads/{BRANCH}", git_dir=repo)).text
            async with self.db.write() as session:
                session.add(row)
        except BaseException:
            shutil.rmtree(repo, ignore_errors=True)  # a repository without its row is nobody's
            raise
        return row

    async def get(self, principal: Principal, promotion_id: str) -> Promotion:
        """The org's promotion; another org's is not found, as one that does not exist."""
        principal.require(Scope.READ, "reading a promotion")
        async with self.db.read() as session:
            row = (await session.exec(select(Promotion).where(
                Promotion.id == promotion_id, Promotion.org_id == principal.org_id))).first()
        if row is None:
            raise NotFound(f"no promotion {promotion_id[:80]!r} in this org", code="PROMOTION_NOT_FOUND")
        return row
