"""A scratch repository for one sync: a bare repository of Shepherd's own (its config is ours, so nothing the agent
wrote in its workspace's .git/config — hooks, fsmonitor, filters — ever runs) that borrows the objects of the
promotion and of the workspace through alternates. What a sync computes (the workspace's tree, the patched tree,
the merge) is written here and thrown away with it; the workspace itself is read as files and written last."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.containers import gitops
from core.errors import Conflict

REGULAR = ("100644", "100755")


@dataclass(frozen=True)
class Change:
    status: str  # A, M, T or D (git diff-tree)
    mode: str  # the new mode ("000000" when deleted)
    sha: str  # the new blob
    path: str


def _objects_of(workspace: Path) -> Path | None:
    """The workspace repository's object store, if it is a plain one of its own: a symlinked .git or objects, or
    alternates of its own (which could reach another org's repository), make it unusable and it is left out."""
    git = workspace / ".git"
    objects = git / "objects"
    for p in (git, objects):
        if not p.exists() or p.is_symlink() or not p.is_dir():
            return None
    if (objects / "info" / "alternates").exists() or (objects / "info").is_symlink():
        return None
    return objects


async def open_scratch(where: Path, promotion_repo: Path, workspace: Path) -> Path:
    """A bare repository at `where` seeing the promotion's objects (and the workspace's, when usable)."""
    where.mkdir()  # noqa: ASYNC240 (one folder of our own, before any process starts)
    await gitops.run("init", "-q", "--bare", "--template=", str(where), git_dir=where)
    borrowed = [promotion_repo / "objects"]
    if (own := _objects_of(workspace)) is not None:
        borrowed.append(own)
    (where / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (where / "objects" / "info" / "alternates").write_text("".join(f"{p.resolve()}\n" for p in borrowed))
    return where


async def workspace_tree(git_dir: Path, workspace: Path, *, start: str, index: Path) -> str:
    """The tree of the workspace's files as they are now (ignored files that `start` did not hold left out)."""
    env = {"GIT_INDEX_FILE": str(index)}
    await gitops.run("read-tree", start, git_dir=git_dir, env=env)
    added = await gitops.run("add", "-A", "--", ".", git_dir=git_dir, env=env, work_tree=workspace, check=False)
    if added.code != 0:  # the workspace's state, not a fault of Shepherd's: e.g. a `git init` of the agent's, no commit
        why = next((line.removeprefix("error: ") for line in added.err.splitlines() if line.startswith("error: ")),
                   added.err.strip().splitlines()[-1] if added.err.strip() else f"exit {added.code}")
        raise Conflict(f"the container's workspace cannot be read as files: {why[:300]}", code="WORKSPACE_CONFLICT")
    return (await gitops.run("write-tree", git_dir=git_dir, env=env)).text


async def changes(git_dir: Path, old: str, new: str) -> list[Change]:
    ran = await gitops.run("diff-tree", "-r", "-z", "--no-renames", old, new, git_dir=git_dir)
    fields = ran.out.decode(errors="surrogateescape").split("\0")
    out = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        _old_mode, new_mode, _old_sha, new_sha, status = meta[1:].split(" ")
        out.append(Change(status[0], new_mode, new_sha, path))
    return out


async def blobs(git_dir: Path, shas: list[str]) -> dict[str, bytes]:
    """The contents of blobs, read in one `git cat-file --batch`."""
    if not shas:
        return {}
    unique = list(dict.fromkeys(shas))
    ran = await gitops.run("cat-file", "--batch", git_dir=git_dir, stdin="".join(f"{s}\n" for s in unique).encode())
    out, at, data = {}, 0, ran.out
    for sha in unique:
        eol = data.index(b"\n", at)
        _, kind, size = data[at:eol].decode().split(" ")
        if kind != "blob":
            raise gitops.GitFailed(f"{sha} is a {kind}, not a file's contents")
        start = eol + 1
        out[sha] = data[start:start + int(size)]
        at = start + int(size) + 1
    return out


def _plain_dir(workspace: Path, rel: str, removed: set[str]) -> None:
    """Every existing folder on the way to `rel` must be a real folder inside the workspace (the agent may have
    left a symlink to anywhere); a file there is fine only when this sync removes it."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        sub = "/".join(parts[:i])
        try:
            mode = os.lstat(workspace / sub).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode) and sub not in removed:
            raise Conflict(f"{sub} is a symlink in the container's workspace: {rel} is not written through it",
                           code="WORKSPACE_CONFLICT")
        if not stat.S_ISDIR(mode) and sub not in removed:
            raise Conflict(f"{sub} is a file in the container's workspace, not the folder of {rel}",
                           code="WORKSPACE_CONFLICT")


async def write_changes(git_dir: Path, workspace: Path, todo: list[Change]) -> None:
    """Make the workspace's files what `todo` says: every check first, then removals, then writes."""
    removed = {c.path for c in todo if c.status == "D"}
    writes = [c for c in todo if c.status != "D" and c.mode in REGULAR]
    for c in writes:
        _plain_dir(workspace, c.path, removed)
        target = workspace / c.path
        if target.is_dir() and not target.is_symlink():
            raise Conflict(f"{c.path} is a folder in the container's workspace", code="WORKSPACE_CONFLICT")
    contents = await blobs(git_dir, [c.sha for c in writes])
    staging = _stage(workspace, writes, contents)  # every new content on disk first: a failure changes nothing
    try:
        for c in todo:
            if c.status == "D":
                target = workspace / c.path
                if target.is_symlink() or target.is_file():
                    target.unlink()
                parent = target.parent
                while parent != workspace and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()  # git keeps no empty folders: neither does a sync
                    parent = parent.parent
        for n, c in enumerate(writes):
            target = workspace / c.path
            target.parent.mkdir(parents=True, exist_ok=True)  # its folders were checked: none is a link
            os.replace(staging / str(n), target)  # a symlink there is replaced, never written through
    except OSError as exc:
        raise Conflict(f"the container's workspace could not be written ({exc.strerror or exc}): part of this sync "
                       "may be in it; pull to see what it holds", code="WORKSPACE_CONFLICT") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(workspace: Path, writes: list[Change], contents: dict[str, bytes]) -> Path:
    """Each write's content in a fresh folder of Shepherd's own inside the workspace (same filesystem: a rename puts
    each in place; made anew, so nothing the agent left can be in its way), or, when one cannot be written (a
    read-only workspace, a full disk), none of them and a 409."""
    def refused(exc: OSError) -> Conflict:
        return Conflict(f"the container's workspace could not be written ({exc.strerror or exc}); nothing of this "
                        "sync was", code="WORKSPACE_CONFLICT")

    try:
        staging = Path(tempfile.mkdtemp(prefix=".shepherd-sync-", dir=workspace))
    except OSError as exc:
        raise refused(exc) from None
    try:
        for n, c in enumerate(writes):
            fd = os.open(staging / str(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o755 if c.mode == "100755" else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(contents[c.sha])
            os.chmod(staging / str(n), 0o755 if c.mode == "100755" else 0o644)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise refused(exc) from None
    return staging
