"""The delivery ledger on both stores: a redelivered item is processed once; a failed or abandoned one again,
by exactly one process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlmodel import select

from core.channels.ledger import Ledger
from core.clock import utcnow
from core.shepherd import Shepherd
from core.store.models import Delivery


async def _age(shepherd: Shepherd, key: str) -> None:
    async with shepherd.db.write() as session:
        row = (await session.exec(select(Delivery).where(Delivery.key == key))).one()
        row.next_at = utcnow() - timedelta(seconds=1)
        session.add(row)


async def test_an_item_is_processed_once_however_often_it_arrives(shepherd: Shepherd) -> None:
    ledger = shepherd.ledger
    assert await ledger.receive("slack", "event:E1", "acme", {"n": 1})
    assert not await ledger.receive("slack", "event:E1", "acme", {"n": 1})  # in hand
    await ledger.done("slack", "event:E1")
    assert not await ledger.receive("slack", "event:E1", "acme", {"n": 1})  # done
    row = await ledger.get("slack", "event:E1")
    assert row is not None and (row.status, row.attempts, row.redeliveries) == ("done", 1, 2)
    assert row.payload == {"n": 1}
    assert await ledger.receive("github", "event:E1", "acme", {})  # another source, another item


async def test_concurrent_copies_of_one_item_are_taken_by_one(two_cores: tuple[Shepherd, Shepherd]) -> None:
    first, second = two_cores
    results = await asyncio.gather(*(core.ledger.receive("slack", f"event:R{i}", "acme", {})
                                     for i in range(10) for core in (first, second)))
    for i in range(10):
        assert sorted(results[2 * i: 2 * i + 2]) == [False, True]


async def test_a_failed_item_is_processed_again_on_redelivery_or_after_its_backoff(shepherd: Shepherd) -> None:
    ledger = shepherd.ledger
    assert await ledger.receive("slack", "event:F", "acme", {})
    await ledger.failed("slack", "event:F", "database was away")
    assert await ledger.due("slack") == []  # backing off
    row = await ledger.get("slack", "event:F")
    assert row is not None and row.status == "failed" and row.error == "database was away"
    await _age(shepherd, "event:F")
    [again] = await ledger.due("slack")
    assert again.key == "event:F"
    assert await ledger.due("slack") == []  # taken: not handed out twice
    await ledger.failed("slack", "event:F", "still away")
    assert await ledger.receive("slack", "event:F", "acme", {})  # a redelivery takes a failed item at once


async def test_an_item_whose_process_died_is_taken_once_its_lease_is_over(
    two_cores: tuple[Shepherd, Shepherd],
) -> None:
    first, second = two_cores
    assert await first.ledger.receive("slack", "event:D", "acme", {"k": "v"})
    assert await second.ledger.due("slack") == []  # its process may still be working on it
    await _age(first, "event:D")
    taken = await asyncio.gather(first.ledger.due("slack"), second.ledger.due("slack"))
    assert sorted(len(t) for t in taken) == [0, 1]
    assert [r.payload for t in taken for r in t] == [{"k": "v"}]


async def test_an_item_that_keeps_failing_is_given_up_after_five_attempts(shepherd: Shepherd) -> None:
    ledger = shepherd.ledger
    assert await ledger.receive("slack", "event:X", "acme", {})
    for _ in range(4):
        await ledger.failed("slack", "event:X", "boom")
        await _age(shepherd, "event:X")
        assert len(await ledger.due("slack")) == 1
    await ledger.failed("slack", "event:X", "boom")
    await _age(shepherd, "event:X")
    assert await ledger.due("slack") == []
    row = await ledger.get("slack", "event:X")
    assert row is not None and (row.status, row.attempts) == ("failed", 5)


async def test_copies_of_one_item_in_one_burst_are_taken_once_and_counted(shepherd: Shepherd) -> None:
    """Items arriving together are recorded together: a copy of an item new in the same burst is in hand, not new,
    and its arrival is counted as a redelivery; a known item's copy is counted too."""
    ledger = shepherd.ledger
    assert await ledger.receive("slack", "event:K", "acme", {"n": 0})
    results = await asyncio.gather(*(ledger.receive("slack", key, "acme", {"n": 1})
                                     for key in ("event:B", "event:B", "event:K", "event:B")))
    assert results == [True, False, False, False]
    new, known = await ledger.get("slack", "event:B"), await ledger.get("slack", "event:K")
    assert new is not None and (new.status, new.attempts, new.redeliveries, new.payload) == ("received", 1, 2, {"n": 1})
    assert known is not None and (known.attempts, known.redeliveries, known.payload) == (1, 1, {"n": 0})


async def test_copies_in_one_burst_are_in_hand_even_with_no_lease(shepherd: Shepherd) -> None:
    """A copy of an item new in the same burst is in hand on both stores, however short the lease."""
    ledger = Ledger(shepherd.db, lease_s=0)
    results = await asyncio.gather(*(ledger.receive("slack", "event:Z", "acme", {}) for _ in range(3)))
    assert results == [True, False, False]
