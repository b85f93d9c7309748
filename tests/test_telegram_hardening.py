"""Telegram, tried as an attacker would (the review of issue 15): updates whose fields have the wrong JSON types,
the bot token kept out of the logs, and the other findings' regressions. Driven through the real web app and the
fake Bot API, as tests/test_telegram_inbound.py does (its fixtures and helpers are reused)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from adapters.telegram.config import TelegramConfig
from adapters.telegram.inbound import TelegramInbound
from adapters.telegram.items import to_update
from bot.presets import agent_catalog
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Outbox
from tests.fakes.telegram_api import FakeTelegram
from tests.procs import Home, stop
from tests.test_telegram_inbound import ADMIN, GROUP, MEMBER, World, _deliveries, _pending, _world, message, tap, user


@pytest.fixture
async def tg(tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    async for world in _world(tmp_path, db_url, running=False):
        yield world


def _msg(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"}, "text": "status",
                            "from": user(MEMBER)}
    return {**base, **fields}


BOT = {"id": 4242, "is_bot": True, "first_name": "Shepherd"}
WRONG_TYPES = {
    "text a number": {"message": _msg(text=123)},
    "text a list": {"message": _msg(text=["status"])},
    "from.id a string": {"message": _msg(**{"from": {"id": "x", "is_bot": False, "first_name": "a"}})},
    "chat.id a string": {"message": _msg(chat={"id": "abc", "type": "private"})},
    "thread id a string": {"message": _msg(message_thread_id="t", is_topic_message=True)},
    "replied message_id a string": {"message": _msg(reply_to_message={"message_id": "zz", "date": 1, "from": BOT,
                                                                      "chat": {"id": 5, "type": "private"}})},
    "callback data a number": {"callback_query": {"id": "q", "from": user(MEMBER), "chat_instance": "c", "data": 7}},
}


@pytest.mark.parametrize("fields", list(WRONG_TYPES.values()), ids=list(WRONG_TYPES))
async def test_an_update_whose_fields_have_the_wrong_types_is_a_400_not_a_failure_tried_for_ever(
        tg: World, fields: dict[str, Any]) -> None:
    # before: a 200, then the handler raised (AttributeError on text/data), the row stayed `failed` and the
    # ledger's sweep tried it again and again, logging a traceback each time
    status, body = await tg.post({"update_id": 7001, **fields})
    assert status == 400 and body["error"] == "malformed_update", body
    assert await _deliveries(tg.shepherd) == []


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_the_bot_token_never_reaches_the_log(tmp_path: Path, level: str) -> None:
    # before: at the default level every Bot API call was logged by httpx with its URL, `…/bot<TOKEN>/getMe`
    async with FakeTelegram(token="4242:AAH-not-for-logs_0123456789") as fake:
        home = Home(tmp_path, TELEGRAM_BOT_TOKEN=fake.token, TELEGRAM_API_URL=fake.api_url, SHEPHERD_ORG="acme",
                    SHEPHERD_LOG_LEVEL=level)
        server = await asyncio.to_thread(home.start, "serve")
        try:
            await fake.wait_for(lambda: bool(fake.called("getUpdates")), timeout=30)
        finally:
            out = await asyncio.to_thread(stop, server)
    assert "polling getUpdates" in out and "getMe" in "".join(c.method for c in fake.calls)
    assert fake.token not in out and "AAH-not-for-logs" not in out


async def test_link_gives_no_code_in_a_group_where_everyone_would_read_it(tg: World) -> None:
    # before: `/link` in a group posted the admin's code there; any member typing it in their own Slack or GitHub
    # identity became that admin user, role and all (the same channel only spends it)
    await tg.post(message("/link", sender=ADMIN, chat=GROUP))
    refused = await tg.said_in(str(GROUP), "error")
    assert "private chat" in refused and "link code:" not in " ".join(tg.chat.said(str(GROUP)))
    await tg.post(message("/link", sender=ADMIN))  # in the private chat with the bot: the code
    assert "good once" in await tg.said_in(str(ADMIN), "your link code:")


async def test_a_new_user_s_start_is_answered_with_help_not_an_unknown_command(tg: World) -> None:
    # before: opening the bot (Telegram's client sends /start) got "error: unknown command `start`"
    await tg.post(message("/start", sender=MEMBER))
    await tg.post(message("/start from-a-deep-link", sender=ADMIN))
    for chat in (MEMBER, ADMIN):
        said = await tg.said_in(str(chat), "Commands")
        assert "status" in said and "error" not in " ".join(tg.chat.said(str(chat)))


def test_a_guessable_webhook_secret_is_refused_at_start(tmp_path: Path) -> None:
    # before: TELEGRAM_WEBHOOK_SECRET=x was taken; the header is the webhook's only proof, and whoever guesses it
    # (403s are not rate-limited) sends updates as any Telegram user, an admin named in SHEPHERD_ADMINS too
    home = Home(tmp_path, TELEGRAM_BOT_TOKEN="4242:fake-token", TELEGRAM_WEBHOOK_SECRET="x")
    refused = home.run("doctor", check=False)
    assert refused.returncode != 0 and "at least 12 characters" in refused.stdout + refused.stderr
    home.env["TELEGRAM_WEBHOOK_SECRET"] = "a-long-enough_secret"
    assert "webhook" in home.run("doctor", check=False).stdout


async def test_an_update_waiting_in_the_queue_past_its_lease_is_not_taken_again_by_the_sweep(
        tmp_path: Path, sqlite_url: str) -> None:
    # before: an update acknowledged while the bot could not start (Telegram unreachable: getMe failing) waited in
    # the queue; once its lease ran out the ledger's sweep took it again and queued it a second time, so the
    # command ran twice (two answers; a second `project create` saying it exists)
    async with FakeTelegram() as fake:
        db = Database(sqlite_url)
        shepherd = Shepherd(db, catalog=agent_catalog())
        await shepherd.orgs.ensure("acme")
        shepherd.ledger.lease_s = 0.0  # every lease has run out at once: what 120 s of waiting comes to
        fake.fail_next("getMe", 502, "Bad Gateway")
        config = TelegramConfig(bot_token=fake.token, org_id="acme", webhook_secret="s" * 16, api_url=fake.api_url,
                                default_role=Role.ADMIN)
        inbound = TelegramInbound(shepherd, config)
        await inbound.start()
        try:
            payload = message("/project create twice --repo acme/twice", sender=ADMIN)
            assert await inbound.receive(payload, to_update(payload, inbound.app.bot))
            assert await inbound.sweep() == 1  # taken again while it waits; processed once the bot is known
            await inbound.idle()
        finally:
            await inbound.stop()
        async with db.read() as session:
            answers = list(await session.exec(select(Outbox).where(col(Outbox.channel) == "telegram")))
        await db.dispose()
    assert len(answers) == 1 and "error" not in answers[0].payload["text"], [a.payload["text"] for a in answers]


def test_a_telegram_admin_named_by_username_is_refused_at_start(tmp_path: Path) -> None:
    # before: SHEPHERD_ADMINS=telegram:@ada was taken and never matched anyone (Telegram users are matched by id):
    # the operator believed they were an admin and was a viewer, with nothing saying why
    home = Home(tmp_path, TELEGRAM_BOT_TOKEN="4242:fake-token", SHEPHERD_ADMINS="telegram:@ada")
    refused = home.run("doctor", check=False)
    assert refused.returncode != 0 and "numeric user id" in refused.stdout + refused.stderr
    home.env["SHEPHERD_ADMINS"] = "telegram:4242"
    assert home.run("doctor", check=False).returncode == 0


async def test_a_tap_met_by_flood_control_is_still_answered(tg: World) -> None:
    # before: answerCallbackQuery's 429 (retry_after) was logged and the answer dropped: the tapper's spinner ran
    # until Telegram gave up, with no word of what happened to their vote
    conf = await _pending(tg.shepherd)
    tg.fake.flood_next("answerCallbackQuery", retry_after=1)
    await tg.post(tap(f"approve:{conf.id}", sender=ADMIN))
    await tg.inbound.idle()
    await tg.fake.wait_for(lambda: len(tg.fake.answers) == 1)
    assert "approved" in tg.fake.answers[0]["text"]
