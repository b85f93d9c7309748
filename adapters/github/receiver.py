"""From the acknowledged delivery to its processing, for GitHub: the door (adapters/github/inbound.py) has
verified and recorded a delivery in the ledger; here it is processed after the ack, by a few workers, and the
deliveries there is nothing to do for are settled together (one commit for a burst of comments that carry no
command). A delivery whose processing fails is marked failed in the ledger: a redelivery, or the sweep after a
backoff, processes it again; one whose process died is taken up by the sweep after its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.github.items import Item
from adapters.github.routes import route
from core.channels.ledger import Ledger

log = logging.getLogger(__name__)

SOURCE = "github"
WORKERS = 4  # deliveries processed at once (each may ask GitHub something: trust, a reaction)
SWEEP_S = 10.0

class TryLater(RuntimeError):
    """Processing cannot be done right now (GitHub cannot say something it must know first): the delivery is
    marked failed and processed again after the ledger's backoff, with a warning rather than a traceback."""


# What processing returns: True when it settled the delivery itself (in the commit of its effect), False when
# there was nothing to do and the receiver settles it (with others).
Handle = Callable[[Item], Awaitable[bool]]


def stored(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a delivery, to process it again from: the event and its payload."""
    return {"event": event, "payload": payload}


class Receiver:
    def __init__(self, handle: Handle, ledger: Ledger) -> None:
        self.handle = handle
        self.ledger = ledger
        self._queue: asyncio.Queue[tuple[str, Item | None]] = asyncio.Queue()
        # the deliveries queued or being processed here: the sweep does not take one again when its lease runs out
        # while it waits (a backlog), or it would be processed twice
        self._in_hand: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._to_settle: list[str] = []
        self._settler: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._workers) if t is not None]
        with contextlib.suppress(TimeoutError):  # work under way finishes (or is left to the ledger's sweep)
            async with asyncio.timeout(10):
                await self.idle()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    def accepted(self, key: str, item: Item | None) -> None:
        """A delivery recorded and acknowledged: processed from now on, after the ack."""
        self._in_hand.add(key)
        self._queue.put_nowait((key, item))
        if len(self._workers) < WORKERS:
            self._workers.append(asyncio.get_running_loop().create_task(self._work()))

    async def idle(self) -> None:
        """Returns when the deliveries acknowledged so far have been processed (or given up on for now)."""
        await self._queue.join()
        while self._settler is not None and not self._settler.done():
            await asyncio.wait({self._settler})

    async def _work(self) -> None:
        while True:
            key, item = await self._queue.get()
            try:
                await self._process(key, item)
            finally:
                self._in_hand.discard(key)
                self._queue.task_done()

    async def _process(self, key: str, item: Item | None) -> None:
        try:
            settled = await self.handle(item) if item is not None else False
        except TryLater as exc:
            log.warning("GitHub: delivery %s waits: %s", key, exc)
            with contextlib.suppress(Exception):
                await self.ledger.failed(SOURCE, key, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:
            log.exception("GitHub: processing delivery %s failed; it will be tried again", key)
            with contextlib.suppress(Exception):
                await self.ledger.failed(SOURCE, key, f"{type(exc).__name__}: {exc}")
            return
        if not settled:
            self._settle(key)

    def _settle(self, key: str) -> None:
        self._to_settle.append(key)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(self._settle_all())

    async def _settle_all(self) -> None:
        while self._to_settle:
            keys, self._to_settle = self._to_settle, []
            try:
                await self.ledger.done_many(SOURCE, keys)
            except Exception:  # left `received`: the sweep takes them up after their lease, and settles them
                log.exception("GitHub: settling %d deliveries failed", len(keys))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("GitHub: ledger sweep failed; trying again")

    async def sweep(self) -> int:
        """Deliveries acknowledged by a process that died, or that failed: routed again from their stored payload,
        as when they arrived, and processed the same way. Returns how many."""
        rows = await self.ledger.due(SOURCE)
        for row in rows:
            if row.key in self._in_hand:  # waiting here already: processed once, by that turn
                continue
            event, payload = row.payload.get("event"), row.payload.get("payload")
            item = route(event, payload, row.key) if isinstance(event, str) and isinstance(payload, dict) else None
            await self._process(row.key, item)
        return len(rows)
