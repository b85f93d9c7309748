"""core.channels.conversations, on SQLite and PostgreSQL: a command, its answer and its inbound item are one commit; a
command that only reads writes nothing; a task followed from a place that is no thread gets a thread that
begins with a message, which is a place (resolvable, answerable) only once the outbox has posted it."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from sqlalchemy import event, text
from sqlmodel import col, select

from bot.outbox import Dispatcher
from bot.presets import agent_catalog
from core.channels.conversations import Conversations, Opening, Received, Where
from core.commands.registry import build_registry
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.models import Outbox, Task, Thread
from core.wakeup import Wakeup
from tests.conftest import person
from tests.test_outbox import Sink, _drain

ADA = person(Role.OPERATOR, name="ada")


def _commits(shepherd: Shepherd) -> list[int]:
    counted = [0]

    def count(_conn: Any) -> None:
        counted[0] += 1

    event.listen(shepherd.db.engine.sync_engine, "commit", count)
    return counted


def _demo(shepherd: Shepherd) -> Shepherd:
    return Shepherd(shepherd.db, catalog=agent_catalog(), default_agent="demo")


async def test_a_command_that_only_reads_writes_nothing(shepherd: Shepherd) -> None:
    commits = _commits(shepherd)
    reply = await Conversations(shepherd, build_registry()).command(ADA, "status", where=Where("console", "ada"))
    assert reply.ok and "agents:" in reply.text
    assert commits == [0]


async def test_a_command_its_answer_and_its_item_are_one_commit(shepherd: Shepherd) -> None:
    core = _demo(shepherd)
    assert await core.ledger.receive("chat", "item-1", "acme", {"text": "run"})
    commits = _commits(core)
    reply = await Conversations(core, build_registry()).command(
        ADA, 'run "one commit" --agent demo', answer=Where("chat", "C1/100.1"), item=Received("chat", "item-1"))
    assert reply.ok, reply.text
    assert commits == [1]
    async with core.db.read() as session:
        [task] = list(await session.exec(select(Task)))
        [answer] = list(await session.exec(select(Outbox).where(Outbox.key == "reply:item-1")))
    assert task.request_key == "item-1" and answer.address == "C1/100.1" and "one-commit" in answer.payload["text"]
    assert (await core.ledger.get("chat", "item-1")).status == "done"  # type: ignore[union-attr]


async def test_a_task_followed_from_no_thread_gets_a_thread_that_begins_with_a_message(shepherd: Shepherd) -> None:
    core = _demo(shepherd)
    conversations = Conversations(core, build_registry())
    opening = Opening("C1@U1", "/shepherd run it", serves=lambda address: address.startswith("C1"))
    reply = await conversations.command(ADA, 'run "in a thread of its own" --agent demo',
                                        answer=Where("chat", "C1@U1"), opening=opening,
                                        item=Received("chat", "item-2"))
    async with core.db.read() as session:
        [thread] = list(await session.exec(select(Thread)))
        rows = list(await session.exec(select(Outbox).order_by(col(Outbox.id))))
    task = str(reply.data["id"])
    assert (thread.task_id, thread.opening, thread.address) == (task, "opening:item-2", "C1@U1")
    assert [(r.key, r.address) for r in rows] == [("opening:item-2", "C1@U1"), ("reply:item-2", "")]
    assert await conversations.task_at("acme", Where("chat", "C1@U1")) is None  # no place anyone can talk in yet
    sink = Sink()
    await _drain(Dispatcher(core, [sink]))
    assert sink.delivered[0] == ("open", "C1@U1", "/shepherd run it")
    assert sink.delivered[1][:2] == ("post", "C1/m1") and sink.delivered[1][2].startswith("started task")
    assert await conversations.task_at("acme", Where("chat", "C1/m1")) == task  # a reply there reaches the task


async def test_a_place_bound_to_a_task_resolves_to_it_and_a_reply_there_settles_its_item(shepherd: Shepherd) -> None:
    conversations = Conversations(shepherd, build_registry())
    place = Where("chat", "C7/200.1")
    assert await conversations.task_at("acme", place) is None
    task = (await _demo(shepherd).tasks.create(ADA, prompt="bound", runtime="demo")).task
    await conversations.bind("acme", place, task.id)
    assert await conversations.task_at("acme", place) == task.id
    assert await shepherd.ledger.receive("chat", "item-3", "acme", {})
    await conversations.reply("acme", place, "noted", item=Received("chat", "item-3"))
    async with shepherd.db.read() as session:
        [row] = list(await session.exec(select(Outbox)))
    assert (row.address, row.payload["text"], row.key) == ("C7/200.1", "noted", "reply:item-3")
    assert (await shepherd.ledger.get("chat", "item-3")).status == "done"  # type: ignore[union-attr]


async def test_items_worked_together_are_one_commit_and_one_that_fails_undoes_only_itself(shepherd: Shepherd) -> None:
    core = _demo(shepherd)
    conversations = Conversations(core, build_registry())
    for key in ("item-a", "item-b", "item-c"):
        assert await core.ledger.receive("chat", key, "acme", {})

    async def answered_then_broke() -> None:  # its answer and its task are written, then it fails
        await conversations.command(ADA, 'run "never kept" --agent demo', answer=Where("chat", "C1/1.1"),
                                    item=Received("chat", "item-b"))
        raise RuntimeError("broke after writing")

    commits = _commits(core)
    errors = await conversations.batch([
        lambda: conversations.command(ADA, "status", answer=Where("chat", "C1/1.1"), item=Received("chat", "item-a")),
        answered_then_broke,
        lambda: conversations.command(ADA, 'run "kept" --agent demo', answer=Where("chat", "C1/1.1"),
                                      item=Received("chat", "item-c")),
    ])
    assert commits == [1]
    assert [type(e).__name__ if e else None for e in errors] == [None, "RuntimeError", None]
    async with core.db.read() as session:
        tasks = list(await session.exec(select(Task.prompt)))
        answers = sorted(await session.exec(select(Outbox.key)))
    assert tasks == ["kept"] and answers == ["reply:item-a", "reply:item-c"]
    states = [(await core.ledger.get("chat", key)).status for key in ("item-a", "item-b", "item-c")]  # type: ignore[union-attr]
    assert states == ["done", "received", "done"]  # the one that failed is the ledger's to try again


class _Waking(Wakeup):
    """A wake-up that notes how many commits had happened each time it was given."""

    def __init__(self, commits: list[int]) -> None:
        super().__init__()
        self.commits = commits
        self.given: list[int] = []

    def __call__(self) -> None:
        self.given.append(self.commits[0])
        super().__call__()


async def test_a_batch_answers_in_order_wakes_the_outbox_once_after_its_commit_and_opens_no_savepoint_to_read(
        shepherd: Shepherd) -> None:
    keys = [f"item-{n}" for n in range(6)]
    for key in keys:
        assert await shepherd.ledger.receive("chat", key, "acme", {})
    commits = _commits(shepherd)
    waking = _Waking(commits)
    core = Shepherd(shepherd.db, catalog=agent_catalog(), default_agent="demo", outbox_due=waking)
    conversations = Conversations(core, build_registry())
    savepoints: list[str] = []  # (the connection's own event: SQLite's savepoints never pass through a cursor)
    event.listen(core.db.engine.sync_engine, "savepoint", lambda _conn, name: savepoints.append(name))
    said = ["status", "agents", "status", "agents", "help", "status"]
    places = ["C1/1.1", "C2/2.2", "C1/1.1", "C1/1.1", "C3/3.3", "C2/2.2"]
    errors = await conversations.batch([
        partial(conversations.command, ADA, words, answer=Where("chat", place), item=Received("chat", key))
        for words, place, key in zip(said, places, keys, strict=True)])
    assert errors == [None] * 6 and commits == [1]
    assert waking.given == [1]  # once, after the commit: a wake-up before it finds nothing to send
    assert savepoints == []  # items that only read: no savepoint each (the answers go in at the end, together)
    async with core.db.read() as session:
        rows = list(await session.exec(select(Outbox).order_by(col(Outbox.id))))
        threads = list(await session.exec(select(Thread)))
    assert [r.key for r in rows] == [f"reply:{key}" for key in keys]  # in the order the items came
    assert [r.address for r in rows] == places and len(threads) == 3  # one thread per place
    texts = [r.payload["text"] for r in rows]
    assert all(("agents:" in text) == (words == "status") for text, words in zip(texts, said, strict=True))
    assert texts[1].startswith("no agents yet") and texts[3] == texts[1] and not texts[4].startswith("error")
    assert {(await core.ledger.get("chat", key)).status for key in keys} == {"done"}  # type: ignore[union-attr]

    # the same places again: their threads are found, not made twice
    more = ["item-6", "item-7"]
    for key in more:
        assert await core.ledger.receive("chat", key, "acme", {})
    assert await conversations.batch([
        partial(conversations.command, ADA, "status", answer=Where("chat", place), item=Received("chat", key))
        for place, key in zip(["C3/3.3", "C1/1.1"], more, strict=True)]) == [None, None]
    async with core.db.read() as session:
        assert len(list(await session.exec(select(Thread)))) == 3
        rows = list(await session.exec(select(Outbox).where(col(Outbox.key).in_([f"reply:{k}" for k in more]))
                                       .order_by(col(Outbox.id))))
    assert [r.address for r in rows] == ["C3/3.3", "C1/1.1"]


async def test_a_task_started_during_a_batch_answers_on_its_own(shepherd: Shepherd) -> None:
    """Work an item hands to a task of its own outlives the batch: its answer is written by that task, not held
    for a batch that has ended by then."""
    conversations = Conversations(shepherd, build_registry())
    assert await shepherd.ledger.receive("chat", "late", "acme", {})
    started: list[asyncio.Task[None]] = []

    async def hands_off() -> None:  # the batch is still open while the other task answers
        async def later() -> None:
            await conversations.reply("acme", Where("chat", "C9/9.9"), "said later", item=Received("chat", "late"))
        started.append(asyncio.get_running_loop().create_task(later()))
        await started[0]
        async with shepherd.db.read() as session:  # written by that task, on its own: there already
            assert [row.payload["text"] for row in await session.exec(select(Outbox))] == ["said later"]

    assert await conversations.batch([hands_off]) == [None]
    async with shepherd.db.read() as session:
        [row] = list(await session.exec(select(Outbox)))
    assert (row.address, row.payload["text"]) == ("C9/9.9", "said later")
    assert (await shepherd.ledger.get("chat", "late")).status == "done"  # type: ignore[union-attr]


async def test_a_role_changed_by_an_item_holds_for_the_later_items_of_the_same_batch(shepherd: Shepherd) -> None:
    conversations = Conversations(shepherd, build_registry())
    keys = ["r-1", "r-2", "r-3", "r-4"]
    for key in keys:
        assert await shepherd.ledger.receive("chat", key, "acme", {})

    async def said(external: str, words: str, key: str) -> None:
        admin = external == "boss"
        who = await conversations.person("acme", "chat", external, name=external, default_role=Role.VIEWER,
                                         admin=admin)
        await conversations.command(who, words, answer=Where("chat", f"C1@{external}"), item=Received("chat", key))

    errors = await conversations.batch([
        partial(said, "kim", "role kim approver", "r-1"),  # a viewer may not: refused
        partial(said, "boss", "role kim operator", "r-2"),
        partial(said, "kim", "role kim approver", "r-3"),  # an operator may not either, but as an operator now
        partial(said, "kim", "agent create scout --type task", "r-4"),  # an operator's command: allowed now
    ])
    assert errors == [None] * 4
    async with shepherd.db.read() as session:
        texts = {r.key: r.payload["text"] for r in await session.exec(select(Outbox))}
    assert texts["reply:r-1"].startswith("error") and "operator" in texts["reply:r-2"]
    assert texts["reply:r-3"].startswith("error") and not texts["reply:r-4"].startswith("error"), texts


async def test_an_item_whose_read_fails_after_others_wrote_undoes_only_itself(shepherd: Shepherd) -> None:
    """A statement that fails aborts the whole transaction on PostgreSQL: an item that reads in the batch's
    transaction (begun by an earlier item's writes) does so in a savepoint of its own."""
    core = _demo(shepherd)
    conversations = Conversations(core, build_registry())
    for key in ("w-1", "w-2", "w-3"):
        assert await core.ledger.receive("chat", key, "acme", {})

    async def fails_to_read() -> None:
        await core.db.rows(text("SELECT nothing FROM no_such_table"))

    errors = await conversations.batch([
        partial(conversations.command, ADA, 'run "first" --agent demo', answer=Where("chat", "C1/1.1"),
                item=Received("chat", "w-1")),
        fails_to_read,
        partial(conversations.command, ADA, 'run "third" --agent demo', answer=Where("chat", "C1/1.1"),
                item=Received("chat", "w-3")),
    ])
    assert errors[0] is None and errors[1] is not None and errors[2] is None, errors
    async with core.db.read() as session:
        assert sorted(await session.exec(select(Task.prompt))) == ["first", "third"]
    states = [(await core.ledger.get("chat", key)).status for key in ("w-1", "w-2", "w-3")]  # type: ignore[union-attr]
    assert states == ["done", "received", "done"]
