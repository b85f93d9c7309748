"""The worker's sweeps, beside the outbox dispatcher: confirmations past their time expire (a reject,
core.autonomy.confirmations.expire_due, every few seconds), and task news is written for the threads of the channels
that show it (core.channels.progress.announce_due, about once a second). What they write goes out through the outbox,
which they wake. A scheduler will take these over; each is one call, safe to run in several processes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from core.shepherd import Shepherd
from core.wakeup import Wakeup

log = logging.getLogger(__name__)


class Sweeper:
    name = "sweeper"

    def __init__(
        self, shepherd: Shepherd, *, news_channels: Sequence[str] = (), outbox_due: Wakeup | None = None,
        expire_every_s: float = 5.0, news_every_s: float = 1.0,
    ) -> None:
        self.confirmations = shepherd.confirmations
        self.progress = shepherd.progress
        self.news_channels = list(news_channels)  # the channels whose threads show tasks' progress
        self.outbox_due = outbox_due or shepherd.outbox_due
        self.expire_every_s = expire_every_s
        self.news_every_s = news_every_s
        self._job: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._job = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_expiry = next_news = loop.time()
        while True:
            try:
                wrote = 0
                if loop.time() >= next_expiry:
                    next_expiry = loop.time() + self.expire_every_s
                    wrote += await self.confirmations.expire_due()
                if self.news_channels and loop.time() >= next_news:
                    next_news = loop.time() + self.news_every_s
                    wrote += await self.progress.announce_due(self.news_channels)
                if wrote:
                    self.outbox_due()
            except Exception:
                log.exception("sweep failed; retrying")
                await asyncio.sleep(1)
            due = min(next_expiry, next_news) if self.news_channels else next_expiry
            await asyncio.sleep(max(0.0, due - loop.time()))
