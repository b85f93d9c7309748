"""Empty workspaces without git: the workspace root's empty repository read into memory once and written out as
files for every empty workspace (no git process per task), and what an agent left in one counted by reading its
files when git's count is certain to be the same (core.runners.workspace starts git for everything else)."""

from __future__ import annotations

import os
import re
import stat
import zlib
from pathlib import Path

from core.tasks.evidence import MAX_DIFF_PATHS, DiffStats

EMPTY = ".empty-workspace"  # in the workspace root: an empty repository with its one empty commit
EMPTY_BRANCH = "workspace"
_EMPTY_TREE = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's id of the tree with nothing in it


# What a workspace root's empty repository holds, read once per process (a made template never changes: it is
# renamed into place whole, once): the folders git needs, its files with their bytes and modes (its branch and HEAD
# left out: each workspace writes its own) and its commit. A workspace's .git is then written with plain os calls:
# 14 of them, where shutil.copytree of the template and renaming its branch made 21 with every file's stat, mode and
# times copied one by one (on this disk each costs about 0.35 ms of the event loop, and far more while a hundred
# agents start).
Snapshot = tuple[tuple[str, ...], tuple[tuple[str, bytes, int], ...], str]
_snapshots: dict[Path, Snapshot] = {}


def cached(template: Path) -> Snapshot | None:
    """The template's snapshot, if this process has read it."""
    return _snapshots.get(template)


_LEFT_OUT = {"HEAD", "COMMIT_EDITMSG", os.path.join("refs", "heads", EMPTY_BRANCH)}  # noqa: PTH118


def read_snapshot(template: Path) -> Snapshot | None:
    """None when the template is not what _make_template makes (anything but folders and plain files, no commit)."""
    source = template / ".git"
    folders: list[str] = []
    files: list[tuple[str, bytes, int]] = []
    try:
        sha = (source / "refs" / "heads" / EMPTY_BRANCH).read_text().strip()
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


def write_empty(path: Path, snapshot: Snapshot, work_branch: str) -> str:
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


def _regular(path: Path) -> bool:
    """A plain file, not followed through a link (the agent wrote the workspace: a FIFO would hang a read)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def unchanged_empty(path: Path, base_sha: str) -> bool:
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
_FEW_FILES, FEW_ENTRIES, _FEW_BYTES = 100, 400, 1 << 20
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


def new_files_stats(path: Path, base_sha: str) -> DiffStats | None:
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
                    if seen > FEW_ENTRIES:  # (a million empty folders would hold the loop: git counts them)
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
