"""core.autonomy.forge.Forge over GitHub's REST API, through gidgethub (its aiohttp client).

Each call gets its client from adapters.github.auth.GitHubAuth for the repository it acts on (the token, or the
GitHub App's installation token there). The API base URL is configurable (GitHub Enterprise, or a loopback fake
in tests). Every failure leaves as a ForgeError with GitHub's own message and status; no token appears in one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gidgethub.aiohttp import GitHubAPI

from adapters.github import calls
from adapters.github.auth import GitHubAuth
from core.autonomy.forge import ForgeError, PullRequest

T = TypeVar("T")
TIMEOUT_S = calls.TIMEOUT_S


def _pull(data: dict[str, Any], *, created: bool) -> PullRequest:
    return PullRequest(
        number=int(data["number"]), url=str(data.get("html_url") or data.get("url") or ""),
        head=str(data["head"]["ref"]), base=str(data["base"]["ref"]), state=str(data.get("state", "open")),
        merged=bool(data.get("merged", False)), created=created,
    )


class GitHubForge:
    """core.autonomy.forge.Forge on GitHub: each method is safe to repeat (an open PR is found, a merged one
    reported)."""

    def __init__(self, auth: GitHubAuth) -> None:
        self.auth = auth

    async def _call(self, doing: str, repo: str, request: Callable[[GitHubAPI], Awaitable[T]]) -> T:
        """One request with `repo`'s client, bounded by TIMEOUT_S; every way it can fail (getting the credentials
        included) leaves as a ForgeError callers can judge."""
        try:
            api = await self.auth.api(repo)
            return await calls.call(doing, request(api), secrets=self.auth.secrets(), timeout=TIMEOUT_S)
        except calls.GitHubCallFailed as exc:
            raise ForgeError(exc.message, exc.host_status, retry_after=exc.retry_after) from None

    @staticmethod
    def _owner(repo: str) -> str:
        return repo.split("/", 1)[0]

    async def _open_for(self, repo: str, head: str) -> PullRequest | None:
        """The open pull request for `head`: GitHub filters by `owner:branch`, not by the bare branch."""
        found = await self._call(f"listing pull requests of {repo}", repo, lambda api: api.getitem(
            "/repos/{+repo}/pulls{?head,state}", {"repo": repo, "head": f"{self._owner(repo)}:{head}",
                                                 "state": "open"}))
        return _pull(found[0], created=False) if found else None

    async def open_pull_request(self, repo: str, *, head: str, base: str, title: str, body: str) -> PullRequest:
        existing = await self._open_for(repo, head)
        if existing is not None:
            return existing
        try:
            data = await self._call(f"opening a pull request on {repo}", repo, lambda api: api.post(
                "/repos/{+repo}/pulls", {"repo": repo},
                data={"title": title, "head": head, "base": base, "body": body}))
        except ForgeError as exc:
            if exc.host_status == 422 and "already exists" in exc.message:  # opened by a retry a moment ago
                again = await self._open_for(repo, head)
                if again is not None:
                    return again
            raise
        return _pull(data, created=True)

    async def comment(self, repo: str, number: int, body: str) -> str:
        data = await self._call(f"commenting on {repo}#{number}", repo, lambda api: api.post(
            "/repos/{+repo}/issues/{number}/comments", {"repo": repo, "number": str(number)}, data={"body": body}))
        return str(data.get("html_url", ""))

    async def merge(self, repo: str, number: int, *, sha: str | None = None, method: str = "squash") -> str:
        payload: dict[str, Any] = {"merge_method": method}
        if sha:
            payload["sha"] = sha
        try:
            data = await self._call(f"merging {repo}#{number}", repo, lambda api: api.put(
                "/repos/{+repo}/pulls/{number}/merge", {"repo": repo, "number": str(number)}, data=payload))
        except ForgeError as exc:
            if exc.host_status == 405:  # not mergeable, or merged already: a retry after a merge that went through
                pr = await self._call(f"reading {repo}#{number}", repo, lambda api: api.getitem(
                    "/repos/{+repo}/pulls/{number}", {"repo": repo, "number": str(number)}))
                if pr.get("merged") and pr.get("merge_commit_sha"):
                    return str(pr["merge_commit_sha"])
            raise
        return str(data.get("sha", ""))
