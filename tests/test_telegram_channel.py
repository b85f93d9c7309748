"""The Telegram channel (outbound) against the fake Bot API, with the real python-telegram-bot `Bot`, through the
real outbox dispatcher on SQLite and PostgreSQL: a task's status message is posted once in its chat (or forum
topic) and edited in place; an approval prompt carries Approve / Reject buttons and, once decided anywhere, is
edited without them saying who decided; Telegram's flood control delays every chat and loses nothing; a group
gets at most 20 messages a minute; what agents print is shown as written (escaped HTML) and within 4096
characters, cut with where to read the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select
from telegram import Bot
from telegram.error import BadRequest

from adapters.telegram.channel import TelegramChannel, make_bot
from adapters.telegram.render import CALLBACK_DATA_MAX, TEXT_MAX, render
from bot.background import Background
from bot.outbox import Dispatcher
from bot.settings import Settings
from core.autonomy.plans import Origin, Plan, Target
from core.channels.conversations import bind_thread
from core.channels.outbox import Button, DeliveryError, Message, RowStatus, enqueue
from core.clock import utcnow
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.models import Confirmation, Outbox, Task, TaskLog
from tests.fakes.telegram_api import FakeTelegram

ALICE = Principal.for_role("acme", "alice", Role.APPROVER, "telegram", user_id="user-alice")
BOB = Principal.for_role("acme", "bob", Role.APPROVER, "slack", user_id="user-bob")
GROUP = -1001234567890
TOPIC = 7


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Bot]:
    bot = make_bot(telegram.token, telegram.api_url)
    await bot.initialize()
    yield bot
    await bot.shutdown()


async def until(dispatcher: Dispatcher, done: Callable[[], bool], timeout: float = 15.0) -> None:
    """Runs the dispatcher's passes until `done` (an edit waits out its chat's pace; a flood wait its time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        await dispatcher.deliver_due()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not delivered in time")
        await asyncio.sleep(0.05)


async def rows(shepherd: Shepherd) -> list[Outbox]:
    async with shepherd.db.read() as session:
        return list(await session.exec(select(Outbox).order_by(col(Outbox.id))))


async def task_in(shepherd: Shepherd, address: str) -> Task:
    """A task started in a Telegram chat (bound to it: its news is posted there)."""
    view = await shepherd.tasks.create(ALICE, prompt="fix the flaky test", runtime="demo", repo="acme/api",
                                       thread=("telegram", address))
    return view.task


async def moves(shepherd: Shepherd, task: Task, *, status: str, message: str, output: list[str]) -> None:
    """The task moves on and prints `output` (as the runner would record it)."""
    async with shepherd.db.write() as session:
        for line in output:
            session.add(TaskLog(task_id=task.id, type="output", content=line))
        await session.exec(update(Task).where(col(Task.id) == task.id).values(
            status=status, state_message=message, started_at=utcnow(), log_count=Task.log_count + len(output),
            updated_at=utcnow() + timedelta(milliseconds=1)))


async def test_a_tasks_status_message_is_posted_once_in_its_topic_and_edited_in_place(
    shepherd: Shepherd, telegram: FakeTelegram, bot: Bot
) -> None:
    task = await task_in(shepherd, f"{GROUP}:{TOPIC}")
    dispatcher = Dispatcher(shepherd, [TelegramChannel(bot)])
    await shepherd.progress.announce_due(["telegram"])
    await until(dispatcher, lambda: len(telegram.messages(GROUP)) == 1)
    [status] = telegram.messages(GROUP)
    assert status["message_thread_id"] == TOPIC and task.name in status["text"]

    await moves(shepherd, task, status="running", message="running", output=["cloning acme/api", "running tests"])
    await shepherd.progress.announce_due(["telegram"])
    await until(dispatcher, lambda: status["edits"] >= 1)
    await moves(shepherd, task, status="running", message="running", output=["3 passed"])
    await shepherd.progress.announce_due(["telegram"])
    await until(dispatcher, lambda: "3 passed" in status["text"])

    assert len(telegram.messages(GROUP)) == 1 and len(telegram.called("sendMessage")) == 1  # edited, never again
    assert f"🏃 {task.name}: running" in status["text"] and "cloning acme/api" in status["text"]
    assert status["reply_markup"] is None
    assert {r.status for r in await rows(shepherd)} == {RowStatus.SENT.value}


