"""Shepherd's copy of a remote workspace, brought up to date with what the agent left in the engine.

A remote runner (adapters/runners) reads the work tree of the task's volume as a tar archive (Docker's archive
API, a Kubernetes helper Job's output) and hands it here. The copy's work tree becomes that tree exactly (files
the agent deleted go), and its `.git` stays Shepherd's: the base commit, the commits Shepherd made and what it
pushed are never taken from the engine, where the agent could have rewritten them.

The archive is the agent's: nothing in it may land outside the copy (absolute paths, `..`, links pointing out),
no device or fifo is made, and its size is capped.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from core.errors import ShepherdError

MAX_TREE_BYTES = 512 * 1024 * 1024  # what one collect may unpack; a larger work tree fails the turn's collect
MAX_MEMBERS = 200_000


class MirrorError(ShepherdError):
    code = "WORKSPACE_COLLECT"
    status = 502


def _members(archive: tarfile.TarFile, strip: str) -> list[tarfile.TarInfo]:
    """The archive's members under `strip` (a leading directory the engine adds), renamed relative to the tree,
    `.git` and everything not a plain file, directory or link left out; refused when one would escape."""
    picked: list[tarfile.TarInfo] = []
    total = 0
    for count, member in enumerate(archive, 1):
        if count > MAX_MEMBERS:
            raise MirrorError(f"the workspace holds more than {MAX_MEMBERS} entries")
        name = PurePosixPath(member.name.lstrip("/"))
        parts = name.parts
        if strip:
            if parts[:1] != (strip,):
                continue
            parts = parts[1:]
        if parts and parts[0] == ".":
            parts = parts[1:]
        if not parts or parts[0] == ".git":
            continue
        if ".." in parts:
            raise MirrorError(f"the workspace archive names a path outside it: {member.name}")
        if not (member.isfile() or member.isdir() or member.issym()):
            continue  # devices, fifos and hard links are nothing a pull request carries
        if member.isfile():
            total += member.size
            if total > MAX_TREE_BYTES:
                raise MirrorError(f"the workspace is larger than {MAX_TREE_BYTES // (1024 * 1024)} MB")
        member.name = str(PurePosixPath(*parts))
        picked.append(member)
    return picked


def _clear(local: Path) -> None:
    """Everything of the copy's work tree goes; its .git stays."""
    for entry in local.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def replace_tree_sync(local: Path, archive: bytes, *, strip: str = "") -> int:
    """Make the work tree of `local` the tree in `archive` (a tar, maybe gzip'd); returns the files written."""
    if not (local / ".git").is_dir():
        raise MirrorError(f"Shepherd's copy of the workspace is gone: {local}")
    # unpacked beside the copy first: an archive refused halfway leaves the copy as it was
    staging = Path(tempfile.mkdtemp(prefix=f".{local.name}-collect-", dir=local.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            members = _members(tar, strip)
            # the data filter refuses absolute links, links out of the tree and odd modes, member by member
            tar.extractall(staging, members=members, filter="data")
        _clear(local)
        for entry in staging.iterdir():
            os.replace(entry, local / entry.name)
    except (tarfile.TarError, EOFError) as exc:
        raise MirrorError(f"the workspace archive was refused: {exc}") from None
    except OSError as exc:
        raise MirrorError(f"the workspace could not be written: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    os.utime(local)
    return sum(1 for m in members if m.isfile())


async def replace_tree(local: Path, archive: bytes, *, strip: str = "") -> int:
    """replace_tree_sync off the event loop."""
    return await asyncio.to_thread(replace_tree_sync, local, archive, strip=strip)


def tree_archive_sync(local: Path, *, with_git: bool = True) -> bytes:
    """A tar of `local` (for a runner seeding an engine's volume from Shepherd's copy)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(local.iterdir()):
            if entry.name == ".git" and not with_git:
                continue
            tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


async def tree_archive(local: Path, *, with_git: bool = True) -> bytes:
    return await asyncio.to_thread(tree_archive_sync, local, with_git=with_git)
