"""Task workspaces: a clone of the repository on the task's own branch, or a fresh repository when no
repository is named (so that what the agent changed can always be counted)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import tempfile
import zlib
from pathlib import Path

from core.errors import ShepherdError
from core.runners.repos import git_env
from core.tasks.evidence import DiffStats

GIT_TIMEOUT_S = 600.0
_GIT_IDENTITY = ("-c", "user.name=Shepherd", "-c", "user.email=shepherd@localhost")
MAX_DIFF_PATHS = 20
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
            return branch, _write_empty(path, snapshot, work_branch)
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


_EMPTY = ".empty-workspace"  # in the workspace root: an empty repository with its one empty commit
_EMPTY_BRANCH = "workspace"
_EMPTY_TREE = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's id of the tree with nothing in it


async def _empty_snapshot(root: Path) -> _Snapshot | None:
    """The root's empty repository (with its one empty commit), read into memory: made once with git, then every
    empty workspace is written from it as files (a hundred tasks starting at once start no git process for it)."""
    template = root / _EMPTY
    snapshot = _snapshots.get(template)
    if snapshot is not None:
        return snapshot
    made_ref = template / ".git" / "refs" / "heads" / _EMPTY_BRANCH
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
    return _snapshots.get(template) or _snapshot(template)


def _write_empty(path: Path, snapshot: _Snapshot, work_branch: str) -> str:
    """An empty workspace at `path` (made here: it must not exist) on `work_branch`, written from the snapshot of
    the root's empty repository with plain os calls. Returns its commit."""
    folders, files, sha = snapshot
    os.mkdir(path)  # noqa: PTH102
    git_dir = os.path.join(path, ".git")  # noqa: PTH118
    os.mkdir(git_dir)  # noqa: PTH102
    for folder in folders:
        os.mkdir(os.path.join(git_dir, folder))  # noqa: PTH102, PTH118
    ref = os.path.join("refs", "heads", work_branch)  # noqa: PTH118
    os.makedirs(os.path.join(git_dir, os.path.dirname(ref)), exist_ok=True)  # noqa: PTH103, PTH118, PTH120
    branch = ((ref, f"{sha}\n".encode(), 0o644), ("HEAD", f"ref: {ref}\n".encode(), 0o644))
    for name, data, mode in (*files, *branch):
        fd = os.open(os.path.join(git_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # noqa: PTH118
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    return sha


_making: dict[tuple[int, Path], asyncio.Task[None]] = {}  # (event loop, template) -> its making under way

# What a workspace root's empty repository holds, read once per process (a made template never changes: it is
# renamed into place whole, once): the folders git needs, its files with their bytes and modes (its branch and HEAD
# left out: each workspace writes its own) and its commit. A workspace's .git is then written with plain os calls:
# 14 of them, where shutil.copytree of the template and renaming its branch made 21 with every file's stat, mode and
# times copied one by one (on this disk each costs about 0.35 ms of the event loop, and far more while a hundred
# agents start).
_Snapshot = tuple[tuple[str, ...], tuple[tuple[str, bytes, int], ...], str]
_snapshots: dict[Path, _Snapshot] = {}
_LEFT_OUT = {"HEAD", "COMMIT_EDITMSG", os.path.join("refs", "heads", _EMPTY_BRANCH)}  # noqa: PTH118


def _snapshot(template: Path) -> _Snapshot | None:
    """None when the template is not what _make_template makes (anything but folders and plain files, no commit)."""
    source = template / ".git"
    folders: list[str] = []
    files: list[tuple[str, bytes, int]] = []
    try:
        sha = (source / "refs" / "heads" / _EMPTY_BRANCH).read_text().strip()
        for top, dirs, names in os.walk(source):
            relative = os.path.relpath(top, source)
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(top, name)  # noqa: PTH118
                mode = os.lstat(full).st_mode
                if not stat.S_ISREG(mode):
                    return None
                named = os.path.normpath(os.path.join(relative, name))  # noqa: PTH118
                if named not in _LEFT_OUT:
                    with open(full, "rb") as f:  # noqa: PTH123 (plain os calls on purpose: see above)
                        files.append((named, f.read(), stat.S_IMODE(mode)))
            if relative != "." and (names or dirs or relative in ("objects", "refs", os.path.join("refs", "heads"))):
                folders.append(os.path.normpath(relative))  # (empty ones git makes when it needs them: none)
    except OSError:
        return None
    if not re.fullmatch(r"[0-9a-f]{40,64}", sha):
        return None
    snapshot = (tuple(folders), tuple(files), sha)
    _snapshots[template] = snapshot
    return snapshot


async def _make_template(template: Path) -> None:
    made = Path(tempfile.mkdtemp(prefix=".empty-", dir=template.parent))
    try:
        await git("init", "-q", _NO_TEMPLATE, "-b", _EMPTY_BRANCH, cwd=made)
        await git(*_GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", "empty workspace", cwd=made)
        shutil.rmtree(made / ".git" / "logs", ignore_errors=True)  # a reflog naming the template
        os.rename(made, template)  # whole or not at all, for every process sharing the root
    except (OSError, WorkspaceError):  # made meanwhile by another process (or not to be made: made in place instead)
        pass
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _regular(path: Path) -> bool:
    """A plain file, not followed through a link (the agent wrote the workspace: a FIFO would hang a read)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _unchanged_empty(path: Path, base_sha: str) -> bool:
    """Whether a workspace certainly holds no change since `base_sha`, known without starting git: the base commit
    has the empty tree (an empty workspace's first commit), the branch still points at it, and the work tree holds
    nothing but `.git`. Anything else (or anything odd) is for git to count."""
    try:
        with os.scandir(path) as entries:
            if any(entry.name != ".git" for entry in entries):
                return False
    except OSError:
        return False
    return _at_empty_base(path, base_sha)


def _at_empty_base(path: Path, base_sha: str) -> bool:
    """Whether the workspace's branch still points at `base_sha`, a commit of the empty tree (an empty workspace's
    first commit: the agent committed nothing) and its index stages nothing, read from the files git keeps without
    starting it."""
    git_dir = path / ".git"
    try:
        if not stat.S_ISDIR(os.lstat(git_dir).st_mode) or not _index_empty(git_dir):
            return False
        head = git_dir / "HEAD"
        if not _regular(head):
            return False
        named = head.read_text()[:300].strip()
        if not named.startswith("ref: refs/heads/") or ".." in named:
            return False
        ref = git_dir / named.removeprefix("ref: ")
        if not _regular(ref) or ref.read_text()[:100].strip() != base_sha:
            return False
        loose = git_dir / "objects" / base_sha[:2] / base_sha[2:]
        if not _regular(loose) or os.lstat(loose).st_size > 4096:
            return False
        header, _, body = zlib.decompress(loose.read_bytes()).partition(b"\0")
        return header.startswith(b"commit ") and body.startswith(b"tree " + _EMPTY_TREE + b"\n")
    except (OSError, ValueError, zlib.error):
        return False


# What an agent left in an empty workspace, counted without git when git's count is certain to be the same: a few
# plain files with plain names, nothing that changes what git adds or how it counts (ignore files, attributes, a
# repository inside, links, an index the agent staged in, names git refuses), the branch still at the empty first
# commit. A turn's count by git is two processes and a scratch folder (about 8 ms of CPU on this machine); this is a
# read of the files, on the event loop: bounded by entries seen (folders too) and bytes read, past which git counts.
_FEW_FILES, _FEW_ENTRIES, _FEW_BYTES = 100, 400, 1 << 20
# nothing git would quote in its numstat (nor a space), no "~" (git refuses NTFS short names such as GIT~1)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._+,=@-]+")
_BINARY_PEEK = 8000  # git's own: a NUL in the first 8000 bytes makes a file binary (numstat "-")


def _git_name(name: str) -> bool:
    """A name git treats apart or refuses: .git and its look-alikes (.GIT, .git., .gitignore, .gitattributes, ...),
    or a name ending in a dot or a space (NTFS drops them: git protects .git's spellings with them)."""
    return name.lower().startswith(".git") or name.endswith((".", " "))


def _index_empty(git_dir: Path) -> bool:
    """The workspace's index stages nothing (the agent ran no `git add`; no skip-worktree entry hides a file): no
    entry, and no extension but the cache tree `git commit` leaves (a split index's link would name entries)."""
    index = git_dir / "index"
    try:
        if not _regular(index):
            return not os.path.lexists(index)
        if os.lstat(index).st_size > 4096:
            return False
        data = index.read_bytes()
    except OSError:
        return False
    if data[:4] != b"DIRC" or data[4:8] not in (b"\0\0\0\x02", b"\0\0\0\x03", b"\0\0\0\x04") or data[8:12] != bytes(4):
        return False
    return any(_only_cache_tree(data, len(data) - checksum) for checksum in (20, 32))  # SHA-1 or SHA-256


def _only_cache_tree(data: bytes, end: int) -> bool:
    """Whether an index's bytes between its 12-byte header and `end` (its checksum) are cache-tree extensions only."""
    at = 12
    while at + 8 <= end and data[at:at + 4] == b"TREE":
        at += 8 + int.from_bytes(data[at + 4:at + 8], "big")
    return at == end


def _new_files_stats(path: Path, base_sha: str) -> DiffStats | None:
    """The count git would give of a workspace whose base is the empty tree, or None when it is git's to count."""
    if os.path.lexists(path / ".git" / "info") or not _at_empty_base(path, base_sha):  # (info/exclude: ignore rules)
        return None
    found: list[tuple[bytes, int]] = []  # (path as git sorts it, lines)
    budget, seen = _FEW_BYTES, 0
    pending = [("", str(path))]
    while pending:
        prefix, folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > _FEW_ENTRIES:  # (a million empty folders would hold the loop: git counts them)
                        return None
                    if not prefix and entry.name == ".git":
                        continue
                    if _git_name(entry.name) or not _PLAIN_NAME.fullmatch(entry.name):
                        return None
                    mode = entry.stat(follow_symlinks=False).st_mode
                    name = prefix + entry.name
                    if stat.S_ISDIR(mode):
                        pending.append((name + "/", entry.path))
                        continue
                    if not stat.S_ISREG(mode) or len(found) >= _FEW_FILES:
                        return None
                    data = _read_some(entry.path, budget)
                    budget -= len(data)
                    if budget < 0:
                        return None
                    if b"\0" in data[:_BINARY_PEEK]:
                        lines = 0
                    else:
                        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
                    found.append((name.encode(), lines))
        except OSError:
            return None
    found.sort()
    return DiffStats(len(found), sum(lines for _, lines in found), 0,
                     tuple(name.decode() for name, _ in found[:MAX_DIFF_PATHS]))


def _read_some(path: str, budget: int) -> bytes:
    """A plain file's bytes, up to one past `budget` (not through a link; a FIFO swapped in does not block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        size = os.fstat(fd).st_size
        return os.read(fd, min(budget, size) + 1)
    finally:
        os.close(fd)


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
    if base_sha is None or not (path / ".git").exists() or _unchanged_empty(path, base_sha):
        return DiffStats()  # (an empty workspace the agent left empty: two git processes fewer per task)
    counted = _new_files_stats(path, base_sha)
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
