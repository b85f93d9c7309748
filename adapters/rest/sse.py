"""Server-Sent Events: one way every live stream is written (CloudCoding's invoke, a Coder task's logs followed,
a session's replay followed).

A stream is an async iterator of `Sse` items. Between items a comment line goes out every heartbeat, so that a
proxy does not cut an idle stream. A client that goes away ends the stream here and closes the iterator (its
`finally` blocks run); what the stream was showing goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

SSE_HEARTBEAT = web.AppKey("sse_heartbeat_s", float)
HEARTBEAT_S = 15.0  # under the 30-60 s idle limits of common proxies and load balancers
# how often a live follow of tasks (core.tasks.follow) reads when this process's runner did not wake it (tests: less)
FOLLOW_POLL = web.AppKey("follow_poll_s", float)


@dataclass(frozen=True)
class Sse:
    """One event: `event:` name (None: the default `message`), `data:` JSON, optional `id:`."""

    data: Any
    event: str | None = None
    id: str | None = None

    def encode(self) -> bytes:
        head = b""
        if self.event:
            head += b"event: " + _line(self.event) + b"\n"
        if self.id is not None:
            head += b"id: " + _line(self.id) + b"\n"
        # orjson escapes every control character inside strings, so the JSON is one line
        return head + b"data: " + orjson.dumps(self.data) + b"\n\n"


def _line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode()


def heartbeat_of(request: web.Request) -> float:
    return request.app.get(SSE_HEARTBEAT, HEARTBEAT_S)


async def stream(request: web.Request, items: AsyncIterator[Sse], *, status: int = 200,
                 headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Answer `request` with `items` as an event stream, until they end or the client leaves."""
    response = web.StreamResponse(status=status, headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each event on as it comes
        **(headers or {}),
    })
    await response.prepare(request)
    every = heartbeat_of(request)
    nxt: asyncio.Future[Sse] | None = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({nxt}, timeout=every)
            if not done:
                await response.write(b": keep-alive\n\n")
                continue
            try:
                item = nxt.result()
            except StopAsyncIteration:
                break
            nxt = None
            await response.write(item.encode())
        await response.write_eof()
    except ConnectionResetError:  # noticed at the next write: an event or a heartbeat
        log.debug("SSE client left %s", request.path)
    except Exception:  # headers are gone: the stream can only end; what it showed is logged, not lost
        log.exception("SSE stream on %s ended by an error", request.path)
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
        with contextlib.suppress(Exception):
            await items.aclose()  # type: ignore[attr-defined]
    return response
