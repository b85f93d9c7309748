"""Unified diffs applied for real: each patch is applied with `git apply` to the tree of its base revision, and the
result is merged three-way (git's merge-tree: base, the workspace as it is now, the patched base) into the tree the
workspace becomes. Nothing here touches the workspace: the caller writes the merged tree only once it is whole, so
a patch that does not apply or a merge that conflicts changes nothing.

Every path a patch names is checked as a bundle's path is (core.containers.bundles.clean_path), before git reads it:
no absolute path, no `..`, nothing in .git; and a patch may not make a symlink or a submodule."""

from __future__ import annotations

import re
from pathlib import Path

from core.containers import gitops
from core.containers.bundles import MAX_BUNDLE_BYTES, TooLarge, clean_path
from core.errors import Conflict, ValidationFailed

_HEADERS = ("--- ", "+++ ", "rename from ", "rename to ", "copy from ", "copy to ")
# the mode git reads (octal, leading zeros and trailing blanks allowed: `new file mode 0120000 ` is a symlink too)
_MODES = re.compile(
    r"^(?:new file mode|deleted file mode|old mode|new mode|index [0-9a-f]+\.\.[0-9a-f]+) +([0-7]+)\s*$")
_LINK_OR_SUBMODULE = (0o120000, 0o160000)
_TYPE_BITS = 0o170000
_FAILED = re.compile(r"^error: (?:patch failed: )?(.+?)(?::\d+)?: ")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "r": "\r", "v": "\v"}


class PatchConflict(Conflict):
    code = "PATCH_CONFLICT"

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


def _unquote(raw: str) -> str:
    """A path as git writes it: C-quoted (octal escapes for bytes) when it holds unusual characters."""
    if not raw.startswith('"'):
        return raw.split("\t", 1)[0]  # `--- a/x\t2024-…` (diff -u puts a date after a tab)
    body, out, i = raw[1:], bytearray(), 0
    while i < len(body) and body[i] != '"':
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and i + 3 < len(body):
                out.append(int(body[i + 1:i + 4], 8))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += c.encode()
        i += 1
    return out.decode(errors="surrogateescape")


def _header_names(rest: str) -> list[str]:
    """The two names of `diff --git <a> <b>`, each maybe C-quoted; git reads them from here when no ---/+++ lines
    follow (a binary patch, a mode change), so they are checked as those are. Unquoted names that hold spaces are
    split where the two halves name the same path, as git does; a header that cannot be split names nothing here
    (git then refuses it too, or takes its names from the lines that follow, which are checked)."""
    if rest.startswith('"'):
        end = _quoted_end(rest)
        first, rest = _unquote(rest[:end]), rest[end:].lstrip(" ")
        return [first, _unquote(rest) if rest.startswith('"') else rest]
    if ' "' in rest:  # a/x "b/y"
        cut = rest.index(' "')
        return [rest[:cut], _unquote(rest[cut + 1:])]
    middle = len(rest) // 2
    if rest[middle:middle + 1] == " " and rest[:middle].split("/", 1)[-1] == rest[middle + 1:].split("/", 1)[-1]:
        return [rest[:middle], rest[middle + 1:]]
    return []


def _quoted_end(text: str) -> int:
    """The index just past the closing quote of the C-quoted string that `text` starts with."""
    i = 1
    while i < len(text) and text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _strip(raw: str, where: str) -> str:
    """`a/src/x.ts` -> `src/x.ts` (git apply's -p1), each form checked."""
    clean_path(raw, where)
    parts = raw.split("/", 1)
    if len(parts) < 2:
        raise ValidationFailed(f"{where}: {raw[:80]!r} has no a/ or b/ prefix to strip", code="INVALID_PATCH")
    return clean_path(parts[1], where)


