"""Git plumbing for promotions and syncs: each command with Shepherd's own environment (no config of the server's
user, no prompt; core.runners.repos.git_env), stdin given as bytes, and the exit code handed back rather than
raised, because a failed `git apply` or a conflicted merge is an answer here, not a fault."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import ShepherdError
from core.runners.repos import git_env

GIT_TIMEOUT_S = 300.0
IDENTITY = {
    "GIT_AUTHOR_NAME": "Shepherd", "GIT_AUTHOR_EMAIL": "shepherd@localhost",
    "GIT_COMMITTER_NAME": "Shepherd", "GIT_COMMITTER_EMAIL": "shepherd@localhost",
}


class GitFailed(ShepherdError):
    code = "GIT_FAILED"
    status = 500


@dataclass(frozen=True)
class Ran:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace").strip()


async def run(*args: str, git_dir: Path, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
              work_tree: Path | None = None, check: bool = True) -> Ran:
    """`git <args>` on the repository `git_dir`; with `check`, a non-zero exit is a GitFailed (a fault of ours)."""
    full = git_env({"GIT_DIR": str(git_dir), **IDENTITY, **(env or {})})
    if work_tree is not None:
        full["GIT_WORK_TREE"] = str(work_tree)
    proc = await asyncio.create_subprocess_exec(
        "git", *args, env=full, cwd=work_tree or git_dir,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=GIT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise GitFailed(f"git {args[0]} took longer than {GIT_TIMEOUT_S:.0f} s") from None
    ran = Ran(proc.returncode or 0, out, err.decode(errors="replace"))
    if check and ran.code != 0:
        last = ran.err.strip().splitlines()
        raise GitFailed(f"git {args[0]} failed: {last[-1] if last else f'exit {ran.code}'}")
    return ran


def quote(path: str) -> str:
    """A path as git's fast-import reads a quoted one (C-style): always quoted, so no name is taken for syntax."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
