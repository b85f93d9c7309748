"""Confirmations across real server processes: two `shepherd web` replicas on one PostgreSQL database
take an approve and a reject for the same confirmation at the same moment, and make one decision."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.presets import agent_catalog
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Event
from tests.procs import Home, stop
from tests.test_confirmations import gate, pr_plan, started_task

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROUNDS = 8
ALICE = Principal.for_role("acme", "alice", Role.ADMIN, "console", user_id="user-alice")


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[tuple[Home, Home]]:
    homes = (Home(tmp_path / "a", SHEPHERD_DATABASE_URL=pg_url, SHEPHERD_ORG="acme"),
             Home(tmp_path / "b", SHEPHERD_DATABASE_URL=pg_url, SHEPHERD_ORG="acme"))
    for home in homes:
        home.root.mkdir()
    procs = [home.start("web") for home in homes]
    try:
        yield homes
    finally:
        for proc in procs:
            stop(proc)


async def _pending(url: str, rounds: int) -> list[tuple[str, str]]:
    db = Database(url)
    try:
        shepherd = Shepherd(db, catalog=agent_catalog())
        await shepherd.orgs.ensure("acme")
        made = []
        for i in range(rounds):
            task = await started_task(shepherd, ALICE)
            conf = await gate(shepherd, task, pr_plan(f"{i:040x}"))
            made.append((task.id, conf.code))
        return made
    finally:
        await db.dispose()


async def _decisions(url: str, task_id: str) -> list[str]:
    db = Database(url)
    try:
        async with db.read() as session:
            rows = await session.exec(select(Event.name).where(Event.task_id == task_id).order_by(col(Event.id)))
            return [n for n in rows if n.startswith("confirmation.") and n != "confirmation.requested"]
    finally:
        await db.dispose()


def test_approve_and_reject_on_two_replicas_at_once_make_one_decision(
    replicas: tuple[Home, Home], pg_url: str
) -> None:
    a, b = replicas
    approver_a = a.token("read", "approve", user="ana")
    approver_b = b.token("read", "approve", user="ben")
    for task_id, code in asyncio.run(_pending(pg_url, ROUNDS)):
        results: dict[str, tuple[int, Any]] = {}
        barrier = threading.Barrier(2)

        def decide(home: Home, token: str, word: str, code: str, barrier: threading.Barrier,
                   results: dict[str, tuple[int, Any]]) -> None:
            barrier.wait()
            results[word] = home.http("POST", f"/api/confirmations/{code}/decision", {"decision": word}, token)

        threads = [threading.Thread(target=decide, args=(a, approver_a, "approve", code, barrier, results)),
                   threading.Thread(target=decide, args=(b, approver_b, "reject", code, barrier, results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(status for status, _ in results.values())
        assert statuses == [200, 409], results
        winner = next(word for word, (status, _) in results.items() if status == 200)
        final = "approved" if winner == "approve" else "rejected"
        assert results[winner][1]["confirmation"]["status"] == final
        loser = results["reject" if winner == "approve" else "approve"][1]
        assert loser["code"] == "CONFIRMATION_DECIDED" and final in loser["error"]
        assert asyncio.run(_decisions(pg_url, task_id)) == [f"confirmation.{final}"]
        status, body = a.http("GET", f"/api/confirmations/{code}", token=approver_a)
        assert (status, body["status"]) == (200, final)
