"""Empty workspaces (a task with no repository) are copies of one empty repository made once per workspace root:
each is a repository of its own on its task's branch, and what an agent did in it is counted as before."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.runners.workspace import WorkspaceError, diff_stats, prepare
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
    """A hundred tasks whose agents wrote nothing start no git process to learn it; anything in the work tree,
    or a branch that moved, is still git's to count."""
    root = tmp_path / "workspaces"
    _, sha = await prepare(root / "a", source=None, base_branch=None, work_branch="shepherd/a")
    _, sha_b = await prepare(root / "b", source=None, base_branch=None, work_branch="shepherd/b")
    (root / "b" / "new.txt").write_text("x\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert (await diff_stats(root / "a", sha)).files == 0
    with pytest.raises(OSError):  # a file was written: git is asked (and cannot be found here)
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
