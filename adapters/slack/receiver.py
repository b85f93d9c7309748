"""From the door to processing: one road for every Slack item, whichever door it came through (HTTP or Socket
Mode), and for items replayed from the delivery ledger.

A door verifies a request and reads it once into its item (items.parse), then hands the receiver a `Request`.
Steps run on it before the ack, each in bolt's middleware shape (`async_process(req=, resp=, next=)`: answer
early, or go on); Shepherd's one step is `Recording`, the delivery ledger. What comes through all steps is
acknowledged, and processed after the ack once no ack is in hand (Slack's 3 s are for acks): the items waiting
are taken together, up to BATCH, their Slack calls made first and then their work done in one commit, each item in
a savepoint of its own (core.channels.conversations.Conversations.batch).
The ledger's sweep (`sweep`) takes items whose process died or failed, reads each stored payload with the same
`parse`, and sends the item down the same processing as a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from adapters.slack.items import BadPayload, Item, parse
from core.channels.ledger import Ledger

log = logging.getLogger(__name__)

SOURCE = "slack"
SWEEP_S = 10.0
BATCH = 32  # items done in one commit: bounds how long the work holds the store's write lock (acks wait for it)
YIELD_S = 2.0  # the longest the work on acknowledged items waits for a burst of new requests to be acked


@dataclass(frozen=True)
class Request:
    """A verified Slack payload, read once into the item Shepherd acts on."""

    item: Item
    payload: dict[str, Any]  # what the ledger keeps, to process the item again from


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: str = ""


Next = Callable[[], Awaitable[Response]]


class Middleware(Protocol):
    async def async_process(self, *, req: Request, resp: Response, next: Next) -> Response:
        """Answer `req` early, or return `await next()` to let it go on."""
        ...


class Recording:
    """The delivery ledger's step: the item is recorded under Slack's id before the ack. A new one (or one whose
    process died or failed) goes on to be processed; one done or in hand already is acknowledged, nothing more."""

    def __init__(self, ledger: Ledger, org_id: str) -> None:
        self.ledger = ledger
        self.org_id = org_id

    async def async_process(self, *, req: Request, resp: Response, next: Next) -> Response:
        if await self.ledger.receive(SOURCE, req.item.key, self.org_id, req.payload):
            return await next()
        log.info("Slack: %s was delivered before; acknowledged, not processed again", req.item.key)
        return resp


Batch = Callable[[Sequence[Callable[[], Awaitable[object]]]], Awaitable[list[Exception | None]]]


class Receiver:
    def __init__(self, handle: Callable[[Item], Awaitable[None]], ledger: Ledger,
                 middleware: Sequence[Middleware], *, prepare: Callable[[Item], Awaitable[None]] | None = None,
                 batch: Batch | None = None) -> None:
        self.handle = handle  # settles the item in the ledger, in the commit of its answer
        self.ledger = ledger
        self.middleware = list(middleware)
        self.prepare = prepare  # what an item needs of Slack, asked before its transaction
        self.batch = batch  # several items' work in one commit (None: each item its own)
        self._jobs: set[asyncio.Task[None]] = set()
        self._waiting: list[Item] = []  # acknowledged, not yet taken up
        # the keys waiting or being processed here: the sweep does not take one again when its lease runs out
        # while it waits (a backlog), or it would be processed twice
        self._in_hand: set[str] = set()
        self._worker: asyncio.Task[None] | None = None
        self._acking = 0  # requests between arrival and their ack
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._jobs:  # work acknowledged and under way finishes (or is left to the ledger's sweep)
            await asyncio.wait(self._jobs, timeout=10)

    @contextlib.contextmanager
    def acking(self) -> Iterator[None]:
        """Around a request from its arrival to its ack: processing waits (a while) for the acks in hand."""
        self._acking += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._acking -= 1
            if not self._acking:
                self._quiet.set()

    async def receive(self, req: Request) -> Response:
        """Runs the steps; an item that comes through them is processed after the ack that this answers."""
        async def start() -> Response:
            self._start(req.item)
            return Response()

        chain: Next = start
        for step in reversed(self.middleware):
            chain = _step(step, req, chain)
        return await chain()

    async def idle(self) -> None:
        """Returns when the items acknowledged so far have been processed (or given up on for now)."""
        while self._jobs:
            await asyncio.wait(set(self._jobs))

    def _start(self, item: Item) -> None:
        self._in_hand.add(item.key)
        self._waiting.append(item)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
            self._jobs.add(self._worker)
            self._worker.add_done_callback(self._jobs.discard)

    async def _work(self) -> None:
        """Works through what was acknowledged, a batch at a time, each after the acks in hand (a while)."""
        while self._waiting:
            with contextlib.suppress(TimeoutError):  # Slack's 3 s are for acks; the work can wait (a while)
                async with asyncio.timeout(YIELD_S):
                    await self._quiet.wait()
            items, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            try:
                await self._together(items)
            finally:
                self._in_hand.difference_update(item.key for item in items)

    async def _together(self, items: list[Item]) -> None:
        if self.batch is None or len(items) == 1:
            for item in items:
                await self._process(item.key, item)
            return
        try:
            if self.prepare is not None:
                for item in items:
                    await self.prepare(item)
            errors = await self.batch([partial(self.handle, item) for item in items])
        except Exception:  # the commit failed, so nothing of the batch was written: each again, on its own
            log.exception("Slack: processing %d items together failed; doing them one at a time", len(items))
            for item in items:
                await self._process(item.key, item)
            return
        for item, error in zip(items, errors, strict=True):
            if error is not None:
                log.error("Slack: processing %s failed; it will be tried again", item.key, exc_info=error)
                with contextlib.suppress(Exception):
                    await self.ledger.failed(SOURCE, item.key, f"{type(error).__name__}: {error}")

    async def _process(self, key: str, item: Item) -> None:
        try:
            if self.prepare is not None:
                await self.prepare(item)
            await self.handle(item)
        except Exception as exc:
            log.exception("Slack: processing %s failed; it will be tried again", key)
            with contextlib.suppress(Exception):
                await self.ledger.failed(SOURCE, key, f"{type(exc).__name__}: {exc}")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("Slack: ledger sweep failed; trying again")

    async def sweep(self) -> int:
        """Items acknowledged by a process that died, or that failed: read from their payload by `parse`, as when
        they were recorded, and processed as they would have been live, by one process. Returns how many."""
        rows = await self.ledger.due(SOURCE)
        for row in rows:
            if row.key in self._in_hand:  # waiting here already: processed once, by that turn
                continue
            try:
                item = parse(row.payload)
            except BadPayload as exc:  # the same payload will not read better next time
                log.warning("Slack: %s cannot be read (%s); settled without acting", row.key, exc)
                await self.ledger.done(SOURCE, row.key)
                continue
            if item is None:  # recorded by an earlier Shepherd that recorded more: nothing to do
                log.info("Slack: %s is not an item Shepherd acts on; settled without acting", row.key)
                await self.ledger.done(SOURCE, row.key)
                continue
            await self._process(row.key, item)
        return len(rows)


def _step(step: Middleware, req: Request, after: Next) -> Next:
    async def run() -> Response:
        return await step.async_process(req=req, resp=Response(), next=after)

    return run
