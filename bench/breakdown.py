"""Where a request's time goes: the steps behind the benchmarked endpoints, timed in-process, one at a time.

    .venv/bin/python bench/breakdown.py [--store sqlite|postgres|all] [--agents 10000]

No HTTP and no concurrency: each step runs 7 × 40 times in a row on a fresh store seeded like bench/run.py's,
and the table gives wall time and the event-loop thread's CPU time per call. The CPU column is what
limits requests/s when the server is busy (one process, one event loop); wall minus CPU is waiting (on
aiosqlite's thread, PostgreSQL, or fsync). Pair it with bench/run.py's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import floor
import pgserver
from run import ORG, WORK, seed

BATCHES, PER_BATCH = 7, 40


async def timed(name: str, step: Callable[[], Awaitable[Any]], rows: list[tuple[str, float, float]]) -> None:
    """Per call: the median over BATCHES batches (this shared 2-core machine has stalls; the median shrugs)."""
    for _ in range(10):
        await step()
    walls, cpus = [], []
    for _ in range(BATCHES):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(PER_BATCH):
            await step()
        walls.append((time.perf_counter() - wall) * 1000 / PER_BATCH)
        cpus.append((time.thread_time() - cpu) * 1000 / PER_BATCH)
    rows.append((name, statistics.median(walls), statistics.median(cpus)))


async def prepare(db_url: str, agents: int) -> tuple[str, list[str]]:
    """A token (its org) and the seeded agents; returns the token's secret and agent ids to act on."""
    from core.shepherd import Shepherd
    from core.store.db import Database

    db = Database(db_url)
    try:
        issued = await Shepherd(db).tokens.create(org_id=ORG, name="bench", scopes="read write approve admin")
    finally:
        await db.dispose()
    return issued.secret, await seed(db_url, agents)


async def breakdown(db_url: str, agents: int, secret: str, post_ids: list[str]) -> list[tuple[str, float, float]]:
    from pydantic import TypeAdapter
    from sqlalchemy import func, select
    from sqlmodel import SQLModel

    import core.store.models  # noqa: F401  (the tables, registered on SQLModel.metadata)
    from adapters.rest.codespar import AgentSummary, summary
    from core.agents import AgentFilter
    from core.clock import utcnow
    from core.shepherd import Shepherd
    from core.store.db import Database

    db = Database(db_url)
    rows: list[tuple[str, float, float]] = []
    try:
        shepherd = Shepherd(db)
        principal = await shepherd.tokens.authenticate(secret)
        views, _ = await shepherd.agents.list(principal, AgentFilter(), limit=50)
        now = utcnow()
        summaries = [summary(v, now) for v in views]
        adapter = TypeAdapter(list[AgentSummary])
        agent, project = SQLModel.metadata.tables["agent"], SQLModel.metadata.tables["project"]
        page = (
            select(agent, project)
            .join(project, agent.c.project_id == project.c.id, isouter=True)
            .where(agent.c.org_id == ORG)
            .order_by(agent.c.created_at, agent.c.id)
            .limit(50)
        )
        last = max(0, agents - 50)

        async def core_rows(statement: Any) -> None:
            async with db.read() as session:
                (await session.exec(statement)).all()

        calls = [0]

        async def act() -> None:  # each call changes another agent's level
            calls[0] += 1
            n = calls[0]
            await shepherd.agents.act(principal, post_ids[n % len(post_ids)], "set_autonomy", {"level": n % 6})

        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("session round trip: SELECT 1 (db.ping)", db.ping),
            ("token lookup (tokens.authenticate)", lambda: shepherd.tokens.authenticate(secret)),
            ("COUNT(*) of the org's agents, alone", lambda: core_rows(
                select(func.count()).select_from(agent).where(agent.c.org_id == ORG))),
            ("page of 50 as plain rows (no ORM objects)", lambda: core_rows(page)),
            (f"page of 50 at offset {last} as plain rows", lambda: core_rows(page.offset(last))),
            ("agents.list, limit 50 (COUNT + page, ORM)", lambda: shepherd.agents.list(
                principal, AgentFilter(), limit=50)),
            (f"agents.list, limit 50 offset {last}", lambda: shepherd.agents.list(
                principal, AgentFilter(), limit=50, offset=last)),
            ("50 × summary(): AgentSummary models", lambda: _sync(lambda: [summary(v, now) for v in views])),
            ("dump_json of the 50 summaries", lambda: _sync(
                lambda: adapter.dump_json(summaries, by_alias=True, exclude_none=True))),
            ("agents.act set_autonomy (write + event + commit)", act),
        ]
        if db.is_sqlite:
            steps.insert(1, ("  the same SELECT 1 as raw sqlite3 (no thread)", lambda: _sync(
                lambda: _raw_sqlite(db_url, "SELECT 1"))))
        store = await floor.SqliteStore.open(db_url) if db.is_sqlite else await floor.PgStore.open(db_url)
        floor_calls = [0]

        async def floor_list(offset: int) -> None:  # bench/floor.py's whole list request, without HTTP
            org, _, _ = await store.principal(hashlib.sha256(secret.encode()).hexdigest())
            _, page_rows = await store.page(org, 50, offset)
            at = datetime.now(UTC)
            json.dumps([floor.agent_json(r, at) for r in page_rows], separators=(",", ":"))

        async def floor_act() -> None:
            floor_calls[0] += 1
            n = floor_calls[0]
            org, scopes, actor = await store.principal(hashlib.sha256(secret.encode()).hexdigest())
            await store.set_level(org, post_ids[n % len(post_ids)], n % 6, scopes, actor)

        steps += [
            ("floor: token + COUNT + page + JSON, by hand (bench/floor.py)", lambda: floor_list(0)),
            (f"floor: the same at offset {last}", lambda: floor_list(last)),
            ("floor: token + read + UPDATE + INSERT event + COMMIT", floor_act),
        ]
        for name, step in steps:
            await timed(name, step, rows)
    finally:
        if "store" in locals():
            await store.close()
        await db.dispose()
        _RAW.clear()
    return rows


