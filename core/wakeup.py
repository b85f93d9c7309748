"""A wake-up one service gives another through their constructors: "there is work for you now"."""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """Called by whoever wrote work down (a row in the outbox), awaited by the one service that does it (the outbox
    dispatcher), which otherwise finds the work at its next poll. Saying it twice before the wait is saying it once.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self, at_most_s: float) -> None:
        """Until called (or `at_most_s` seconds: a poll); then the next wait waits for the next call."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that comes as the event is set
        # (a stop right after a wake-up), and the waiting service would never stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await self._event.wait()
        self._event.clear()