def named_paths(patch: str, where: str) -> list[str]:
    """The workspace paths a patch names (checked), in order; a 400 for a path out of bounds or a link."""
    paths: list[str] = []
    for line in patch.splitlines():
        mode = _MODES.match(line)
        if mode and int(mode.group(1), 8) & _TYPE_BITS in _LINK_OR_SUBMODULE:
            raise ValidationFailed(f"{where}: a patch may not make a symlink or a submodule", code="INVALID_PATCH")
        if line.startswith("diff --git "):
            paths += [_strip(name, where) for name in _header_names(line[len("diff --git "):])]
            continue
        for head in _HEADERS:
            if line.startswith(head):
                raw = _unquote(line[len(head):])
                if raw == "/dev/null":
                    break
                paths.append(_strip(raw, where) if head.startswith(("---", "+++")) else clean_path(raw, where))
                break
    return list(dict.fromkeys(paths))


async def _check(patch: bytes, git_dir: Path, where: str) -> None:
    """Is it a patch at all? `git apply --numstat` reads it without applying it."""
    ran = await gitops.run("apply", "--numstat", "-", git_dir=git_dir, stdin=patch, check=False)
    if ran.code != 0 or not ran.out.strip():
        why = (ran.err.strip().splitlines() or ["no change in it"])[-1]
        raise ValidationFailed(f"{where}: not a unified diff git can read ({why[:200]})", code="INVALID_PATCH")


async def patched_tree(patches: list[str], *, base: str, git_dir: Path, index: Path) -> str:
    """The tree of `base` (a commit) with `patches` applied in order; a PatchConflict when one does not apply."""
    if sum(len(p) for p in patches) > MAX_BUNDLE_BYTES:
        raise TooLarge(f"patches: more than {MAX_BUNDLE_BYTES} bytes in one sync")
    named = [named_paths(p, f"patches[{i}]") for i, p in enumerate(patches)]
    env = {"GIT_INDEX_FILE": str(index)}
    await gitops.run("read-tree", base, git_dir=git_dir, env=env)
    for i, patch in enumerate(patches):
        data = patch.encode("utf-8", errors="surrogateescape")
        await _check(data, git_dir, f"patches[{i}]")
        ran = await gitops.run("apply", "--cached", "--whitespace=nowarn", "-", git_dir=git_dir, env=env,
                               stdin=data, check=False)
        if ran.code != 0:
            failed = [m.group(1) for line in ran.err.splitlines() if (m := _FAILED.match(line))]
            paths = [p for p in named[i] if p in failed] or named[i]
            raise PatchConflict(f"patches[{i}] does not apply to its base revision: {', '.join(paths)}", paths)
    return (await gitops.run("write-tree", git_dir=git_dir, env=env)).text


async def merged_tree(*, base: str, ours: str, theirs: str, git_dir: Path) -> str:
    """Three-way merge of two trees that both started from the commit `base`: the workspace's (`ours`) and the
    patched base (`theirs`). A PatchConflict names the paths both changed in ways git cannot join."""
    base_tree = (await gitops.run("rev-parse", f"{base}^{{tree}}", git_dir=git_dir)).text
    if ours == base_tree:
        return theirs
    if theirs in (base_tree, ours):
        return ours
    ours_c = (await gitops.run("commit-tree", "-p", base, "-m", "workspace", ours, git_dir=git_dir)).text
    theirs_c = (await gitops.run("commit-tree", "-p", base, "-m", "patches", theirs, git_dir=git_dir)).text
    ran = await gitops.run("merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", ours_c, theirs_c,
                           git_dir=git_dir, check=False)
    fields = ran.out.decode(errors="surrogateescape").split("\0")
    if ran.code == 1:
        paths = list(dict.fromkeys(p for p in fields[1:] if p))
        raise PatchConflict(f"the patches conflict with the workspace's own changes since the base revision: "
                            f"{', '.join(paths)}", paths)
    if ran.code != 0:
        raise gitops.GitFailed(f"git merge-tree failed: {ran.err.strip()[-200:]}")
    return fields[0].strip()
