"""core.forge.Forge over GitHub's REST API, through gidgethub (its aiohttp client).

The API base URL is configurable (GitHub Enterprise, or a loopback fake in tests). Every failure leaves
as a ForgeError with GitHub's own message and status; the token never appears in one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import gidgethub
from gidgethub.aiohttp import GitHubAPI

from core.forge import ForgeError, PullRequest

T = TypeVar("T")
TIMEOUT_S = 30.0


def _pull(data: dict[str, Any], *, created: bool) -> PullRequest:
    return PullRequest(
        number=int(data["number"]), url=str(data.get("html_url") or data.get("url") or ""),
        head=str(data["head"]["ref"]), base=str(data["base"]["ref"]), state=str(data.get("state", "open")),
        merged=bool(data.get("merged", False)), created=created,
    )


class GitHubForge:
    def __init__(self, session: aiohttp.ClientSession, *, token: str | None, base_url: str = "https://api.github.com",
                 requester: str = "shepherd") -> None:
        self.token = token
        self.api = GitHubAPI(session, requester, oauth_token=token, base_url=base_url.rstrip("/"))

    async def _call(self, doing: str, call: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(call, timeout=TIMEOUT_S)
        except gidgethub.RateLimitExceeded as exc:
            raise ForgeError(f"{doing}: GitHub's rate limit is used up ({exc})", 429) from None
        except gidgethub.HTTPException as exc:
            raise ForgeError(f"{doing}: GitHub answered {int(exc.status_code)}: {self._clean(str(exc))}",
                             int(exc.status_code)) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ForgeError(f"{doing}: GitHub could not be reached ({type(exc).__name__})", 0) from None
        except gidgethub.GitHubException as exc:
            raise ForgeError(f"{doing}: {self._clean(str(exc))}", 0) from None

    def _clean(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, "********")
        return text[:500] or "no message"

    @staticmethod
    def _owner(repo: str) -> str:
        return repo.split("/", 1)[0]

    async def _open_for(self, repo: str, head: str) -> PullRequest | None:
        found = await self._call(f"listing pull requests of {repo}", self.api.getitem(
            "/repos/{+repo}/pulls{?head,state}", {"repo": repo, "head": f"{self._owner(repo)}:{head}",
                                                 "state": "open"}))
        return _pull(found[0], created=False) if found else None

    async def open_pull_request(self, repo: str, *, head: str, base: str, title: str, body: str) -> PullRequest:
        existing = await self._open_for(repo, head)
        if existing is not None:
            return existing
        try:
            data = await self._call(f"opening a pull request on {repo}", self.api.post(
                "/repos/{+repo}/pulls", {"repo": repo},
                data={"title": title, "head": head, "base": base, "body": body}))
        except ForgeError as exc:
            if exc.status == 422 and "already exists" in exc.message:  # opened by a retry a moment ago
                again = await self._open_for(repo, head)
                if again is not None:
                    return again
            raise
        return _pull(data, created=True)

    async def comment(self, repo: str, number: int, body: str) -> str:
        data = await self._call(f"commenting on {repo}#{number}", self.api.post(
            "/repos/{+repo}/issues/{number}/comments", {"repo": repo, "number": str(number)}, data={"body": body}))
        return str(data.get("html_url", ""))

    async def merge(self, repo: str, number: int, *, sha: str | None = None, method: str = "squash") -> str:
        payload: dict[str, Any] = {"merge_method": method}
        if sha:
            payload["sha"] = sha
        try:
            data = await self._call(f"merging {repo}#{number}", self.api.put(
                "/repos/{+repo}/pulls/{number}/merge", {"repo": repo, "number": str(number)}, data=payload))
        except ForgeError as exc:
            if exc.status == 405:  # not mergeable, or merged already: a retry after a merge that went through
                pr = await self._call(f"reading {repo}#{number}", self.api.getitem(
                    "/repos/{+repo}/pulls/{number}", {"repo": repo, "number": str(number)}))
                if pr.get("merged") and pr.get("merge_commit_sha"):
                    return str(pr["merge_commit_sha"])
            raise
        return str(data.get("sha", ""))
