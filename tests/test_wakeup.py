"""core.wakeup: a wake-up given through constructors. A service waiting on it stops when cancelled, even when the
cancellation comes just as it is woken (a stop right after core wrote rows: every console command ends so)."""

from __future__ import annotations

import asyncio

import pytest

from core.wakeup import Wakeup


async def test_a_call_ends_the_wait_and_the_next_wait_waits_for_the_next_call() -> None:
    wakeup = Wakeup()
    wakeup()
    wakeup()  # twice before the wait is once
    await asyncio.wait_for(wakeup.wait(3600), 5)
    waiting = asyncio.get_running_loop().create_task(wakeup.wait(3600))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    wakeup()
    await asyncio.wait_for(waiting, 5)


@pytest.mark.parametrize("steps", range(5))
async def test_a_service_stopped_as_it_is_woken_stops(steps: int) -> None:
    wakeup = Wakeup()

    async def service() -> None:
        while True:
            await wakeup.wait(3600)

    running = asyncio.get_running_loop().create_task(service())
    await asyncio.sleep(0)
    wakeup()
    for _ in range(steps):  # the cancellation arrives at each point of the wake-up's way through the loop
        await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)
