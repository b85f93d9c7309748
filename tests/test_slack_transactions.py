"""What one slash command costs the store: at most two write transactions, on SQLite and PostgreSQL. One records
the item in the delivery ledger before the ack (a group commit shared with whatever arrived with it); the other
holds everything the command does: its effect (a task), the thread its news goes to and the message that
thread begins with, its answer in the outbox, and the ledger item settled. Counted as the commits the real web
app makes for a signed request to /slack/events, until the item is processed."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import event
from sqlmodel import col, select

from adapters.slack.inbound import SlackConfig, SlackInbound
from bot.app import SLACK, create_app
from bot.presets import agent_catalog
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Delivery, Outbox, Task, Thread
from tests.fakes.slack_api import FakeSlack, signed_headers

SECRET = "count-the-commits"


@dataclass
class Counted:
    shepherd: Shepherd
    inbound: SlackInbound
    http: aiohttp.ClientSession
    url: str
    commits: list[int]

    async def command(self, text: str, *, user: str = "UADA", name: str = "ada") -> int:
        """Send `/shepherd <text>`; returns how many write transactions were committed until it was processed."""
        form = {"command": "/shepherd", "text": text, "user_id": user, "user_name": name, "channel_id": "C1",
                "team_id": "T1", "trigger_id": f"trig-{time.monotonic_ns()}"}
        return await self._send(urllib.parse.urlencode(form), "application/x-www-form-urlencoded")

    async def mention(self, text: str, *, user: str = "UADA") -> int:
        """`@Shepherd <text>` in a channel; returns the write transactions it cost, as `command`."""
        body = {"type": "event_callback", "team_id": "T1", "event_id": f"Ev{time.monotonic_ns()}",
                "event": {"type": "app_mention", "user": user, "text": f"<@U0BOT> {text}",
                          "ts": f"{time.time():.6f}", "channel": "C1"}}
        return await self._send(json.dumps(body), "application/json")

    async def _send(self, body: str, content_type: str) -> int:
        before = self.commits[0]
        async with self.http.post(f"{self.url}/slack/events", data=body.encode(),
                                  headers=signed_headers(SECRET, body, content_type=content_type)) as resp:
            assert resp.status == 200, await resp.text()
        await self.inbound.idle()
        return self.commits[0] - before


@pytest.fixture
async def counted(tmp_path: Path, db_url: str) -> AsyncIterator[Counted]:
    async with FakeSlack(bot_token="xoxb-count") as fake:
        fake.users["UADA"] = "ada"
        db = Database(db_url)
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=tmp_path / "ws")
        await shepherd.orgs.ensure("acme")
        commits = [0]

        def count(_conn: Any) -> None:
            commits[0] += 1

        event.listen(db.engine.sync_engine, "commit", count)
        config = SlackConfig(bot_token="xoxb-count", org_id="acme", signing_secret=SECRET, api_url=fake.api_url,
                             default_role=Role.OPERATOR)
        runner = web.AppRunner(create_app(db_url, shepherd=shepherd, slack=config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession() as http:
            yield Counted(shepherd, runner.app[SLACK], http, f"http://127.0.0.1:{runner.addresses[0][1]}", commits)
        await runner.cleanup()
        await db.dispose()


async def test_a_slash_command_costs_at_most_two_write_transactions(counted: Counted) -> None:
    first = await counted.command("status")  # Shepherd meets ada: recording who she is is one more, once
    assert first <= 3
    assert await counted.command("status") <= 2
    assert await counted.command('run "count the commits" --agent demo') <= 2
    assert await counted.mention("tasks") <= 2  # a mention: the same two
    async with counted.shepherd.db.read() as session:
        [task] = list(await session.exec(select(Task)))
        threads = list(await session.exec(select(Thread).where(Thread.task_id == task.id)))
        rows = list(await session.exec(select(Outbox).where(Outbox.thread_id == threads[0].id)
                                       .order_by(col(Outbox.id))))
        items = list(await session.exec(select(Delivery)))
    assert len(threads) == 1 and threads[0].opening is not None  # to be opened by its first message
    assert [r.key.split(":")[0] for r in rows] == ["opening", "reply"]  # and the command's answer, waiting
    assert [i.status for i in items] == ["done"] * 4
