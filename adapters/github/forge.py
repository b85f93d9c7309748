"""core.autonomy.forge.Forge over GitHub's REST API, through gidgethub (its aiohttp client).

The API base URL is configurable (GitHub Enterprise, or a loopback fake in tests). Every failure leaves
as a ForgeError with GitHub's own message and status; the token never appears in one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import gidgethub
from gidgethub.aiohttp import GitHubAPI

from core.autonomy.forge import ForgeError, PullRequest

T = TypeVar("T")
TIMEOUT_S = 30.0


def _pull(data: dict[str, Any], *, created: bool) -> PullRequest:
    return PullRequest(
        number=int(data["number"]), url=str(data.get("html_url") or data.get("url") or ""),
        head=str(data["head"]["ref"]), base=str(data["base"]["ref"]), state=str(data.get("state", "open")),
        merged=bool(data.get("merged", False)), created=created,
    )


def _resets(exc: gidgethub.RateLimitExceeded) -> str:
    reset = getattr(exc.rate_limit, "reset_datetime", None)
    return f" until {reset:%H:%M:%S} UTC" if reset is not None else ""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class GitHubForge:
    """core.autonomy.forge.Forge on GitHub: each method is safe to repeat (an open PR is found, a merged one
    reported)."""

    def __init__(self, session: aiohttp.ClientSession, *, token: str | None, base_url: str = "https://api.github.com",
                 requester: str = "shepherd") -> None:
        self.token = token
        self.api = GitHubAPI(session, requester, oauth_token=token, base_url=base_url.rstrip("/"))

    async def _call(self, doing: str, call: Awaitable[T]) -> T:
        """One request, bounded by TIMEOUT_S; every way it can fail leaves as a ForgeError callers can judge."""
        try:
            return await asyncio.wait_for(call, timeout=TIMEOUT_S)
        except gidgethub.RateLimitExceeded as exc:
            reset = getattr(exc.rate_limit, "reset_datetime", None)
            wait = max(1.0, (reset - datetime.now(UTC)).total_seconds()) if reset is not None else None
            raise ForgeError(f"{doing}: GitHub's rate limit is used up{_resets(exc)} ({self._clean(str(exc))})",
                             429, retry_after=wait) from None
        except gidgethub.HTTPException as exc:
            status, text = int(exc.status_code), self._clean(str(exc))
            retry_after = exc.headers.get("retry-after")
            if status in (403, 429) and (retry_after or "rate limit" in text.lower()):
                # A secondary (abuse) limit: GitHub says 403 or 429 and when to come back; either way, wait and retry.
                wait = f", retry after {retry_after} s" if retry_after else ""
                raise ForgeError(f"{doing}: GitHub's secondary rate limit{wait}: {text}", 429,
                                 retry_after=_seconds(retry_after)) from None
            raise ForgeError(f"{doing}: GitHub answered {status}: {text}", status) from None
        except TimeoutError:
            raise ForgeError(f"{doing}: GitHub did not answer within {TIMEOUT_S:g} s", 0) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ForgeError(f"{doing}: GitHub could not be reached ({type(exc).__name__})", 0) from None
        except gidgethub.GitHubException as exc:
            raise ForgeError(f"{doing}: {self._clean(str(exc))}", 0) from None

    def _clean(self, text: str) -> str:
        """GitHub's words, bounded, with the token blanked should any error ever echo it."""
        if self.token:
            text = text.replace(self.token, "********")
        return text[:500] or "no message"

    @staticmethod
    def _owner(repo: str) -> str:
        return repo.split("/", 1)[0]

    async def _open_for(self, repo: str, head: str) -> PullRequest | None:
        """The open pull request for `head`: GitHub filters by `owner:branch`, not by the bare branch."""
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
            if exc.host_status == 422 and "already exists" in exc.message:  # opened by a retry a moment ago
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
            if exc.host_status == 405:  # not mergeable, or merged already: a retry after a merge that went through
                pr = await self._call(f"reading {repo}#{number}", self.api.getitem(
                    "/repos/{+repo}/pulls/{number}", {"repo": repo, "number": str(number)}))
                if pr.get("merged") and pr.get("merge_commit_sha"):
                    return str(pr["merge_commit_sha"])
            raise
        return str(data.get("sha", ""))
