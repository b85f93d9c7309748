"""Shepherd's copy of a remote workspace takes the agent's work tree from an engine's archive, and nothing else:
its .git stays Shepherd's, and an archive that would write outside the copy is refused with the copy untouched."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from core.runners.mirror import MirrorError, replace_tree, tree_archive


def archive(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """(name, file content or None, link target or None) -> a tar."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    local = tmp_path / "task1"
    local.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=local, check=True)
    (local / "kept-by-git.txt").write_text("base\n")
    return local


async def test_the_work_tree_becomes_the_archives_and_git_stays(copy: Path) -> None:
    head = (copy / ".git" / "HEAD").read_text()
    written = await replace_tree(copy, archive([
        ("workspace/", None, None), ("workspace/a.txt", b"agent\n", None), ("workspace/.git/HEAD", b"evil", None),
        ("workspace/src/", None, None), ("workspace/src/m.py", b"x = 1\n", None), ("workspace/link", None, "a.txt"),
    ]), strip="workspace")
    assert written == 2
    assert sorted(p.name for p in copy.iterdir()) == [".git", "a.txt", "link", "src"]
    assert (copy / "src" / "m.py").read_text() == "x = 1\n" and (copy / "link").read_text() == "agent\n"
    assert (copy / ".git" / "HEAD").read_text() == head  # the agent's .git never replaces Shepherd's


@pytest.mark.parametrize("entries", [
    [("../escaped.txt", b"x", None)],
    [("ok.txt", b"x", None), ("a/../../escaped.txt", b"x", None)],
    [("passwd", None, "/etc/passwd")],
    [("out", None, "../../outside")],
], ids=["dotdot", "dotdot-later", "absolute-link", "link-out"])
async def test_an_archive_reaching_outside_the_copy_is_refused_and_the_copy_is_untouched(
        copy: Path, entries: list[tuple[str, bytes | None, str | None]]) -> None:
    with pytest.raises(MirrorError):
        await replace_tree(copy, archive(entries))
    assert (copy / "kept-by-git.txt").read_text() == "base\n"
    assert not (copy.parent / "escaped.txt").exists()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["task1"]  # no staging left behind


async def test_a_copy_round_trips_through_its_own_archive(copy: Path, tmp_path: Path) -> None:
    (copy / "dir").mkdir()
    (copy / "dir" / "f").write_text("f\n")
    data = await tree_archive(copy, with_git=False)
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=other, check=True)
    await replace_tree(other, data)
    assert (other / "dir" / "f").read_text() == "f\n" and (other / "kept-by-git.txt").read_text() == "base\n"
