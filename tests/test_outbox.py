"""The outbox dispatcher, on SQLite and PostgreSQL: every row delivered once however many dispatchers run,
the newest version of a message wins, an edit waits for its post, failures are retried or kept, a thread that
begins with a message is opened before anything else goes to it, and core's wake-up sends rows at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from sqlmodel import col, select

from bot.outbox import Dispatcher
from core.channels.conversations import Opening, bind_thread, open_thread
from core.channels.outbox import Button, DeliveryError, Message, enqueue, threads_for
from core.shepherd import Shepherd
from core.store.models import MessageRef, Outbox, Thread
from core.wakeup import Wakeup


@dataclass
class Sink:
    """A Channel that records what it delivered; `fail` decides per call whether to raise."""

    name: str = "chat"
    delivered: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, address, text)
    fail: Callable[[Message], DeliveryError | None] = lambda _m: None
    delay: float = 0.0
    progress: bool = False
    pace_s: float = 0.0

    def pace_key(self, address: str) -> str:
        return address

    def accepts(self, address: str) -> bool:
        return True

    async def post(self, address: str, message: Message) -> str:
        await asyncio.sleep(self.delay)
        if (error := self.fail(message)) is not None:
            raise error
        self.delivered.append(("post", address, message.text))
        return f"m{len(self.delivered)}"

    async def update(self, address: str, ref: str, message: Message) -> None:
        await asyncio.sleep(self.delay)
        if (error := self.fail(message)) is not None:
            raise error
        self.delivered.append((f"update {ref}", address, message.text))

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        if (error := self.fail(message)) is not None:
            raise error
        self.delivered.append(("open", address, message.text))
        ref = f"m{len(self.delivered)}"
        return ref, f"{address.split('@')[0]}/{ref}"  # a thread in the channel, hanging from that message


async def _enqueue(shepherd: Shepherd, address: str, *texts: str, key: str = "k") -> None:
    async with shepherd.db.write() as session:
        thread = await bind_thread(session, "acme", "chat", address, project_id=None)
        for text in texts:
            await enqueue(session, [thread], Message(key=key, text=text))


async def _rows(shepherd: Shepherd) -> list[Outbox]:
    async with shepherd.db.read() as session:
        return list(await session.exec(select(Outbox).order_by(col(Outbox.id))))


async def _drain(*dispatchers: Dispatcher) -> None:
    for _ in range(50):
        if sum(await asyncio.gather(*(d.deliver_due() for d in dispatchers))) == 0:
            return


async def test_two_dispatchers_deliver_every_row_exactly_once(two_cores: tuple[Shepherd, Shepherd]) -> None:
    a, b = two_cores
    for i in range(30):
        await _enqueue(a, f"C{i}", f"hello {i}", key=f"msg-{i}")
    sink_a, sink_b = Sink(delay=0.001), Sink(delay=0.001)
    da, db_ = Dispatcher(a, [sink_a], batch=5), Dispatcher(b, [sink_b], batch=5)
    await _drain(da, db_)
    texts = sorted(t for _, _, t in sink_a.delivered + sink_b.delivered)
    assert texts == sorted(f"hello {i}" for i in range(30))
    assert sink_a.delivered and sink_b.delivered, "both took a share"
    assert {r.status for r in await _rows(a)} == {"sent"}


async def test_the_newest_version_wins_and_later_versions_edit_the_posted_message(shepherd: Shepherd) -> None:
    sink = Sink()
    dispatcher = Dispatcher(shepherd, [sink])
    await _enqueue(shepherd, "C1", "v1", "v2", "v3")
    await _drain(dispatcher)
    assert sink.delivered == [("post", "C1", "v3")]  # v1 and v2 were superseded before they went out
    await _enqueue(shepherd, "C1", "v4")
    await _drain(dispatcher)
    assert sink.delivered[-1] == ("update m1", "C1", "v4")
    async with shepherd.db.read() as session:
        refs = list(await session.exec(select(MessageRef)))
    assert [(r.key, r.ref) for r in refs] == [("k", "m1")]


async def test_a_rate_limited_post_waits_its_retry_after_and_is_not_lost(shepherd: Shepherd) -> None:
    calls: list[str] = []

    def fail(message: Message) -> DeliveryError | None:
        calls.append(message.text)
        return DeliveryError("ratelimited", retry_after=0.4) if len(calls) == 1 else None

    sink = Sink(fail=fail)
    dispatcher = Dispatcher(shepherd, [sink])
    await _enqueue(shepherd, "C1", "prompt")
    assert await dispatcher.deliver_due() == 1
    [row] = await _rows(shepherd)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "ratelimited")
    assert await dispatcher.deliver_due() == 0, "not before its Retry-After"
    await asyncio.sleep(0.5)
    await _drain(dispatcher)
    assert sink.delivered == [("post", "C1", "prompt")]
    assert (await _rows(shepherd))[0].status == "sent"


async def test_a_permanent_refusal_is_kept_as_failed_and_other_threads_go_on(shepherd: Shepherd) -> None:
    sink = Sink(fail=lambda m: DeliveryError("channel_not_found", permanent=True) if m.text == "doomed" else None)
    dispatcher = Dispatcher(shepherd, [sink])
    await _enqueue(shepherd, "GONE", "doomed", key="a")
    await _enqueue(shepherd, "C2", "fine", key="b")
    await _drain(dispatcher)
    rows = {r.address: r for r in await _rows(shepherd)}
    assert (rows["GONE"].status, rows["GONE"].last_error) == ("failed", "channel_not_found")
    assert rows["C2"].status == "sent" and sink.delivered == [("post", "C2", "fine")]


async def test_a_crashing_channel_is_retried_with_backoff(shepherd: Shepherd) -> None:
    def boom(_m: Message) -> DeliveryError | None:
        raise RuntimeError("socket closed")

    dispatcher = Dispatcher(shepherd, [Sink(fail=boom)])
    await _enqueue(shepherd, "C1", "x")
    await dispatcher.deliver_due()
    [row] = await _rows(shepherd)
    assert row.status == "pending" and row.attempts == 1 and "socket closed" in (row.last_error or "")
    assert row.next_at > row.created_at


async def test_rows_for_other_channels_or_addresses_are_left_for_their_dispatcher(shepherd: Shepherd) -> None:
    class Picky(Sink):
        def accepts(self, address: str) -> bool:
            return address == "mine"

    sink = Picky()
    dispatcher = Dispatcher(shepherd, [sink])
    await _enqueue(shepherd, "theirs", "not for me", key="a")
    await _enqueue(shepherd, "mine", "for me", key="b")
    await _drain(dispatcher)
    assert sink.delivered == [("post", "mine", "for me")]
    assert {r.address: r.status for r in await _rows(shepherd)} == {"theirs": "pending", "mine": "sent"}


# --- threads that begin with a message -------------------------------------------------------------------

OPENING = Opening("C1@U1", "/shepherd run fix it", serves=lambda address: address.split("/")[0].split("@")[0] == "C1")


async def _open(shepherd: Shepherd, *after: str) -> Thread:
    """What a slash command's unit of work writes: the task's thread, its first message, then `after` messages."""
    async with shepherd.db.write() as session:
        thread = await open_thread(session, "acme", "chat", "task-1", OPENING, key="opening:item-1")
        for i, text in enumerate(after):
            await enqueue(session, [thread], Message(key=f"m-{i}", text=text))
        return thread


async def _thread(shepherd: Shepherd, thread_id: str) -> Thread:
    async with shepherd.db.read() as session:
        found = await session.get(Thread, thread_id)
    assert found is not None
    return found


async def test_a_thread_is_opened_by_its_first_message_before_anything_else_goes_to_it(shepherd: Shepherd) -> None:
    thread = await _open(shepherd, "started task", "status")
    assert [(r.key, r.address) for r in await _rows(shepherd)] == [
        ("opening:item-1", "C1@U1"), ("m-0", ""), ("m-1", "")]  # the others wait for the thread's address
    sink = Sink()
    dispatcher = Dispatcher(shepherd, [sink])
    assert await dispatcher.deliver_due() == 1, "only the opening is due"
    await _drain(dispatcher)
    assert sink.delivered == [("open", "C1@U1", "/shepherd run fix it"), ("post", "C1/m1", "started task"),
                              ("post", "C1/m1", "status")]
    opened = await _thread(shepherd, thread.id)
    assert (opened.address, opened.opening, opened.task_id) == ("C1/m1", None, "task-1")
    assert {(r.status, r.address) for r in await _rows(shepherd)} == {("sent", "C1@U1"), ("sent", "C1/m1")}
    # the same item processed again (a replay) finds the thread: no second opening, and news goes straight there
    again = await _open(shepherd, "started task")
    assert again.id == thread.id
    await _drain(dispatcher)
    assert [kind for kind, _, _ in sink.delivered].count("open") == 1
    assert sink.delivered[-1] == ("update m2", "C1/m1", "started task")


async def test_an_opening_that_is_rate_limited_waits_its_retry_after_and_so_does_its_thread(
    shepherd: Shepherd,
) -> None:
    tries: list[str] = []

    def fail(message: Message) -> DeliveryError | None:
        tries.append(message.text)
        return DeliveryError("ratelimited", retry_after=0.4) if len(tries) == 1 else None

    sink = Sink(fail=fail)
    dispatcher = Dispatcher(shepherd, [sink])
    await _open(shepherd, "started task")
    await _drain(dispatcher)
    assert sink.delivered == [] and tries == ["/shepherd run fix it"], "nothing goes to a thread not yet open"
    await asyncio.sleep(0.5)
    await _drain(dispatcher)
    assert sink.delivered == [("open", "C1@U1", "/shepherd run fix it"), ("post", "C1/m1", "started task")]


async def test_a_thread_that_cannot_begin_still_answers_who_asked_and_its_task_news_goes_elsewhere(
    shepherd: Shepherd,
) -> None:
    """The command's answer was settled with its item (nothing will redeliver it): it goes to the place the
    command was typed; the thread's other rows fail, and the thread stops being the task's."""
    sink = Sink(fail=lambda m: DeliveryError("user_not_found", permanent=True) if m.key.startswith("opening")
                else None)
    dispatcher = Dispatcher(shepherd, [sink])
    async with shepherd.db.write() as session:
        thread = await open_thread(session, "acme", "chat", "task-1", OPENING, key="opening:item-1")
        await enqueue(session, [thread], Message(key="reply:item-1", text="started task", kind="reply"))
        await enqueue(session, [thread], Message(key="task:task-1", text="working", kind="progress"))
    await _drain(dispatcher)
    rows = {r.key: (r.status, r.last_error) for r in await _rows(shepherd)}
    assert rows == {"opening:item-1": ("failed", "user_not_found"), "reply:item-1": ("sent", None),
                    "task:task-1": ("failed", "its thread could not begin: user_not_found")}
    assert sink.delivered == [("post", "C1@U1", "started task")]
    async with shepherd.db.read() as session:
        assert await threads_for(session, "acme", task_id="task-1") == []  # no more rows pile up for it
    after = await _thread(shepherd, thread.id)
    assert after.task_id is None and after.opening is None, "rows enqueued to it later would wait for good"


async def test_core_wakes_the_dispatcher_it_was_given_instead_of_its_poll(shepherd: Shepherd) -> None:
    wakeup = Wakeup()
    sink = Sink()
    dispatcher = Dispatcher(shepherd, [sink], wakeup=wakeup, poll_s=3600)  # it would otherwise look in an hour
    await dispatcher.start()
    try:
        await _enqueue(shepherd, "C1", "now")
        wakeup()
        for _ in range(200):
            if sink.delivered:
                break
            await asyncio.sleep(0.05)
        assert sink.delivered == [("post", "C1", "now")]
    finally:
        await dispatcher.stop()


async def test_a_thread_a_platform_is_slow_to_take_holds_up_only_itself(shepherd: Shepherd) -> None:
    """Threads go out side by side; inside one thread the order stays the order written."""
    release = asyncio.Event()

    class Slow(Sink):
        async def post(self, address: str, message: Message) -> str:
            if address == "C-slow":
                await release.wait()
            return await super().post(address, message)

    sink = Slow()
    await _enqueue(shepherd, "C-slow", "slow one", key="s1")
    for i in range(3):
        await _enqueue(shepherd, "C-fast", f"fast {i}", key=f"f{i}")
    dispatcher = Dispatcher(shepherd, [sink])
    pass_ = asyncio.ensure_future(dispatcher.deliver_due())
    for _ in range(200):
        if len(sink.delivered) == 3:
            break
        await asyncio.sleep(0.01)
    assert sink.delivered == [("post", "C-fast", f"fast {i}") for i in range(3)], "the slow thread held up the rest"
    release.set()
    assert await pass_ == 4
    assert sink.delivered[-1] == ("post", "C-slow", "slow one")
    assert {r.status for r in await _rows(shepherd)} == {"sent"}


def test_a_message_stored_and_read_back_is_the_same_message_with_every_field() -> None:
    message = Message(key="k", text="t", kind="confirmation", state="pending", fields={"plan": "push"},
                      buttons=(Button("Approve", "approve", "c1", style="primary", confirm="sure?"),),
                      code="K7P2", detail="out", more="logs t1", task="t1")
    stored = message.to_json()
    assert set(stored) == {f.name for f in fields(Message)}  # a field added later is stored too
    assert stored == asdict(message) | {"buttons": [asdict(b) for b in message.buttons]}
    assert Message.from_json(stored) == message
    stored["fields"]["plan"] = "changed"
    assert message.fields == {"plan": "push"}  # the stored form is a copy
