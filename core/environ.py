"""What of the server's own environment a process Shepherd starts may see: named variables only, never the
rest, so that the bot's secrets (tokens, database URLs, SHEPHERD_* settings) reach no agent, git or deploy."""

from __future__ import annotations

import os
from collections.abc import Iterable

GIT = ("PATH", "LANG", "TZ", "TMPDIR")  # git gets HOME=/dev/null of its own (core.runners.repos.git_env)
DEPLOY = (*GIT, "HOME")
AGENT = (*DEPLOY, "TERM")  # agent CLIs format for a terminal


def passed(names: Iterable[str]) -> dict[str, str]:
    """The variables of `names` that are set in this process, and nothing else."""
    return {name: os.environ[name] for name in names if name in os.environ}
