"""REST at scale: the Coder task API with 10,000 and then 100,000 tasks stored, on both stores.

    .venv/bin/python bench/scale.py [--store all|sqlite|postgres] [--small 10000] [--large 100000]
                                    [--duration 3] [--rounds 3] [--warmup 2]

Per store, a fresh database (SQLite, or a durable PostgreSQL cluster from bench/pgserver.py) gets
`--small` tasks in one bulk insert straight through core.store.db.Database and core.store.models (as
bench/run.py seeds agents): an org's history, oldest first, most of them completed (Coder's `active`:
Shepherd answers completed and awaiting tasks as active), some failed or cancelled, a few running; each
with a prompt, an input line and three output lines in its log; the one task the logs target reads has
1,000 lines. Then `shepherd web` (the web server alone: no worker touches the rows) is measured with wrk
like bench/run.py does:

- GET /api/v2/tasks?q=status:active       the newest page of matching tasks (at most 500), newest first;
- GET /api/v2/tasks/me/{task}/logs         the 1,000 lines of one task.

Then the same database grows to `--large` tasks (the logs target's task unchanged) and both are measured
again. The figure of merit is large / small: the issue's target is that each answers within 2x of its
small figure (the cost grows with the page, not the table). Exit status 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pgserver
from run import (
    BENCH,
    ORG,
    BenchError,
    Load,
    Measured,
    Processes,
    Watch,
    cpu_seconds,
    free_port,
    http,
    measure,
    run_cli,
    shepherd_cmd,
    store_env,
    tail,
    wait_ready,
)

TARGET_LINES = 1000  # lines in the log of the task whose logs are read
LINES_PER_TASK = 4  # every other task: its input and three output lines
CHUNK = 5000


async def make_token(db_url: str) -> tuple[str, str]:
    """A token acting for the user `bench` (who owns every task); (its secret, the user's id)."""
    from core.shepherd import Shepherd
    from core.store.db import Database

    db = Database(db_url)
    try:
        issued = await Shepherd(db).tokens.create(org_id=ORG, user="bench", name="bench",
                                                  scopes="read write approve admin")
    finally:
        await db.dispose()
    assert issued.user is not None
    return issued.secret, issued.user.id


async def seed_tasks(db_url: str, owner_id: str, start: int, stop: int, total: int) -> str | None:
    """Insert tasks number start..stop-1 (of `total` planned, spread over the same span of time) with their
    logs; returns the name of the task with TARGET_LINES lines when it is among them."""
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    from core.store.db import Database
    from core.store.models import Task

    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(seconds=total + 3600)
    template = Task(id="x", org_id=ORG, name="x", display_name="x", owner_id=owner_id, owner_name="bench",
                    runtime="demo", prompt="x", status="completed", state="complete").model_dump()
    task_table, log_table = SQLModel.metadata.tables["task"], SQLModel.metadata.tables["tasklog"]
    target = None
    db = Database(db_url)
    try:
        for chunk in range(start, stop, CHUNK):
            tasks: list[dict[str, Any]] = []
            logs: list[dict[str, Any]] = []
            for i in range(chunk, min(stop, chunk + CHUNK)):
                created = base + timedelta(seconds=i)
                status, state, outcome = "completed", "complete", "changes"
                if i % 50 == 7:
                    status, state, outcome = "failed", "failed", "error"
                elif i % 50 == 13:
                    status, state, outcome = "cancelled", "failed", None
                elif i % 1000 == 500:
                    status, state, outcome = "running", "working", None
                task_id, name = f"task-bench-{i:07d}", f"bench-{i:07d}"
                prompt = f"fix issue #{i} in the bench repository"
                tasks.append({**template, "id": task_id, "name": name, "display_name": prompt[:60], "prompt": prompt,
                              "status": status, "state": state, "outcome": outcome, "turns": 1,
                              "log_count": LINES_PER_TASK, "created_at": created, "updated_at": created,
                              "state_at": created, "started_at": created,
                              "finished_at": None if status == "running" else created + timedelta(seconds=30)})
                lines = LINES_PER_TASK
                if i == 1:  # an old task: its logs are read at every size
                    lines, target = TARGET_LINES, name
                    tasks[-1]["log_count"] = lines
                logs.append({"task_id": task_id, "time": created, "type": "input", "content": prompt})
                logs += [{"task_id": task_id, "time": created + timedelta(milliseconds=n), "type": "output",
                          "content": f"step {n}: editing src/module_{n % 17}.py and running the tests"}
                         for n in range(1, lines)]
            async with db.engine.begin() as conn:
                await conn.execute(insert(task_table), tasks)
                await conn.execute(insert(log_table), logs)
    finally:
        await db.dispose()
    return target


def bench_store(store: str, load: Load, sizes: tuple[int, int], procs: Processes, root: Path
                ) -> list[tuple[str, Measured, Measured]]:
    folder = root / store
    folder.mkdir()
    pg = None
    try:
        env, db_url, pg = store_env(store, folder)
        run_cli(["migrate"], env, folder)
        port = free_port()
        env.update(SHEPHERD_PORT=str(port), SHEPHERD_HOST="127.0.0.1", SHEPHERD_LOG_LEVEL="WARNING")
        token, owner_id = asyncio.run(make_token(db_url))
        auth = [f"Authorization: Bearer {token}"]
        base = f"http://127.0.0.1:{port}"
        results: dict[int, list[Measured]] = {}
        target: str | None = None
        seeded = 0
        for size in sizes:
            t0 = time.monotonic()
            target = asyncio.run(seed_tasks(db_url, owner_id, seeded, size, sizes[-1])) or target
            seeded = size
            if pg is not None:
                pg.psql("VACUUM ANALYZE", "shepherd")  # the steady state autovacuum reaches by itself
            print(f"[{store}] {size:,} tasks stored ({time.monotonic() - t0:.1f} s to add them)", flush=True)
            log = folder / f"web-{size}.log"
            server = procs.start(f"shepherd web ({store})", [*shepherd_cmd(), "web"], env=env, cwd=folder, log=log)
            wait_ready(f"{base}/readyz", server, log)
            check(base, token, target, min(500, size - size // 25))
            watch = Watch(cpu=lambda server=server: (cpu_seconds([server.pid]), None), log=log)  # type: ignore[misc]
            results[size] = [
                measure(load, f"GET /api/v2/tasks?q=status:active ({store}, {size:,} tasks)",
                        f"{base}/api/v2/tasks?q=status:active", watch, headers=auth),
                measure(load, f"GET /api/v2/tasks/me/{{task}}/logs ({store}, {size:,} tasks, {TARGET_LINES} lines)",
                        f"{base}/api/v2/tasks/me/{target}/logs", watch, headers=auth),
            ]
            procs.stop(server)
            if server.returncode not in (0, -signal.SIGTERM):
                print(f"  note: shepherd web exited with {server.returncode}:\n{tail(log)}")
        small, large = results[sizes[0]], results[sizes[-1]]
        names = ["GET /api/v2/tasks?q=status:active", "GET /api/v2/tasks/{user}/{task}/logs"]
        return [(f"{name} ({store})", s, b) for name, s, b in zip(names, small, large, strict=True)]
    finally:
        if pg is not None:
            pg.stop()


def check(base: str, token: str, target: str | None, page: int) -> None:
    """One request per target by hand: the load must read full pages, not errors or empty answers."""
    status, _, body = http("GET", f"{base}/api/v2/tasks?q=status:active", token=token)
    if status != 200 or not isinstance(body, dict) or body.get("count", 0) < page:
        raise BenchError(f"GET /api/v2/tasks?q=status:active gave {status}: {str(body)[:300]}")
    status, _, body = http("GET", f"{base}/api/v2/tasks/me/{target}/logs", token=token)
    if status != 200 or not isinstance(body, dict) or len(body.get("logs", [])) != TARGET_LINES:
        raise BenchError(f"GET /api/v2/tasks/me/{target}/logs gave {status}: {str(body)[:300]}")


def table(rows: list[tuple[str, Measured, Measured]], sizes: tuple[int, int]) -> str:
    small, large = f"{sizes[0]:,}", f"{sizes[-1]:,}"
    lines = [f"| target | req/s, {small} tasks | req/s, {large} | p50, {small} / {large} | "
             f"time per request {large} / {small} (<= 2x) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, s, b in rows:
        ratio = s.rps / b.rps
        lines.append(f"| {name} | {s.rps:,.1f} | {b.rps:,.1f} | {s.p50_ms:.1f} / {b.p50_ms:.1f} ms | {ratio:.2f}x "
                     f"{'met' if ratio <= 2 else '**not met**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--store", choices=("all", "sqlite", "postgres"), default="all")
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--duration", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    p.add_argument("--keep", action="store_true", help="keep bench/.work/scale-*/")
    args = p.parse_args(argv)
    if not 10 <= args.small < args.large:
        p.error("need 10 <= --small < --large")
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    stores = ["sqlite", "postgres"] if args.store == "all" else [args.store]
    if "postgres" in stores and pgserver.bindir() is None:
        print("PostgreSQL server programs not found: measuring SQLite only (apt-get install postgresql)")
        stores.remove("postgres")
    load = Load(threads=1, connections=args.connections, duration=args.duration, warmup=args.warmup,
                rounds=args.rounds)
    sizes = (args.small, args.large)
    print(f"REST at scale: {args.small:,} then {args.large:,} tasks, stores {', '.join(stores)}; {load.describe()}",
          flush=True)
    rows: list[tuple[str, Measured, Measured]] = []
    procs = Processes()
    (BENCH / ".work").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="scale-", dir=BENCH / ".work"))
    root.chmod(0o755)
    try:
        for store in stores:
            rows += bench_store(store, load, sizes, procs, root)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(rows, sizes))
    failed = [n for n, s, b in rows if s.failed or b.failed]
    print(f"\n{statistics.median([s.requests for _, s, _ in rows] or [0]):,.0f} answers per target (median); "
          f"{'every one a success' if not failed else 'FAILURES in: ' + ', '.join(failed)}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