async def test_a_prompt_has_buttons_and_a_decision_made_elsewhere_edits_them_away(
    shepherd: Shepherd, telegram: FakeTelegram, bot: Bot
) -> None:
    task = await task_in(shepherd, str(GROUP))
    plan = Plan(action="pr.open", summary="open a pull request <fix-auth> & co",
                target=Target(repo="acme/api", branch="shepherd/x", base="main", head="a" * 40),
                params={"title": "x"})
    async with shepherd.db.write() as session:
        locked = await session.get(Task, task.id)
        assert locked is not None
        gate = await shepherd.confirmations.gate(
            session, org_id=task.org_id, plan=plan, origin=Origin.POLICY, level=1, requester_id=task.owner_id,
            requester_name=task.owner_name, task=locked, agent_id=task.agent_id, project_id=task.project_id)
    conf: Confirmation = gate.confirmation
    dispatcher = Dispatcher(shepherd, [TelegramChannel(bot)])
    await until(dispatcher, lambda: any(m["reply_markup"] for m in telegram.messages(GROUP)))
    [prompt] = [m for m in telegram.messages(GROUP) if m["reply_markup"]]
    [buttons] = prompt["reply_markup"]["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [
        ("Approve", f"approve:{conf.id}"), ("Reject", f"reject:{conf.id}")]  # the contract with the inbound side
    assert all(len(b["callback_data"].encode()) <= CALLBACK_DATA_MAX for b in buttons)
    assert f"approval {conf.code}" in prompt["text"] and "<fix-auth> & co" in prompt["text"]  # shown as written
    assert f"/approve {conf.code}" in prompt["text"]

    await shepherd.confirmations.vote(BOB, conf.code, approve=True)  # decided in Slack
    await until(dispatcher, lambda: prompt["reply_markup"] is None)
    assert f"{conf.code} approved by bob from slack at " in prompt["text"] and "UTC" in prompt["text"]
    assert len([m for m in telegram.messages(GROUP) if conf.code in m["text"]]) == 1  # the same message, edited


async def test_flood_control_delays_every_chat_of_the_bot_and_loses_nothing(
    shepherd: Shepherd, telegram: FakeTelegram, bot: Bot
) -> None:
    async with shepherd.db.write() as session:
        first = await bind_thread(session, "acme", "telegram", "1001")
        await enqueue(session, [first], Message(key="reply:1", text="3 tasks running", kind="reply"))
    dispatcher = Dispatcher(shepherd, [TelegramChannel(bot)])
    telegram.flood_next("sendMessage", retry_after=2)
    before = utcnow()
    await dispatcher.deliver_due()
    [row] = await rows(shepherd)
    assert row.status == RowStatus.PENDING.value and "flood control" in str(row.last_error)
    assert row.next_at.replace(tzinfo=None) >= (before + timedelta(seconds=1.9)).replace(tzinfo=None)

    # another chat's message, while Telegram's wait lasts: it waits too, without asking Telegram
    async with shepherd.db.write() as session:
        second = await bind_thread(session, "acme", "telegram", "1002")
        await enqueue(session, [second], Message(key="reply:2", text="approved", kind="reply"))
    asked = len(telegram.calls)
    await dispatcher.deliver_due()
    assert len(telegram.calls) == asked and telegram.chats == {}
    waiting = (await rows(shepherd))[1]
    assert waiting.status == RowStatus.PENDING.value and waiting.next_at.replace(tzinfo=None) > utcnow().replace(
        tzinfo=None)

    await until(dispatcher, lambda: len(telegram.chats) == 2)
    assert [m["text"] for m in telegram.messages(1001)] == ["3 tasks running"]
    assert [m["text"] for m in telegram.messages(1002)] == ["approved"]
    assert {r.status for r in await rows(shepherd)} == {RowStatus.SENT.value}


