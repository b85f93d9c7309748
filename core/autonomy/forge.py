"""The `Forge` port: the code host a gated action talks to (pull requests, comments, merges).

core decides *whether* an action runs (core.autonomy.policy, core.autonomy.confirmations); an adapter that
implements this protocol does the talking (adapters/github/forge.py, through gidgethub). Every method is safe to call
again after a crash or a retry: opening a pull request for a head that already has one returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.errors import ShepherdError


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str  # the page people open (html_url)
    head: str  # branch name
    base: str
    state: str  # open | closed
    merged: bool = False
    created: bool = True  # False when an open pull request for this head already existed


class ForgeError(ShepherdError):
    """The code host refused or failed. `host_status` is its HTTP status (0: it could not be reached); it is
    transient when the host could not be reached, rate-limits (429) or failed (5xx)."""

    code = "CODE_HOST_ERROR"
    status = 502

    def __init__(self, message: str, host_status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after,
                         transient=host_status == 0 or host_status == 429 or host_status >= 500)
        self.host_status = host_status


class Forge(Protocol):
    async def open_pull_request(self, repo: str, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request `head` -> `base` on `repo` (owner/name), or return the open one for `head`."""
        ...

    async def comment(self, repo: str, number: int, body: str) -> str:
        """Comment on issue or pull request `number`; returns the comment's html_url."""
        ...

    async def merge(self, repo: str, number: int, *, sha: str | None = None, method: str = "squash") -> str:
        """Merge pull request `number` (only if its head is still `sha`, when given); returns the merge
        commit sha. Merging one that is already merged returns its merge commit sha."""
        ...
