"""One-use git credentials a person handed over with one request (CloudCoding's `github_token`), held in this
process's memory for the run of the tasks that request started: never in the database, never logged, never in an
agent's environment or its workspace's git config.

The token authenticates the clone of its task's repository and the push of that task's branch, each as an
`http.extraHeader` of that one git process (as core.runners.credentials does for Shepherd's own token), and only
towards the origin of the repository URL it came with. Because only this process holds it, such a task is pinned
to this process's runner until its first claim (Task.pinned_runner): `runner_id` says whether this process runs
tasks at all (a web-only process does not, and cannot take a token).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class HeldToken:
    url: str  # the repository URL it was given for
    token: str = field(repr=False)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class RunTokens:
    """The tokens held for tasks of this process, by task id."""

    def __init__(self) -> None:
        self._held: dict[str, HeldToken] = {}
        self.runner_id: str | None = None  # this process's task runner, while it runs (set by the supervisor)

    def __repr__(self) -> str:
        return f"RunTokens({len(self._held)} held)"

    def hold(self, task_id: str, url: str, token: str) -> None:
        self._held[task_id] = HeldToken(url, token)

    def holds(self, task_id: str) -> bool:
        return task_id in self._held

    def release(self, task_id: str) -> None:
        """The task is done with it (finished, or gone): forget it."""
        self._held.pop(task_id, None)

    def git_config(self, task_id: str, url: str) -> dict[str, str] | None:
        """The git settings that authenticate one clone or push of `url` for the task, when a token is held for it
        and `url` is on the origin the token came for; None otherwise (Shepherd's own credentials apply)."""
        held = self._held.get(task_id)
        if held is None or _origin(url) != _origin(held.url) or not _origin(url)[1]:
            return None
        basic = base64.b64encode(f"x-access-token:{held.token}".encode()).decode()
        return {"http.extraHeader": f"Authorization: Basic {basic}"}
