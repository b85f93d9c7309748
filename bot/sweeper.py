"""The worker's sweep, beside the outbox dispatcher: task news is written for the threads of the channels that show
it (core.channels.progress.announce_due, about once a second), in every worker (it is safe to run in several processes
at once). What it writes goes out through the outbox, which it wakes. Expiry, which this sweep ran before, is the
scheduler's `expiry` job now (bot.scheduler), run by the leader alone.
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
        news_every_s: float = 1.0,
    ) -> None:
        self.progress = shepherd.progress
        self.news_channels = list(news_channels)  # the channels whose threads show tasks' progress
        self.outbox_due = outbox_due or shepherd.outbox_due
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
        if not self.news_channels:
            return  # no channel shows task news here
        while True:
            try:
                if await self.progress.announce_due(self.news_channels):
                    self.outbox_due()
            except Exception:
                log.exception("sweep failed; retrying")
            await asyncio.sleep(self.news_every_s)
