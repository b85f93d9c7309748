"""What an independent review of the channel seam found (each failed before its fix): an answer lost with a thread
that could not begin, and a unit of work begun inside a write waiting for itself."""

from __future__ import annotations

import asyncio

import pytest

from bot.outbox import Dispatcher
from bot.presets import agent_catalog
from core.channels.conversations import Conversations, Opening, Received, Where
from core.channels.outbox import DeliveryError, Message
from core.commands.registry import build_registry
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Org
from tests.conftest import person
from tests.test_outbox import Sink, _drain

ADA = person(Role.OPERATOR, name="ada")


async def test_a_slash_command_whose_thread_cannot_begin_still_answers_who_typed_it(shepherd: Shepherd) -> None:
    """`/shepherd run ...` in a place the opening message cannot go (the channel is gone, the DM is refused,
    the text is refused): the task was started and the command's answer ("started task ...") was written in the
    same commit as the ledger's "done", so Slack will never send the item again. That answer must still reach the
    person who typed the command (at the place it was typed: the opening's address), not be failed with the
    thread it waited for."""
    core = Shepherd(shepherd.db, catalog=agent_catalog(), default_agent="demo")
    assert await core.ledger.receive("chat", "item-f1", "acme", {"text": "run"})
    opening = Opening("C1@U1", "/shepherd run it", serves=lambda address: address.startswith("C1"))
    reply = await Conversations(core, build_registry()).command(
        ADA, 'run "cannot open" --agent demo', answer=Where("chat", "C1@U1"), opening=opening,
        item=Received("chat", "item-f1"))
    assert reply.ok, reply.text

    def refuse(message: Message) -> DeliveryError | None:
        return DeliveryError("msg_too_long", permanent=True) if message.key.startswith("opening") else None

    sink = Sink(fail=refuse)
    await _drain(Dispatcher(core, [sink]))
    assert any(text.startswith("started task") for _, _, text in sink.delivered), (
        f"the command's answer never reached its author: delivered {sink.delivered}")


async def test_a_unit_begun_inside_a_write_of_the_same_task_raises_at_once(sqlite_url: str) -> None:
    """Database.write() refuses a write opened inside another write of the same asyncio task (on SQLite that
    waits for its own write turn forever). A unit of work begun inside a write is the same mistake and must be
    refused the same way, not hang the process (every later writer queues behind it)."""
    db = Database(sqlite_url)
    try:
        with pytest.raises(RuntimeError, match="inside another"):
            async with asyncio.timeout(5):
                async with db.write() as session:
                    session.add(Org(id="r12-outer", name="outer"))
                    async with db.unit(), db.write() as inner:
                        inner.add(Org(id="r12-inner", name="inner"))
    finally:
        await db.dispose()
