"""Empty workspaces (a task with no repository) are copies of one empty repository made once per workspace root:
each is a repository of its own on its task's branch, and what an agent did in it is counted as before."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.runners import emptyrepo
from core.runners.workspace import WorkspaceError, diff_stats, prepare
from core.tasks.evidence import DiffStats
from tests.gitrepos import git


async def test_empty_workspaces_started_together_are_each_a_repository_of_their_own(tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    branches = [f"shepherd/task-{n}" for n in range(6)]
    made = await asyncio.gather(*(prepare(root / f"task-{n}", source=None, base_branch=None, work_branch=branch)
                                  for n, branch in enumerate(branches)))
    for n, (branch, (base_branch, sha)) in enumerate(zip(branches, made, strict=True)):
        ws = root / f"task-{n}"
        assert base_branch == "main"
        assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=ws).strip() == branch
        assert git("rev-parse", "HEAD", cwd=ws).strip() == sha
        assert git("log", "--format=%s", cwd=ws).strip() == "empty workspace"
        assert git("status", "--porcelain", cwd=ws).strip() == ""
        assert git("branch", "--format=%(refname:short)", cwd=ws).split() == [branch]  # no template branch left
    # one agent's work is its own: counted there, nowhere else, and committed into its repository only
    (root / "task-0" / "notes.txt").write_text("one\ntwo\n")
    assert (await diff_stats(root / "task-0", made[0][1])).files == 1
    assert (await diff_stats(root / "task-1", made[1][1])).files == 0
    git("add", "-A", cwd=root / "task-0")
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "work", cwd=root / "task-0")
    assert git("log", "--format=%s", cwd=root / "task-1").strip() == "empty workspace"
    stats = await diff_stats(root / "task-0", made[0][1])
    assert (stats.files, stats.insertions) == (1, 2)


async def test_an_untouched_empty_workspace_is_counted_without_starting_git(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred tasks whose agents wrote nothing (or a few plain files) start no git process to learn it; what git
    would count differently, or a branch that moved, is still git's to count."""
    root = tmp_path / "workspaces"
    _, sha = await prepare(root / "a", source=None, base_branch=None, work_branch="shepherd/a")
    _, sha_b = await prepare(root / "b", source=None, base_branch=None, work_branch="shepherd/b")
    (root / "b" / "new.txt").write_text("x\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert (await diff_stats(root / "a", sha)).files == 0
    # a plain file written: counted without git too (which cannot be found here)
    assert await diff_stats(root / "b", sha_b) == DiffStats(1, 1, 0, ("new.txt",))
    (root / "b" / ".gitignore").write_text("new.txt\n")  # what git would count differently is git's to count
    with pytest.raises(OSError):
        await diff_stats(root / "b", sha_b)
    ref = root / "a" / ".git" / "refs" / "heads" / "shepherd" / "a"
    ref.write_text("0" * 40 + "\n")  # the branch moved (say, the agent committed and emptied the tree)
    with pytest.raises(OSError):
        await diff_stats(root / "a", sha)
    os.unlink(ref)
    os.symlink(tmp_path / "elsewhere", ref)  # a link the agent planted is not followed
    (tmp_path / "elsewhere").write_text(sha + "\n")
    with pytest.raises(WorkspaceError, match="link"):  # git's side refuses the workspace, as for any planted link
        await diff_stats(root / "a", sha)


async def test_tasks_starting_together_make_the_empty_repository_once(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred tasks starting at once used to race to make the root's empty repository, two git processes each:
    now they wait for one making, and every later empty workspace is copied without git."""
    import shutil
    import stat

    real = shutil.which("git")
    assert real is not None
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "git-calls"
    shim = shims / "git"
    shim.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    root = tmp_path / "workspaces"
    made = await asyncio.gather(*(prepare(root / f"t{n}", source=None, base_branch=None, work_branch=f"shepherd/t{n}")
                                  for n in range(20)))
    assert len({sha for _, sha in made}) == 1  # one empty commit, copied
    assert log.read_text().split() == ["init", "-c"]  # git init, then the commit (its -c identity first)


# What an agent leaves in an empty workspace is counted without git when git's count is certain to be the same:
# each case below is counted both ways, and the two must agree; the odd ones must go to git.
PLAIN_CASES: dict[str, dict[str, bytes]] = {
    "one text file": {"DEMO.md": b"hello\nworld\n"},
    "no newline at the end, an empty file": {"a.txt": b"one\ntwo", "empty": b""},
    "binary": {"logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "b.txt": b"x\n"},
    "nested folders in git's order": {"a/b/c.py": b"print(1)\n", "a-b": b"1\n2\n", "a.b": b"\n", "a0": b"z\n",
                                      "src/x.py": b"import os\r\nprint(os)\r\n", "Z": b"caps\n"},
    "more than the paths kept": {f"f{n:02d}.txt": b"line\n" * n for n in range(30)},
}
ODD_CASES: dict[str, dict[str, bytes]] = {
    "an ignore file": {".gitignore": b"*.log\n", "x.log": b"1\n", "y.txt": b"2\n"},
    "attributes": {".gitattributes": b"*.txt binary\n", "y.txt": b"2\n"},
    "a name git quotes": {"caf\u00e9.txt": b"1\n"},
    "a space": {"two words.txt": b"1\n"},
    "a repository inside": {"sub/.git/HEAD": b"ref: refs/heads/main\n", "sub/a": b"1\n"},
}


async def _workspace(root: Path, name: str, files: dict[str, bytes]) -> tuple[Path, str]:
    _, sha = await prepare(root / name, source=None, base_branch=None, work_branch=f"shepherd/{name}")
    for relative, data in files.items():
        target = root / name / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root / name, sha


async def _by_git(path: Path, sha: str, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(emptyrepo, "new_files_stats", lambda *_: None)
        return await diff_stats(path, sha)


@pytest.mark.parametrize("case", list(PLAIN_CASES))
async def test_what_an_agent_left_in_an_empty_workspace_is_counted_as_git_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path, sha = await _workspace(tmp_path / "workspaces", "t", PLAIN_CASES[case])
    read = emptyrepo.new_files_stats(path, sha)
    assert read is not None, "counted without git"
    assert read == await _by_git(path, sha, monkeypatch) == await diff_stats(path, sha)
    assert read.files == len(PLAIN_CASES[case])


@pytest.mark.parametrize("case", list(ODD_CASES))
async def test_what_git_would_count_differently_is_left_to_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               case: str) -> None:
    path, sha = await _workspace(tmp_path / "workspaces", "t", ODD_CASES[case])
    assert emptyrepo.new_files_stats(path, sha) is None
    assert await diff_stats(path, sha) == await _by_git(path, sha, monkeypatch)


async def test_a_link_a_commit_or_too_much_is_left_to_git(tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    linked, sha = await _workspace(root, "linked", {"a.txt": b"1\n"})
    (linked / "secret").symlink_to("/etc/hostname")  # never read through
    assert emptyrepo.new_files_stats(linked, sha) is None
    big, sha_big = await _workspace(root, "big", {"big.txt": b"x" * ((1 << 20) + 1)})
    assert emptyrepo.new_files_stats(big, sha_big) is None
    committed, sha_c = await _workspace(root, "committed", {"a.txt": b"1\n"})
    git("add", "-A", cwd=committed)
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "work", cwd=committed)
    assert emptyrepo.new_files_stats(committed, sha_c) is None  # the branch moved: git counts against the base
    assert (await diff_stats(committed, sha_c)).files == 1


@pytest.mark.parametrize("name", [".GIT/x", "git~1/x", "x.", ".Gitignore"])
async def test_a_name_git_refuses_or_treats_apart_is_left_to_git(tmp_path: Path, name: str) -> None:
    """git refuses .git's spellings on NTFS (.GIT, GIT~1, a trailing dot): what it would say of them is its own."""
    path, sha = await _workspace(tmp_path / "workspaces", "t", {name: b"1\n", "a.txt": b"2\n"})
    assert emptyrepo.new_files_stats(path, sha) is None


async def test_what_the_agent_staged_is_left_to_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file staged, then hidden by skip-worktree and deleted, is still added by git's count: the index says so."""
    path, sha = await _workspace(tmp_path / "workspaces", "t", {"evil.sh": b"rm -rf /\n"})
    git("add", "evil.sh", cwd=path)
    git("update-index", "--skip-worktree", "evil.sh", cwd=path)
    (path / "evil.sh").unlink()
    (path / "README").write_text("hello\n")
    assert emptyrepo.new_files_stats(path, sha) is None
    counted = await diff_stats(path, sha)
    assert counted == await _by_git(path, sha, monkeypatch)
    assert counted.files == 2
    fresh, sha_f = await _workspace(tmp_path / "workspaces", "fresh", {})
    (fresh / "README").write_text("hello\n")
    assert emptyrepo.new_files_stats(fresh, sha_f) is not None  # the index `git commit` left stages nothing


async def test_a_workspace_of_many_folders_is_not_walked_on_the_event_loop(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of empty folders (git adds none) are git's to walk, not the server's loop: the walk stops early."""
    path, sha = await _workspace(tmp_path / "workspaces", "t", {"a.txt": b"1\n"})
    for n in range(3 * emptyrepo.FEW_ENTRIES):
        (path / f"d{n}").mkdir()
    listed = 0
    real = os.scandir

    class Counting:
        def __init__(self, folder: str) -> None:
            self.inner = real(folder)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def __iter__(self) -> Counting:
            return self

        def __next__(self) -> os.DirEntry[str]:
            nonlocal listed
            listed += 1
            return next(self.inner)

    with monkeypatch.context() as m:
        m.setattr(emptyrepo.os, "scandir", Counting)
        assert emptyrepo.new_files_stats(path, sha) is None
    assert listed <= emptyrepo.FEW_ENTRIES + 1  # it stopped at the bound, not after listing every folder
    assert await diff_stats(path, sha) == await _by_git(path, sha, monkeypatch)
