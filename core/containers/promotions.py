"""Promoted workspaces: a bundle of files kept as a git repository at `<data dir>/promotions/<org>/<id>` whose
first commit is the snapshot (author Shepherd, "snapshot <snapshotId>"), so every later change is a diff against
it. A container's task clones it (core.tasks.turns): the path is Shepherd's own, never one a request named.

(The containers helper's minimal version, written to the interface the promotions helper builds; one is kept.)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqlmodel import select

from core.clock import utcnow
from core.containers.bundles import BundleFile
from core.errors import NotFound, Unavailable, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.runners.workspace import git
from core.store.db import Database
from core.store.models import Promotion

WORKSPACE_PREFIX = "/workspace"
BASE_BRANCH = "main"
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_IDENTITY = ("-c", "user.name=Shepherd", "-c", "user.email=shepherd@localhost")


def workspace_path(project_id: object) -> str:
    """`/workspace/<projectId>`: where an agent sees the promoted workspace; the project id a safe single segment."""
    if not isinstance(project_id, str) or not _PROJECT.match(project_id) or set(project_id) <= {"."}:
        raise ValidationFailed(f"source.projectId: {str(project_id)[:80]!r} is not a project id (1-100 letters, "
                               "digits, '.', '_' or '-', beginning with a letter or digit)", code="INVALID_PROJECT_ID")
    return f"{WORKSPACE_PREFIX}/{project_id}"


class Promotions:
    def __init__(self, db: Database, root: Path | None) -> None:
        self.db = db
        self.root = root  # <data dir>/promotions (None: this core keeps no workspaces)

    def repo_path(self, promotion: Promotion) -> Path:
        """The promotion's repository: from its row's ids only, never from a request."""
        if self.root is None:
            raise Unavailable("this Shepherd keeps no workspaces (no data directory)", code="CONTAINERS_UNAVAILABLE")
        return self.root / promotion.org_id / promotion.id

    async def create(self, principal: Principal, *, source_kind: str, project_id: str, snapshot_id: str | None,
                     files: Sequence[BundleFile], preferred_agent: str | None) -> Promotion:
        principal.require(Scope.WRITE, "promoting a bundle")
        where = workspace_path(project_id)
        promotion = Promotion(
            id=new_id("promotion"), org_id=principal.org_id, source_kind=source_kind, project_id=project_id,
            snapshot_id=snapshot_id, preferred_agent=preferred_agent, workspace_path=where, base_sha="",
            file_count=len(files), total_bytes=sum(len(f.data) for f in files), created_by=principal.name[:200],
            created_at=utcnow(),
        )
        repo = self.repo_path(promotion)
        promotion.base_sha = await _make_repo(repo, files, f"snapshot {snapshot_id or promotion.id}")
        try:
            async with self.db.write() as session:
                session.add(promotion)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, repo, True)
            raise
        return promotion

    async def get(self, principal: Principal, promotion_id: str) -> Promotion:
        principal.require(Scope.READ, "reading a promotion")
        async with self.db.read() as session:
            found = (await session.exec(select(Promotion).where(
                Promotion.id == promotion_id, Promotion.org_id == principal.org_id))).first()
        if found is None:  # another org's is not found either
            raise NotFound(f"promotion {promotion_id[:80]} not found", code="PROMOTION_NOT_FOUND")
        return found


async def _make_repo(repo: Path, files: Sequence[BundleFile], message: str) -> str:
    """Write the files into a new repository at `repo` (made aside, then renamed into place) and commit them."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix=".promoting-", dir=repo.parent))
    try:
        await asyncio.to_thread(_write, made, files)
        await git("init", "-q", "--template=", "-b", BASE_BRANCH, cwd=made)
        await git("add", "-A", cwd=made)
        await git(*_IDENTITY, "commit", "-q", "--allow-empty", "-m", message, cwd=made)
        sha = (await git("rev-parse", "HEAD", cwd=made)).strip()
        os.rename(made, repo)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, made, True)
        raise
    return sha


def _write(root: Path, files: Sequence[BundleFile]) -> None:
    for item in files:  # paths checked by core.containers.bundles: relative, inside, no .git
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.data)
