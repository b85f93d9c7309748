"""A turn's clock (core.runners.clock): silence is judged against the idle timeout, but not on a look that came
late because Shepherd's own event loop was held up: the output that arrived meanwhile is read first."""

from __future__ import annotations

import asyncio
import time

from core.runners import ExitReason
from core.runners.clock import TurnClock


async def test_a_silent_turn_is_idle_once_its_timeout_passes() -> None:
    clock = TurnClock(idle_s=0.3, hard_s=60)
    began = time.monotonic()
    assert await asyncio.wait_for(clock.watch(0.05), 5) is ExitReason.IDLE_TIMEOUT
    assert time.monotonic() - began >= 0.3


async def test_a_held_up_loop_is_not_an_idle_agent() -> None:
    clock = TurnClock(idle_s=0.3, hard_s=60)
    watching = asyncio.create_task(clock.watch(0.05))
    await asyncio.sleep(0.1)
    time.sleep(0.8)  # noqa: ASYNC251 (the loop held up, as a busy machine does: the agent printed, unread yet)
    await asyncio.sleep(0)  # the late look comes first; then the reader reads what came
    clock.output()
    await asyncio.sleep(0.2)
    assert not watching.done(), "a look that came late judged the agent idle"
    assert await asyncio.wait_for(watching, 5) is ExitReason.IDLE_TIMEOUT  # silence afterwards still counts
