"""Shepherd runs git in workspaces an agent wrote, outside any sandbox: nothing the agent planted there may
run as Shepherd, be written through, or receive Shepherd's GitHub token."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from core.autonomy.actions import ActionsConfig, Executor, same_origin
from core.runners.workspace import WorkspaceError, commit_all, diff_stats, prepare
from tests.gitrepos import git, seed_repo


async def _workspace(tmp_path: Path) -> tuple[Path, str]:
    upstream = seed_repo(tmp_path / "upstream")
    ws = tmp_path / "ws" / "task-1"
    _, sha = await prepare(ws, source=str(upstream), base_branch=None, work_branch="shepherd/t")
    return ws, sha


async def test_a_filter_the_agent_configured_never_runs_as_shepherd(tmp_path: Path) -> None:
    ws, sha = await _workspace(tmp_path)
    marker = tmp_path / "pwned"
    with (ws / ".git" / "config").open("a") as config:
        config.write(f'[filter "x"]\n\tclean = touch {marker}; cat\n')
    (ws / ".gitattributes").write_text("* filter=x\n")
    (ws / "new.txt").write_text("work\n")
    head = await commit_all(ws, "the agent's work")
    assert head != sha and not marker.exists()
    assert '[filter' not in (ws / ".git" / "config").read_text()


async def test_a_git_dir_moved_elsewhere_is_refused(tmp_path: Path) -> None:
    ws, sha = await _workspace(tmp_path)
    marker = tmp_path / "pwned"
    (ws / ".git").rename(ws / ".x")
    (ws / ".git").write_text("gitdir: .x\n")
    with (ws / ".x" / "config").open("a") as config:
        config.write(f'[filter "x"]\n\tclean = touch {marker}; cat\n')
    (ws / ".gitattributes").write_text("* filter=x\n")
    with pytest.raises(WorkspaceError, match="not a plain directory"):
        await commit_all(ws, "x")
    with pytest.raises(WorkspaceError):
        await diff_stats(ws, sha)
    assert not marker.exists()


async def test_a_config_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    ws, _ = await _workspace(tmp_path)
    precious = tmp_path / "shepherd.db"
    precious.write_text("the database\n")
    (ws / ".git" / "config").unlink()
    (ws / ".git" / "config").symlink_to(precious)
    (ws / "new.txt").write_text("work\n")
    await commit_all(ws, "x")
    assert precious.read_text() == "the database\n"
    assert not (ws / ".git" / "config").is_symlink()
    assert git("log", "-1", "--format=%s", cwd=ws).strip() == "x"


@pytest.mark.parametrize("planted", ["COMMIT_EDITMSG", "logs/HEAD", "objects/ab", "index", "ORIG_HEAD"])
async def test_a_link_planted_anywhere_under_git_stops_shepherds_git_before_it_writes_through_it(
    tmp_path: Path, planted: str
) -> None:
    # git writes COMMIT_EDITMSG, the reflog and new objects through whatever it finds, as Shepherd's user:
    # a sandboxed agent's link there would let it write (or read) any file on the host
    ws, sha = await _workspace(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    target = victim / ("dir" if planted == "objects/ab" else "authorized_keys")
    if planted == "objects/ab":
        target.mkdir()
    else:
        target.write_text("ssh-ed25519 AAAA the-owner\n")
    link = ws / ".git" / planted
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    link.unlink(missing_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    (ws / "new.txt").write_text("ssh-ed25519 AAAA the-attacker\n")
    for step in (lambda: commit_all(ws, "ssh-ed25519 AAAA the-attacker"), lambda: diff_stats(ws, sha)):
        with pytest.raises(WorkspaceError, match="link or a special file"):
            await step()
    if planted == "objects/ab":
        assert not any(target.iterdir())
    else:
        assert target.read_text() == "ssh-ed25519 AAAA the-owner\n"


async def test_the_github_token_goes_only_to_the_configured_code_host() -> None:
    executor = Executor(ActionsConfig(git_base_url="https://github.com", git_token="ghs_secret"))
    assert await executor._credentials("https://github.com/acme/api.git")
    for elsewhere in ("https://attacker.example/acme/api.git", "https://github.com.attacker.example/a.git",
                      "http://github.com/acme/api.git", "https://github.com:8443/acme/api.git", "/srv/git/a.git"):
        assert await executor._credentials(elsewhere) == {}, elsewhere
    assert same_origin("https://ghe.example:8443/a/b.git", "https://ghe.example:8443")
    assert not same_origin("ssh://git@github.com/a/b.git", "https://github.com")
    assert asyncio.iscoroutinefunction(executor.execute)