async def test_a_group_gets_at_most_20_messages_a_minute_and_the_rest_wait(
    shepherd: Shepherd, telegram: FakeTelegram, bot: Bot
) -> None:
    async with shepherd.db.write() as session:
        group = await bind_thread(session, "acme", "telegram", str(GROUP))
        private = await bind_thread(session, "acme", "telegram", "1001")
        for i in range(22):
            await enqueue(session, [group], Message(key=f"reply:{i}", text=f"answer {i}", kind="reply"))
        await enqueue(session, [private], Message(key="reply:p", text="yours", kind="reply"))
    dispatcher = Dispatcher(shepherd, [TelegramChannel(bot)])
    await dispatcher.deliver_due()
    assert [m["text"] for m in telegram.messages(GROUP)] == [f"answer {i}" for i in range(20)]
    assert [m["text"] for m in telegram.messages(1001)] == ["yours"]  # a private chat is not held up
    waiting = [r for r in await rows(shepherd) if r.status == RowStatus.PENDING.value]
    assert [r.key for r in waiting] == ["reply:20", "reply:21"]
    soon = (utcnow() + timedelta(seconds=30)).replace(tzinfo=None)
    assert all(r.next_at.replace(tzinfo=None) > soon for r in waiting)  # after the minute, not refused by Telegram
    assert len(telegram.called("sendMessage")) == 21  # Telegram was not asked for the 21st


async def test_what_agents_print_is_shown_as_written_and_long_output_is_cut_with_where_to_read_it(
    shepherd: Shepherd, telegram: FakeTelegram, bot: Bot
) -> None:
    task = await task_in(shepherd, "1001")
    lines = [f"line {i}: " + "x" * 560 for i in range(9)] + ["<script>alert(1)</script> & <b>done</b> &amp;"]
    assert len("\n".join(lines)) > 5000
    await moves(shepherd, task, status="running", message="running <pytest -k 'a & b'>", output=lines)
    dispatcher = Dispatcher(shepherd, [TelegramChannel(bot)])
    await shepherd.progress.announce_due(["telegram"])
    await until(dispatcher, lambda: len(telegram.messages(1001)) == 1)
    [status] = telegram.messages(1001)
    assert "<script>alert(1)</script> & <b>done</b> &amp;" in status["text"]  # as the agent printed it
    assert "&lt;script&gt;" in status["html"] and "<script>" not in status["html"]
    assert "running <pytest -k 'a & b'>" in status["text"]
    assert len(status["text"]) <= TEXT_MAX and "line 0:" not in status["text"]  # the newest lines are kept
    assert f"earlier lines not shown; logs {task.name} shows all" in status["text"]

    # a command's long answer: its beginning, and the same hint
    channel = TelegramChannel(bot)
    long = "\n".join(f"task-{i:04d} running  <acme/api>" for i in range(200))
    ref = await channel.post("1001", Message(key="reply:tasks", text=long, kind="reply", more="tasks --all"))
    answer = telegram.messages(1001)[int(ref) - 1]
    assert answer["text"].startswith("task-0000 running  <acme/api>") and len(answer["text"]) <= TEXT_MAX
    assert "characters not shown; tasks --all shows all" in answer["text"]

    # Telegram counts UTF-16 code units: an emoji is two
    ref = await channel.post("1001", Message(key="notice:emoji", text="🏃 " * 2100, kind="notice"))
    assert telegram.messages(1001)[int(ref) - 1]["text"].startswith("🏃 🏃")

    # the fake refuses what Telegram refuses: the cut is what lets it through
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(chat_id=1001, text="x" * (TEXT_MAX + 1))