_RAW: dict[str, Any] = {}


def _raw_sqlite(db_url: str, sql: str) -> None:
    import sqlite3

    if db_url not in _RAW:
        _RAW[db_url] = sqlite3.connect(db_url.split(":///", 1)[1])
    _RAW[db_url].execute(sql).fetchall()


async def _sync(fn: Callable[[], Any]) -> Any:
    return fn()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--store", choices=("all", "sqlite", "postgres"), default="all")
    p.add_argument("--agents", type=int, default=10_000)
    args = p.parse_args()
    from bot.migrate import upgrade

    stores = ["sqlite", "postgres"] if args.store == "all" else [args.store]
    if "postgres" in stores and pgserver.bindir() is None:
        print("no PostgreSQL server programs: SQLite only")
        stores.remove("postgres")
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="breakdown-", dir=WORK))
    root.chmod(0o755)
    pg = None
    try:
        for store in stores:
            if store == "sqlite":
                url = f"sqlite:///{root / 'shepherd.db'}"
            else:
                pg = pgserver.PgServer.start(root / "pg")
                pg.psql("CREATE DATABASE shepherd")
                url = pg.url("shepherd")
            upgrade(url)
            secret, post_ids = asyncio.run(prepare(url, args.agents))
            if pg is not None:
                pg.psql("VACUUM ANALYZE", "shepherd")  # as bench/run.py: autovacuum's steady state
            rows = asyncio.run(breakdown(url, args.agents, secret, post_ids))
            print(f"\n{store}, {args.agents:,} agents, in-process; per call, median of {BATCHES} batches of "
                  f"{PER_BATCH}:\n")
            print("| step | wall per call | event-loop CPU per call |")
            print("| --- | ---: | ---: |")
            for name, wall, cpu in rows:
                print(f"| {name} | {wall:.3f} ms | {cpu:.3f} ms |")
            if pg is not None:
                pg.stop()
                pg = None
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
