"""The worker's sweeps beside the outbox dispatcher (bot/sweeper.py): a confirmation past its time expires while
the worker runs, and the sweeper wakes the dispatcher so the prompt is updated at once, not at its next poll."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col

from bot.outbox import Dispatcher
from bot.sweeper import Sweeper
from core.clock import utcnow
from core.shepherd import Shepherd
from core.store.models import Confirmation
from tests.test_confirmations import ALICE, gate, pr_plan, started_task
from tests.test_outbox import Sink


async def test_an_expired_confirmation_is_swept_and_its_prompt_updated_at_once(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)  # its thread: ("console", "alice")
    conf = await gate(shepherd, task, pr_plan())
    async with shepherd.db.write() as session:
        await session.exec(update(Confirmation).where(col(Confirmation.id) == conf.id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    sink = Sink(name="console")
    dispatcher = Dispatcher(shepherd, [sink], poll_s=3600)  # it looks only when woken
    sweeper = Sweeper(shepherd, expire_every_s=0.1)
    await dispatcher.start()
    await sweeper.start()
    try:
        for _ in range(200):
            if any("expired" in text for _, _, text in sink.delivered):
                break
            await asyncio.sleep(0.05)
    finally:
        await sweeper.stop()
        await dispatcher.stop()
    assert (await shepherd.confirmations.get(ALICE, conf.code)).status == "expired"
    [(kind, address, text)] = sink.delivered  # the prompt as it now stands (the pending version superseded)
    assert (kind, address) == ("post", "alice") and f"{conf.code} expired" in text, text