async def test_an_edit_already_made_is_delivered_and_a_chat_the_bot_left_fails_for_good(
    shepherd: Shepherd, telegram: FakeTelegram, bot: Bot
) -> None:
    channel = TelegramChannel(bot)
    notice = Message(key="notice:1", text="deploy done")
    ref = await channel.post("1001", notice)
    await channel.update("1001", ref, notice)  # Telegram: "message is not modified": as asked already
    assert [m["text"] for m in telegram.messages(1001)] == ["deploy done"]

    telegram.gone[1002] = (403, "Forbidden: bot was blocked by the user")
    telegram.gone[1003] = (400, "Bad Request: chat not found")
    async with shepherd.db.write() as session:
        for chat in ("1002", "1003"):
            await enqueue(session, [await bind_thread(session, "acme", "telegram", chat)],
                    Message(key="reply:x", text="hello", kind="reply"))
    dispatcher = Dispatcher(shepherd, [channel])
    await dispatcher.deliver_due()
    kept = await rows(shepherd)
    assert [(r.status, r.last_error) for r in kept] == [
        (RowStatus.FAILED.value, "telegram: Forbidden: bot was blocked by the user"),
        (RowStatus.FAILED.value, "telegram: Chat not found")]
    with pytest.raises(DeliveryError) as bad:
        await channel.post("not-a-chat", notice)
    assert not bad.value.transient


def test_a_button_telegram_could_not_carry_leaves_the_typed_command() -> None:
    far = "c" * 60
    prompt = Message(key="confirmation:x", text="approval K7P2 (low): run it", kind="confirmation", state="pending",
                     code="K7P2", buttons=(Button("Approve", "approve", far), Button("Reject", "reject", far)))
    shown = render(prompt)
    assert shown.buttons == () and "/approve K7P2" in shown.text  # over 64 bytes: no keyboard, the prompt still goes
    longest_id = "conf-" + "f" * 12  # core.ids.new_id("conf"): what a confirmation's buttons carry
    real = Message(**{**prompt.to_json(), "buttons": (Button("Approve", "approve", longest_id),
                                                      Button("Reject", "reject", longest_id))})
    assert render(real).buttons == (("Approve", f"approve:{longest_id}"), ("Reject", f"reject:{longest_id}"))


async def test_the_worker_delivers_to_telegram_when_its_token_is_set(
    shepherd: Shepherd, telegram: FakeTelegram, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, telegram_bot_token=telegram.token,
                        telegram_api_url=telegram.api_url)
    background = Background(settings, shepherd, callback_url="http://127.0.0.1:9")
    await background.start()
    try:
        assert "telegram" in [c.name for c in background.channels]
        async with shepherd.db.write() as session:
            await enqueue(session, [await bind_thread(session, "acme", "telegram", "1001")],
                    Message(key="reply:1", text="hello from the worker", kind="reply"))
        shepherd.outbox_due()
        await telegram.wait_for(lambda: bool(telegram.messages(1001)))
    finally:
        await background.stop()
    assert telegram.messages(1001)[0]["text"] == "hello from the worker"
    assert background.telegram_bot is not None and not background.telegram_bot._requests_initialized  # closed


def test_a_replys_command_spans_are_code_and_everything_else_stays_escaped() -> None:
    """Core writes `command` spans (Slack's style); Telegram's HTML shows them as code, and nothing else of the
    text becomes markup: an agent's `<b>` stays text."""
    shown = render(Message(key="reply:1", text="subscribed: `unsubscribe api` stops it; <b>not bold</b> & `x`",
                           kind="reply")).text
    assert shown == ("subscribed: <code>unsubscribe api</code> stops it; &lt;b&gt;not bold&lt;/b&gt; &amp; "
                     "<code>x</code>")
    # an odd backtick stays a backtick; several lines are a block, shown as written
    assert render(Message(key="reply:2", text="one ` tick", kind="reply")).text == "one ` tick"
    assert render(Message(key="reply:3", text="a `b`\nc", kind="reply")).text == "<pre>a `b`\nc</pre>"
