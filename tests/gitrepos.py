"""Real git repositories for tests: a seeded working repository, and a bare one standing for GitHub."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **_IDENTITY}, check=True,
                          capture_output=True, text=True).stdout


def seed_repo(path: Path, readme: str = "# app\n") -> Path:
    """A repository at `path` with one commit (a README) on main."""
    path.mkdir(parents=True)
    (path / "README.md").write_text(readme)
    for cmd in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "init"]):
        git(*cmd, cwd=path)
    return path


def github_host(root: Path, repo: str = "acme/api") -> Path:
    """A folder of bare repositories laid out as SHEPHERD_GIT_BASE_URL expects (`<host>/owner/name.git`),
    holding `repo` seeded with one commit. Returns the folder."""
    seed = seed_repo(root / f"seed-{repo.replace('/', '-')}", "# api\n")
    host = root / "githost"
    (host / repo.split("/")[0]).mkdir(parents=True, exist_ok=True)
    git("clone", "-q", "--bare", str(seed), str(host / f"{repo}.git"), cwd=root)
    return host
