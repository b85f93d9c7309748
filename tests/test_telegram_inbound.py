"""Telegram in, end to end: updates to the real web app's POST /telegram/webhook (with and without the secret) or
handed out by the fake Bot API's getUpdates to Shepherd's own polling loop, through python-telegram-bot's
Application (built with updater(None)) against the loopback fake (tests/fakes/telegram_api.py), the delivery
ledger, core's conversations and, for the task tests, the real supervisor running the demo agent.

The outbound Telegram channel is another part of issue 15: here the outbox's rows for Telegram are delivered by a
recording channel (`Chat`) that numbers the messages it posts as Telegram does, so replies can name them."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlmodel import col, select

from adapters.telegram.commands import bot_commands
from adapters.telegram.config import TelegramConfig
from adapters.telegram.inbound import TelegramInbound
from bot.app import TELEGRAM, create_app
from bot.callbacks import write_launcher
from bot.outbox import Dispatcher
from bot.presets import agent_catalog
from bot.sweeper import Sweeper
from core.autonomy.plans import Plan
from core.autonomy.policy import PolicyStore
from core.channels.outbox import Message
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Confirmation, Delivery, Task
from tests.fakes.telegram_api import FakeTelegram
from tests.gitrepos import github_host
from tests.test_tasks import fast_config, supervisor

MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "telegram-commands.json"
SECRET = "tg-webhook-secret_42"
ADMIN, MEMBER, VIEWER = 1001, 1002, 1003
GROUP = -100777
CONSOLE = Principal.for_role("acme", "ops", Role.ADMIN, "console")
_ids = itertools.count(1)


@dataclass
class Chat:
    """The outbox's Telegram deliveries, recorded (a stand-in for the outbound channel): message ids as Telegram's."""

    name: str = "telegram"
    progress: bool = True
    pace_s: float = 0.0
    posted: dict[str, tuple[str, Message]] = field(default_factory=dict)  # message_id -> (address, message)
    _next: itertools.count[int] = field(default_factory=lambda: itertools.count(500))

    def pace_key(self, address: str) -> str:
        return address.split(":")[0]

    def accepts(self, address: str) -> bool:
        return True

    async def post(self, address: str, message: Message) -> str:
        ref = str(next(self._next))
        self.posted[ref] = (address, message)
        return ref

    async def update(self, address: str, ref: str, message: Message) -> None:
        self.posted[ref] = (address, message)

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        return await self.post(address, message), address

    def said(self, address: str) -> list[str]:
        return [m.text for a, m in self.posted.values() if a == address]


@dataclass
class World:
    shepherd: Shepherd
    fake: FakeTelegram
    chat: Chat
    http: aiohttp.ClientSession
    url: str
    app: web.Application

    @property
    def inbound(self) -> TelegramInbound:
        return self.app[TELEGRAM]

    async def post(self, update: dict[str, Any], *, secret: str | None = SECRET, raw: bytes | None = None
                   ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        body = raw if raw is not None else json.dumps(update).encode()
        async with self.http.post(f"{self.url}/telegram/webhook", data=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def said_in(self, address: str, words: str, timeout: float = 15) -> str:
        try:
            await self.fake.wait_for(lambda: any(words in t for t in self.chat.said(address)), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"{words!r} not said at {address}: {self.chat.said(address)}") from None
        return next(t for t in self.chat.said(address) if words in t)

    async def tasks(self) -> list[Task]:
        async with self.shepherd.db.read() as session:
            return list(await session.exec(select(Task).where(Task.org_id == "acme")))

    async def until_task(self, test: Any, timeout: float = 30) -> Task:
        deadline = time.monotonic() + timeout
        while True:
            for task in await self.tasks():
                if test(task):
                    return task
            if time.monotonic() > deadline:
                raise AssertionError(f"no such task: {[(t.name, t.status, t.turns) for t in await self.tasks()]}")
            await asyncio.sleep(0.05)


def user(uid: int) -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": f"P{uid}", "username": {ADMIN: "ada", MEMBER: "mo",
                                                                              VIEWER: "vi"}.get(uid, f"u{uid}")}


def message(text: str, *, sender: int = MEMBER, chat: int | None = None, reply_to: int | None = None,
            thread: int | None = None, update_id: int | None = None) -> dict[str, Any]:
    chat_id = chat if chat is not None else sender
    msg: dict[str, Any] = {
        "message_id": next(_ids), "date": int(time.time()), "from": user(sender), "text": text,
        "chat": {"id": chat_id, "type": "private", "first_name": "P"} if chat_id > 0 else
                {"id": chat_id, "type": "supergroup", "title": "dev", "is_forum": thread is not None},
    }
    if text.startswith("/"):
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    if reply_to is not None:
        msg["reply_to_message"] = {"message_id": reply_to, "date": int(time.time()), "chat": msg["chat"],
                                   "from": {"id": 4242, "is_bot": True, "first_name": "Shepherd",
                                            "username": "shepherd_bot"}, "text": "..."}
    if thread is not None:
        msg["message_thread_id"], msg["is_topic_message"] = thread, True
    return {"update_id": update_id if update_id is not None else next(_ids), "message": msg}


def tap(data: str, *, sender: int, chat: int = GROUP) -> dict[str, Any]:
    return {"update_id": next(_ids), "callback_query": {
        "id": f"cq{next(_ids)}", "from": user(sender), "chat_instance": "ci", "data": data,
        "message": {"message_id": 900, "date": int(time.time()), "chat": {"id": chat, "type": "supergroup",
                                                                           "title": "dev"}, "text": "prompt"}}}


async def _world(tmp_path: Path, db_url: str, *, running: bool) -> AsyncIterator[World]:
    async with FakeTelegram() as fake:
        db = Database(db_url)
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo",
                            workspace_root=tmp_path / "data" / "workspaces", policies=PolicyStore(tmp_path / "pol"))
        await shepherd.orgs.ensure("acme")
        config = TelegramConfig(bot_token=fake.token, org_id="acme", webhook_secret=SECRET, api_url=fake.api_url,
                                public_url="http://shepherd.test", default_role=Role.OPERATOR,
                                admins=frozenset({str(ADMIN)}))
        app = create_app(db_url, shepherd=shepherd, telegram=config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        chat = Chat()
        services: list[Any] = [Dispatcher(shepherd, [chat], poll_s=0.05)]
        if running:
            hosts = github_host(tmp_path)
            run_config = replace(fast_config(tmp_path / "data"), git_base_url=str(hosts), idle_timeout_s=5,
                                 callback_url=url, tool_dir=write_launcher(tmp_path / "bin"))
            services += [supervisor(shepherd, run_config), Sweeper(shepherd, news_channels=["telegram"],
                                                                   news_every_s=0.2)]
        for service in services:
            await service.start()
        async with aiohttp.ClientSession() as http:
            try:
                yield World(shepherd, fake, chat, http, url, app)
            finally:
                for service in reversed(services):
                    await service.stop()
                await runner.cleanup()
                await db.dispose()


@pytest.fixture
async def tg(tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    async for world in _world(tmp_path, db_url, running=False):
        yield world


@pytest.fixture
async def tg_running(tmp_path: Path, sqlite_url: str) -> AsyncIterator[World]:
    async for world in _world(tmp_path, sqlite_url, running=True):
        yield world


async def _deliveries(shepherd: Shepherd) -> list[Delivery]:
    async with shepherd.db.read() as session:
        return list(await session.exec(select(Delivery).where(Delivery.source == "telegram")))


# --- the door ----------------------------------------------------------------------------------------------


async def test_start_up_sets_the_command_menu_and_the_webhook_with_its_secret(tg: World) -> None:
    await tg.fake.wait_for(lambda: bool(tg.fake.webhook) and bool(tg.fake.commands))
    assert tg.fake.webhook["url"] == "http://shepherd.test/telegram/webhook"
    assert tg.fake.webhook["secret_token"] == SECRET
    assert set(tg.fake.webhook["allowed_updates"]) == {"message", "callback_query"}
    assert tg.fake.commands == bot_commands()
    assert {"run", "status", "pending", "approve"} <= {c["command"] for c in tg.fake.commands}


async def test_a_webhook_request_without_the_right_secret_is_refused_and_nothing_recorded(tg: World) -> None:
    update = message("/status")
    assert (await tg.post(update, secret=None))[0] == 401
    status, body = await tg.post(update, secret="not-the-secret")
    assert status == 403 and "TELEGRAM_WEBHOOK_SECRET" in body["message"]
    assert await _deliveries(tg.shepherd) == []
    assert (await tg.post(update))[0] == 200
    await tg.inbound.idle()
    assert [d.status for d in await _deliveries(tg.shepherd)] == ["done"]


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"update_id": "7"}', b'{"update_id": NaN}',
                                 b'{"update_id": 5, "message": "hi"}', b"\xff\xfe"])
async def test_a_body_that_is_no_update_is_a_400(tg: World, raw: bytes) -> None:
    status, body = await tg.post({}, raw=raw)
    assert status == 400 and body["error"] == "malformed_update"
    assert await _deliveries(tg.shepherd) == []


async def test_a_redelivered_update_acts_once(tg: World) -> None:
    update = message('/project create web --repo acme/web', sender=ADMIN)
    for _ in range(3):
        assert (await tg.post(update))[0] == 200
    await tg.inbound.idle()
    await tg.said_in(str(ADMIN), "web")
    await asyncio.sleep(0.3)
    assert len(tg.chat.said(str(ADMIN))) == 1
    [row] = await _deliveries(tg.shepherd)
    assert row.redeliveries == 2 and row.status == "done" and str(update["update_id"]) in row.key


async def test_the_route_says_what_to_set_when_telegram_is_off(tmp_path: Path, sqlite_url: str) -> None:
    app = create_app(sqlite_url)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{runner.addresses[0][1]}/telegram/webhook", json={"update_id": 1}) as resp:
            assert resp.status == 404 and "TELEGRAM_BOT_TOKEN" in (await resp.json())["message"]
    finally:
        await runner.cleanup()


# --- commands ------------------------------------------------------------------------------------------------


async def test_commands_in_a_private_chat_and_in_a_group(tg: World) -> None:
    await tg.post(message("/status"))  # private: /command
    await tg.said_in(str(MEMBER), "")
    await tg.post(message("help run"))  # private: plain text is a command
    assert "--agent" in await tg.said_in(str(MEMBER), "--repo")
    await tg.post(message("/pending@Shepherd_Bot", chat=GROUP))  # group: /command@ThisBot, any case
    await tg.said_in(str(GROUP), "")
    await tg.post(message("/status@OtherBot", chat=GROUP))  # another bot's: ignored
    await tg.post(message("status", chat=GROUP))  # group chatter: not a command
    await tg.post(message("/help@OtherBot"))  # another bot's, even in private
    await tg.inbound.idle()
    await asyncio.sleep(0.3)
    assert len(tg.chat.said(str(GROUP))) == 1 and len(tg.chat.said(str(MEMBER))) == 2
    assert {d.status for d in await _deliveries(tg.shepherd)} == {"done"}


async def test_a_typo_gets_a_did_you_mean_and_a_phone_s_curly_quotes_read_as_typed(tg: World) -> None:
    await tg.post(message("/stauts", sender=ADMIN))
    assert "status" in await tg.said_in(str(ADMIN), "Did you mean")
    await tg.post(message("/project create “web-app” —repo acme/web", sender=ADMIN))
    created = await tg.said_in(str(ADMIN), "web-app")
    assert "acme/web" in created and "error" not in created


async def test_a_viewer_s_approve_is_refused(tg: World) -> None:
    await tg.post(message("/approve K7P2", sender=VIEWER))
    assert "approve" in (await tg.said_in(str(VIEWER), "error")).lower()


# --- tasks -----------------------------------------------------------------------------------------------------


async def test_run_binds_the_chat_and_a_reply_to_the_task_s_message_is_a_follow_up(tg_running: World) -> None:
    tg = tg_running
    await tg.post(message('/run "first turn" --agent demo', chat=GROUP, sender=ADMIN))
    task = await tg.until_task(lambda t: t.turns == 1 and t.outcome == "succeeded")

    def task_message() -> str | None:  # one of the task's own messages in the group (its status, an outcome)
        return next((ref for ref, (address, m) in tg.chat.posted.items()
                     if address == str(GROUP) and m.task == task.id), None)

    await tg.fake.wait_for(lambda: task_message() is not None, timeout=15)
    said = 'now the second --agent claude, "quoted" & fine'
    await tg.post(message(said, chat=GROUP, sender=MEMBER, reply_to=int(task_message() or 0)))
    task = await tg.until_task(lambda t: t.id == task.id and t.turns == 2 and t.outcome == "succeeded")
    _, logs = await tg.shepherd.tasks.logs(CONSOLE, task.id)
    assert [r.content for r in logs if r.type == "input"][-1] == said
    # a reply to a message that is no task's is group chatter
    await tg.post(message("and a third", chat=GROUP, sender=MEMBER, reply_to=12345))
    await tg.inbound.idle()
    await asyncio.sleep(0.5)
    assert (await tg.until_task(lambda t: t.id == task.id)).turns == 2


async def test_in_a_forum_topic_the_task_lives_in_its_topic(tg_running: World) -> None:
    tg = tg_running
    await tg.post(message('/run "topic work" --agent demo', chat=GROUP, sender=ADMIN, thread=77))
    await tg.until_task(lambda t: t.outcome == "succeeded")
    await tg.said_in(f"{GROUP}:77", "")
    assert not tg.chat.said(str(GROUP))


# --- buttons ---------------------------------------------------------------------------------------------------


async def _pending(shepherd: Shepherd) -> Confirmation:
    issued = await shepherd.tokens.create(org_id="acme", scopes="read,write")
    asker = await shepherd.tokens.authenticate(issued.secret)
    gate = await shepherd.confirmations.request(asker, Plan(action="pr.comment", summary="say thanks"), task=None,
                                                agent=None, project_id=None)
    return gate.confirmation


async def test_a_tap_on_approve_votes_and_is_always_answered(tg: World) -> None:
    conf = await _pending(tg.shepherd)
    await tg.post(tap(f"approve:{conf.id}", sender=VIEWER))  # a viewer: refused, said in the answer
    await tg.post(tap("something:else", sender=ADMIN))  # not Shepherd's button
    await tg.inbound.idle()
    await tg.fake.wait_for(lambda: len(tg.fake.answers) == 2)
    refused, foreign = tg.fake.answers
    assert str(refused["show_alert"]).lower() == "true" and "approve" in refused["text"].lower()
    assert "not one of Shepherd's" in foreign["text"]
    async with tg.shepherd.db.read() as session:
        assert (await session.get(Confirmation, conf.id)).status == "pending"  # type: ignore[union-attr]
    approve = tap(f"approve:{conf.id}", sender=ADMIN)
    await tg.post(approve)
    await tg.post(approve)  # redelivered: acts once, answered once
    await tg.inbound.idle()
    await tg.fake.wait_for(lambda: len(tg.fake.answers) == 3)
    approved = tg.fake.answers[-1]
    assert "approved" in approved["text"] and str(approved.get("show_alert", False)).lower() == "false"
    async with tg.shepherd.db.read() as session:
        decided = await session.get(Confirmation, conf.id)
        assert decided is not None and decided.status == "approved" and decided.decided_via == "telegram"
    await asyncio.sleep(0.3)
    assert len(tg.fake.called("answerCallbackQuery")) == 3


# --- polling -------------------------------------------------------------------------------------------------


async def test_polling_takes_updates_and_a_redelivered_one_does_nothing(tmp_path: Path, db_url: str) -> None:
    async with FakeTelegram() as fake:
        db = Database(db_url)
        shepherd = Shepherd(db, catalog=agent_catalog())
        await shepherd.orgs.ensure("acme")
        fake.webhook = {"url": "https://old.example/hook"}  # left from a webhook deployment: polling removes it
        config = TelegramConfig(bot_token=fake.token, org_id="acme", api_url=fake.api_url, poll_timeout_s=1,
                                default_role=Role.ADMIN)
        update = message("/project create polled --repo acme/polled", sender=ADMIN)
        fake.push(update)
        first = TelegramInbound(shepherd, config, poll=True)
        await first.start()
        try:
            await fake.wait_for(lambda: len(fake.called("getUpdates")) >= 2)  # the second confirms the first's
            await first.idle()
        finally:
            await first.stop()
        assert fake.called("deleteWebhook") and fake.commands
        fake.push(update)  # Telegram hands it out again (as to a process that never confirmed it)
        second = TelegramInbound(shepherd, config, poll=True)
        before = len(fake.called("getUpdates"))
        await second.start()
        try:  # the second confirms it in its turn
            await fake.wait_for(lambda: any(str(c.params.get("offset")) == str(update["update_id"] + 1)
                                            for c in fake.called("getUpdates")[before:]))
            await second.idle()
        finally:
            await second.stop()
        [row] = await _deliveries(shepherd)
        assert row.status == "done" and row.redeliveries == 1
        async with db.read() as session:
            from core.store.models import Outbox

            answers = list(await session.exec(select(Outbox).where(col(Outbox.channel) == "telegram")))
        assert len(answers) == 1 and "polled" in answers[0].payload["text"]
        await db.dispose()


def test_the_command_manifest_is_derived_from_the_registry() -> None:
    on_disk = json.loads(MANIFEST.read_text())
    assert on_disk == bot_commands(), "regenerate: python -m adapters.telegram.commands > manifests/…"
    for command in on_disk:
        assert 1 <= len(command["command"]) <= 32 and command["command"].isascii()
        assert 1 <= len(command["description"]) <= 256
