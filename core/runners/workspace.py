"""Task workspaces: a clone of the repository on the task's own branch, or a fresh repository when no
repository is named (so that what the agent changed can always be counted)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from core.errors import ShepherdError
from core.runners import emptyrepo
from core.runners.repos import git_env
from core.tasks.evidence import MAX_DIFF_PATHS, DiffStats

GIT_TIMEOUT_S = 600.0
_GIT_IDENTITY = ("-c", "user.name=Shepherd", "-c", "user.email=shepherd@localhost")
# A workspace's repository gets none of git's template files (sample hooks, description, info/exclude): copying
# them was most of what `git init` cost (~30 of ~40 ms of CPU with the commit that follows), a hundred times over
# when a hundred tasks start, and Shepherd runs no hook anyway (SAFE_GIT).
_NO_TEMPLATE = "--template="


class WorkspaceError(ShepherdError):
    code = "WORKSPACE_ERROR"
    status = 500


async def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
              limit_s: float = GIT_TIMEOUT_S) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=env or git_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WorkspaceError(f"git {args[0]} took longer than {limit_s:.0f} s") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise WorkspaceError(f"git {args[0]} failed: {message[-1] if message else f'exit {proc.returncode}'}")
    return out.decode(errors="replace")


async def prepare(
    path: Path, *, source: str | None, base_branch: str | None, work_branch: str, env: dict[str, str] | None = None
) -> tuple[str, str]:
    """Create the workspace at `path`; returns (base branch, base commit). `env` is the clone's environment
    (core.runners.repos.Reach.env: pinned to the addresses checked)."""
    # Few processes on purpose: a hundred tasks starting at once pay for each one (bench/README.md).
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        branch = base_branch or "main"  # nominal: an empty workspace has only the task's branch
        snapshot = await _empty_snapshot(path.parent)
        if snapshot is not None:
            return branch, emptyrepo.write_empty(path, snapshot, work_branch)
        path.mkdir()  # noqa: ASYNC240 (one directory, before any process starts)
        await git("init", "-q", _NO_TEMPLATE, "-b", work_branch, cwd=path)  # no template to copy: make it here
        await git(*_GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", "empty workspace", cwd=path)
    else:
        branch_args = ["--branch", base_branch] if base_branch else []
        await git("clone", "-q", _NO_TEMPLATE, "--no-tags", *branch_args, "--", source, str(path), env=env)
        head = (path / ".git" / "HEAD").read_text().strip()  # noqa: ASYNC240 ("ref: refs/heads/main")
        branch = head.removeprefix("ref: refs/heads/")
        if work_branch != branch:  # the same: the task works on the branch it cloned (a pull request's head)
            await git("checkout", "-q", "-b", work_branch, cwd=path)
        (path / ".git" / "config").write_text(safe_config(source))  # noqa: ASYNC240 (a small file)
    sha = (await git("rev-parse", "HEAD", cwd=path)).strip()
    return branch, sha


async def _empty_snapshot(root: Path) -> emptyrepo.Snapshot | None:
    """The root's empty repository (with its one empty commit), read into memory: made once with git, then every
    empty workspace is written from it as files (a hundred tasks starting at once start no git process for it)."""
    template = root / emptyrepo.EMPTY
    snapshot = emptyrepo.cached(template)
    if snapshot is not None:
        return snapshot
    made_ref = template / ".git" / "refs" / "heads" / emptyrepo.EMPTY_BRANCH
    if not made_ref.is_file():  # noqa: ASYNC240 (a stat)
        # The tasks of this process starting together wait for one making (a hundred makings raced for it before:
        # two git processes each); other processes sharing the root may make one too: the first rename wins.
        loop = asyncio.get_running_loop()
        key = (id(loop), template)
        making = _making.get(key)
        if making is None or making.done():
            making = _making[key] = loop.create_task(_make_template(template))
            making.add_done_callback(lambda _: _making.pop(key, None))
        await asyncio.shield(making)
        if not made_ref.is_file():  # noqa: ASYNC240 (a stat)
            return None
    # read once: the tasks that waited for the making together find the first one's reading
    return emptyrepo.cached(template) or emptyrepo.read_snapshot(template)


_making: dict[tuple[int, Path], asyncio.Task[None]] = {}  # (event loop, template) -> its making under way


async def _make_template(template: Path) -> None:
    made = Path(tempfile.mkdtemp(prefix=".empty-", dir=template.parent))
    try:
        await git("init", "-q", _NO_TEMPLATE, "-b", emptyrepo.EMPTY_BRANCH, cwd=made)
        await git(*_GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", "empty workspace", cwd=made)
        shutil.rmtree(made / ".git" / "logs", ignore_errors=True)  # a reflog naming the template
        os.rename(made, template)  # whole or not at all, for every process sharing the root
    except (OSError, WorkspaceError):  # made meanwhile by another process (or not to be made: made in place instead)
        pass
    finally:
        shutil.rmtree(made, ignore_errors=True)


# Shepherd runs git in a workspace the agent wrote: no hooks of the agent's making run (as Shepherd,
# outside any sandbox), and the config is reset first (it could name filters, pagers or an fsmonitor).
SAFE_GIT = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *_GIT_IDENTITY)
_ORIGIN_URL = re.compile(r'^\[remote "origin"\]\s*$(?:\n(?!\[).*)*?\n\s*url\s*=\s*(.+)$', re.M)


def safe_config(origin: str | None) -> str:
    """A workspace's whole git config: the repository format and where it was cloned from. Nothing in it
    runs a command."""
    text = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n"
    if origin and "\n" not in origin and '"' not in origin:
        text += f'[remote "origin"]\n\turl = {origin}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n'
    return text


def _not_plain(root: Path) -> Path | None:
    """The first entry under `root` that is not a plain file or folder (a symlink, a FIFO, a device…)."""
    for folder, dirs, files in os.walk(root):  # never follows links: they are what it looks for
        for name in dirs + files:
            entry = Path(folder) / name
            try:
                mode = entry.lstat().st_mode
            except FileNotFoundError:
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return entry
    return None


def reset_config(path: Path) -> None:
    """Make the workspace's repository safe for Shepherd's own git commands, or refuse.

    The agent can write anything in its workspace. Before Shepherd runs git there (outside any sandbox),
    `.git`, `.git/objects` and `.git/refs` must be real directories (a `gitdir:` file or a symlink would
    point git at a repository and config of the agent's choosing), there must be no `commondir`, and
    `.git/config` is replaced by a safe one that keeps only the origin URL (a symlink in its place is
    removed, never written through). Shepherd never relies on that URL: its pushes name their own.

    Nothing else under `.git` may be a link or anything but a file or a folder either: git writes through
    what it finds there (COMMIT_EDITMSG, logs/HEAD, a folder of objects), as Shepherd's user, so a link
    planted by a sandboxed agent would let it write anywhere on the host."""
    dot = path / ".git"
    for required in (dot, dot / "objects", dot / "refs"):
        if required.is_symlink() or not required.is_dir():
            raise WorkspaceError(f"{required.relative_to(path)} is not a plain directory (the agent replaced it): "
                                 "Shepherd runs no git command in this workspace")
    if (dot / "commondir").exists() or (dot / "commondir").is_symlink():
        raise WorkspaceError(".git/commondir points elsewhere: Shepherd runs no git command in this workspace")
    config = dot / "config"
    if config.is_symlink():
        config.unlink()  # the link itself, not what it points to: replaced below
    planted = _not_plain(dot)
    if planted is not None:
        raise WorkspaceError(f"{planted.relative_to(path)} is a link or a special file (the agent planted it): "
                             "Shepherd runs no git command in this workspace")
    current = ""
    if config.is_symlink() or (config.exists() and not config.is_file()):
        if config.is_dir() and not config.is_symlink():
            raise WorkspaceError(".git/config is a directory: Shepherd runs no git command in this workspace")
        config.unlink()  # the link itself, not what it points to
    elif config.is_file():
        current = config.read_text(errors="replace")
    match = _ORIGIN_URL.search(current)
    wanted = safe_config(match.group(1).strip() if match else None)
    if current != wanted:
        config.write_text(wanted)


async def commit_all(path: Path, message: str) -> str:
    """Commit whatever the agent left uncommitted on the task's branch; returns the new head."""
    reset_config(path)
    await git(*SAFE_GIT, "add", "-A", cwd=path)
    status = await git(*SAFE_GIT, "status", "--porcelain", cwd=path)
    if status.strip():
        await git(*SAFE_GIT, "commit", "-q", "--no-verify", "-m", message, cwd=path)
    return (await git("rev-parse", "HEAD", cwd=path)).strip()


async def head_of(path: Path) -> tuple[str, bool]:
    """(head commit, whether the work tree has changes beyond it)."""
    reset_config(path)
    sha = (await git("rev-parse", "HEAD", cwd=path)).strip()
    dirty = bool((await git(*SAFE_GIT, "status", "--porcelain", cwd=path)).strip())
    return sha, dirty


async def push(path: Path, url: str, branch: str, sha: str, *, env: dict[str, str] | None = None) -> None:
    """Push commit `sha` (the approved one, whatever HEAD is by now) to `branch` at `url`; never forced."""
    reset_config(path)
    await git(*SAFE_GIT, "push", "-q", "--no-verify", url, f"{sha}:refs/heads/{branch}", cwd=path, env=env)


async def diff_stats(path: Path, base_sha: str | None) -> DiffStats:
    """What changed since the base commit, committed or not, new files included. The workspace's own
    index is left alone: the count uses a scratch index."""
    if base_sha is None or not (path / ".git").exists() or emptyrepo.unchanged_empty(path, base_sha):
        return DiffStats()  # (an empty workspace the agent left empty: two git processes fewer per task)
    counted = emptyrepo.new_files_stats(path, base_sha)
    if counted is not None:
        return counted
    reset_config(path)
    with tempfile.TemporaryDirectory() as scratch:
        index = Path(scratch) / "index"
        env = git_env({"GIT_INDEX_FILE": str(index)})
        try:  # a copy of the real index keeps its stat cache: only changed files are hashed again
            shutil.copyfile(path / ".git" / "index", index)
        except FileNotFoundError:
            await git("read-tree", "HEAD", cwd=path, env=env)
        await git(*SAFE_GIT, "add", "-A", cwd=path, env=env)
        out = await git(*SAFE_GIT, "diff", "--cached", "--numstat", "--no-renames", base_sha, cwd=path, env=env)
    files = insertions = deletions = 0
    paths: list[str] = []
    for line in out.splitlines():
        added, removed, name = line.split("\t", 2)
        files += 1
        insertions += int(added) if added.isdigit() else 0  # "-" for binary files
        deletions += int(removed) if removed.isdigit() else 0
        if len(paths) < MAX_DIFF_PATHS:
            paths.append(name)
    return DiffStats(files, insertions, deletions, tuple(paths))


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


async def unshared_work(path: Path, *, pushed: tuple[str, ...] = (), base: str | None = None) -> str | None:
    """Why the workspace at `path` holds work found nowhere else, or None when deleting it loses nothing: changes
    not committed (untracked files included), or commits (on any branch, tag, stash or a detached HEAD) that are on
    no remote-tracking branch and are not one of `pushed` (what Shepherd's own pushes sent, by URL: they move no
    remote-tracking branch) or `base` (the commit the task began from: an empty workspace's first commit). A
    workspace Shepherd cannot read safely (the agent planted a link in .git) counts as holding work."""
    try:
        reset_config(path)
        if (await git(*SAFE_GIT, "status", "--porcelain", cwd=path)).strip():
            return "uncommitted changes"
        known = [sha for sha in (*pushed, base or "") if _SHA.fullmatch(sha)]
        # --ignore-missing: a pushed commit this clone never had (pushed from an earlier copy) excludes nothing
        ahead = await git(*SAFE_GIT, "rev-list", "--ignore-missing", "--max-count=1", "--all", "--not", "--remotes",
                          *known, "--", cwd=path)
    except WorkspaceError as exc:
        return f"not readable safely: {exc.message}"
    return "unpushed commits" if ahead.strip() else None
