"""Reading a Server-Sent Events stream as a client does: aiohttp's client on the real response, line by line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Event:
    event: str  # "message" when the stream named none
    data: Any
    id: str | None = None


async def events(resp: aiohttp.ClientResponse, *, comments: list[str] | None = None) -> AsyncIterator[Event]:
    """The events of `resp` until the server closes it; comment lines (heartbeats) go to `comments`."""
    name, data, ident = "message", [], None
    while True:
        raw = await resp.content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)), ident)
            name, data, ident = "message", [], None
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                ident = value
