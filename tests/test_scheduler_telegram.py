"""Telegram's getUpdates poller runs on the leader only (issue 16): two processes on one data directory, and one of
them polls (two pollers of one bot take each other's updates); when the leader is killed, the other takes over and
polls."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.fakes.telegram_api import FakeTelegram
from tests.procs import Home, stop, wait_for_line
from tests.test_telegram_cli import MEMBER, _message


async def test_only_the_leader_polls_telegram_and_the_next_leader_takes_over(tmp_path: Path) -> None:
    async with FakeTelegram() as tg:
        env = {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_URL": tg.api_url, "SHEPHERD_ADMINS": f"telegram:{MEMBER}",
               "SHEPHERD_LEADER_TIMEOUT": "2"}
        first_home = Home(tmp_path, **env)
        second_home = Home(tmp_path, **env)  # the same data directory (SQLite), another port
        first = await asyncio.to_thread(first_home.start, "serve")
        second = None
        try:
            await asyncio.to_thread(wait_for_line, first, "leads now")
            second = await asyncio.to_thread(second_home.start, "serve")
            following = await asyncio.to_thread(wait_for_line, second, "background services started")
            tg.push(_message("/status", sender=MEMBER, chat=MEMBER))
            await tg.wait_for(lambda: len(tg.messages(MEMBER)) >= 1, timeout=20)  # the leader polls

            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait)
            following += await asyncio.to_thread(wait_for_line, second, "leads now")
            assert "polling getUpdates" not in following  # the follower did not poll
            await asyncio.to_thread(wait_for_line, second, "polling getUpdates")
            tg.push(_message("/status", sender=MEMBER, chat=MEMBER))
            await tg.wait_for(lambda: len(tg.messages(MEMBER)) >= 2, timeout=20)  # the new leader answers
        finally:
            log = await asyncio.to_thread(stop, second) if second is not None else ""
            await asyncio.to_thread(stop, first)
        assert "Traceback" not in log, log
