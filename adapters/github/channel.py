"""GitHub as an outbox Channel (core.channels.outbox): threads are issues and pull requests, `owner/name#number`.

- A task's news (its status, the confirmations it asks, its outcomes: every Message with `task` set) goes into ONE
  sticky comment on the issue, posted with the first of them and edited in place (adapters.github.comments). It
  is found again by its hidden marker after a restart (the issue's comments are listed once), so a retry or a
  new process edits it and never posts a second one.
- Everything else (answers to commands, notices) is an ordinary comment; a later version of the same message
  (a confirmation not of a task, decided) edits it.
- Edits are paced per issue (`pace_s`, by the outbox); GitHub's rate limits, the primary one and the secondary
  403/429 with Retry-After, come back to the outbox as a DeliveryError with `retry_after`, so it waits, holding
  nothing, and sends the newest version then.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import gidgethub
from gidgethub.aiohttp import GitHubAPI

from adapters.github.auth import GitHubAuth
from adapters.github.calls import GitHubCallFailed, call
from adapters.github.comments import BODY_MAX, HANDLE, Sticky, render
from core.channels.outbox import DeliveryError, Message

T = TypeVar("T")
PACE_S = 2.0  # edits of one issue's comments at most every 2 s: GitHub asks for a second between writes, and more
RATE_LIMIT_WAIT_S = 60.0  # a rate limit that does not say when it ends: GitHub's advice is to wait a minute
STICKY = "sticky:"  # a ref to a task's sticky comment (the comment id follows)
PERMANENT = frozenset({403, 404, 410, 422})  # no permission, the issue or comment is gone, a body GitHub refuses
_ADDRESS = re.compile(r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#([1-9][0-9]*)$")


@dataclass(frozen=True)
class Place:
    """An issue or pull request: `owner/name#number`."""

    repo: str
    number: int

    @classmethod
    def parse(cls, address: str) -> Place:
        found = _ADDRESS.match(address)
        if found is None:
            raise DeliveryError(f"github: {address!r} is not an issue or pull request (owner/name#number)",
                                permanent=True)
        return cls(found.group(1), int(found.group(2)))

    def __str__(self) -> str:
        return f"{self.repo}#{self.number}"


def delivery_error(exc: GitHubCallFailed) -> DeliveryError:
    """The outbox's reading of a failed call: wait for a rate limit's end, give up on what cannot work."""
    if exc.host_status == 429:
        wait = exc.retry_after if exc.retry_after is not None else RATE_LIMIT_WAIT_S
        return DeliveryError(f"github: {exc.message}", retry_after=wait)
    return DeliveryError(f"github: {exc.message}", permanent=exc.host_status in PERMANENT)


class GitHubChannel:
    name = "github"
    progress = True
    pace_s = PACE_S

    def __init__(self, auth: GitHubAuth, *, handle: str = HANDLE) -> None:
        self.auth = auth
        self.handle = handle  # SHEPHERD_GITHUB_HANDLE: the approval hints name the command people type
        self._stickies: dict[tuple[str, str], Sticky] = {}  # (address, task id) -> the comment as last written
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def accepts(self, address: str) -> bool:
        return True  # one set of credentials reaches every repository Shepherd may act on

    def pace_key(self, address: str) -> str:
        return address  # one issue: the comments people are reading change at most every pace_s

    async def _call(self, doing: str, place: Place, request: Callable[[GitHubAPI], Awaitable[T]]) -> T:
        api: GitHubAPI | None = None
        try:
            api = await self.auth.api(place.repo)
            return await call(doing, request(api), secrets=self.auth.secrets())
        except GitHubCallFailed as exc:
            if exc.host_status == 401 and api is not None and api.oauth_token:
                self.auth.forget(api.oauth_token)  # an installation token revoked early: the next try mints anew
            raise delivery_error(exc) from None

    # --- ordinary comments --------------------------------------------------------------------------

    async def _create(self, place: Place, body: str) -> int:
        data = await self._call(f"commenting on {place}", place, lambda api: api.post(
            "/repos/{+repo}/issues/{number}/comments", {"repo": place.repo, "number": str(place.number)},
            data={"body": body[:BODY_MAX]}))
        return int(data["id"])

    async def _edit(self, place: Place, comment_id: int, body: str) -> None:
        await self._call(f"editing comment {comment_id} on {place}", place, lambda api: api.patch(
            "/repos/{+repo}/issues/comments/{id}", {"repo": place.repo, "id": str(comment_id)},
            data={"body": body[:BODY_MAX]}))

    async def post(self, address: str, message: Message) -> str:
        place = Place.parse(address)
        if message.task:
            return await self._sticky(place, address, message)
        return str(await self._create(place, render(message, self.handle)))

    async def update(self, address: str, ref: str, message: Message) -> None:
        place = Place.parse(address)
        if message.task or ref.startswith(STICKY):
            await self._sticky(place, address, message)
            return
        await self._edit(place, int(ref), render(message, self.handle))

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        """An issue is a thread already: the opening message is a comment on it, and the thread stays there."""
        return await self.post(address, message), address

    # --- a task's sticky comment ---------------------------------------------------------------------

    async def _sticky(self, place: Place, address: str, message: Message) -> str:
        """Place `message` in its task's sticky comment on `place`: post it the first time, edit it after. One
        writer at a time per comment in this process; the comment's own state line carries the rest."""
        key = (address, message.task)
        async with self._locks.setdefault(key, asyncio.Lock()):
            sticky = self._stickies.get(key) or await self._find(place, message.task)
            before = sticky.body() if sticky.comment_id is not None else None
            changed = Sticky(sticky.task_id, sticky.comment_id, dict(sticky.parts or {}), self.handle)
            changed.put(message)
            body = changed.body()
            if changed.comment_id is None:
                changed.comment_id = await self._create(place, body)
            elif body != before:
                try:
                    await self._edit(place, changed.comment_id, body)
                except DeliveryError as exc:
                    if exc.transient:
                        raise
                    # deleted by someone (404), or not ours to edit: a new one carries the news from now on
                    self._stickies.pop(key, None)
                    changed.comment_id = await self._create(place, body)
            self._stickies[key] = changed
            return f"{STICKY}{changed.comment_id}"

    async def _find(self, place: Place, task_id: str) -> Sticky:
        """The task's sticky comment on `place` as GitHub has it (after a restart), or a new one not yet posted.
        Only Shepherd's own comments count: anyone can write a comment that begins with the marker (and a state
        line of parts Shepherd would then show as its own), so while Shepherd cannot say who it is, it waits."""
        me = await self._login()
        if me is None:
            raise DeliveryError(f"github: Shepherd's own login could not be read, so its comment on {place} cannot "
                                "be told from others' yet")
        comments: list[dict[str, Any]] = await self._call(f"listing the comments of {place}", place, lambda api: _all(
            api.getiter("/repos/{+repo}/issues/{number}/comments{?per_page}",
                        {"repo": place.repo, "number": str(place.number), "per_page": "100"})))
        for comment in comments:
            author = str((comment.get("user") or {}).get("login") or "")
            if author.lower() != me.lower():
                continue
            found = Sticky.read(task_id, int(comment["id"]), str(comment.get("body") or ""), self.handle)
            if found is not None:
                return found
        return Sticky(task_id, handle=self.handle)

    async def _login(self) -> str | None:
        try:
            return await self.auth.login()
        except (GitHubCallFailed, gidgethub.GitHubException, aiohttp.ClientError, OSError):
            return None


async def _all(items: Any) -> list[dict[str, Any]]:
    return [dict(item) async for item in items]
