"""100 concurrent demo-agent tasks against a real `shepherd serve`, beside the same 100 agent processes
launched by a bare asyncio script (the floor: what running the agents costs without Shepherd).

    .venv/bin/python bench/tasks.py [--store all|sqlite|postgres] [--tasks 100] [--lines 2000] [--rounds 3]
                                    [--sandbox auto|on|off]

The agents run the way Shepherd runs them: the demo agent preset's argv (bot/presets.py), and, when
bubblewrap holds on this host (`--sandbox auto`, the probe Shepherd itself runs, core.runners.probe),
inside the sandbox: Shepherd with SHEPHERD_SANDBOX=true, the floor with the same bwrap command line
(core.runners.sandbox.bwrap_argv over the same kind of view: Shepherd's folders hidden, the interpreter
shown, a home, a tools folder and a socket bound in per run). So the ratio compares like with like.

Measures per round, Shepherd and floor in turns: wall time from the first POST (the first launch) to the
last task finished (Shepherd: the last `finished_at` in the store, on this machine's clock; the bench's poll
for the end is shown too); time from `run` to the first output line (Shepherd: its own clock, task created to
the first output line stored; floor: launch to the first line read); log lines stored per second (every
line counted back from the store); the server's RSS idle and at its peak (VmHWM of the serving process
in /proc/<pid>/status, the kernel's own high-water mark); CPU per task (the server process, and its
children: the agents, git). Prints a Markdown table per store; bench/README.md keeps the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pgserver

ROOT = Path(__file__).resolve().parents[1]
SHEPHERD = str(Path(sys.executable).parent / "shepherd")
TICK = os.sysconf("SC_CLK_TCK")
# How often the bench asks whether all tasks have finished (a list of all of them, the Coder dialect). The wall time
# is read from the store (the last task's finished_at), so the polling sets no granularity: it is the bench's own
# load on the server (a list of 100 tasks every 0.1 s had been about 45 requests a round, on the cores the agents
# and the server share), kept light.
POLL_S = 0.25
DEMO_EXTRA_LINES = 5  # the demo agent prints 5 lines of its own around the [lines N] output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def store_cpu_seconds(pg: pgserver.PgServer | None) -> float:
    """CPU seconds the PostgreSQL cluster has spent so far: its live processes' own, and what the postmaster
    reaped of backends that ended (0 on SQLite, whose work is the server's own)."""
    if pg is None:
        return 0.0
    total = 0.0
    pids = pg.pids()
    for pid in pids:
        try:
            own, reaped = cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
        total += own + (reaped if pid == pids[0] else 0.0)
    return total


def status_mb(pid: int, key: str) -> float:
    """A memory figure of /proc/<pid>/status in MB: VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def stamp(value: Any) -> float:
    """A stored time as seconds since the epoch (Shepherd stores UTC; SQLite's text carries no zone)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def counted(db_url: str, ids: list[str]) -> tuple[int, list[float], float]:
    """(output lines stored, per task the seconds from its creation to its first output line, when the last task
    finished: seconds since the epoch), from the store."""
    # a row holds the lines of one read (migration 0024; a commit before it: a row per line, no `lines` column)
    total_sql = "SELECT coalesce(sum(lines), 0) FROM tasklog WHERE type = 'output'"
    per_line = "SELECT count(*) FROM tasklog WHERE type = 'output'"
    first_sql = ("SELECT t.created_at, min(l.time) FROM task t JOIN tasklog l ON l.task_id = t.id "
                 "WHERE t.id = {} AND l.type = 'output' GROUP BY t.created_at")
    end_sql = "SELECT finished_at FROM task WHERE id = {}"
    if db_url.startswith("sqlite:///"):
        db = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        try:
            lined = any(r[1] == "lines" for r in db.execute("PRAGMA table_info(tasklog)"))
            stored = db.execute(total_sql if lined else per_line).fetchone()[0]
            rows = [db.execute(first_sql.format("?"), (i,)).fetchone() for i in ids]
            ends = [db.execute(end_sql.format("?"), (i,)).fetchone()[0] for i in ids]
        finally:
            db.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(db_url)
        try:
            lined = await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                        "WHERE table_name = 'tasklog' AND column_name = 'lines'")
            stored = await conn.fetchval(total_sql if lined else per_line)
            rows = [await conn.fetchrow(first_sql.format("$1"), i) for i in ids]
            ends = [await conn.fetchval(end_sql.format("$1"), i) for i in ids]
        finally:
            await conn.close()
    finished = [stamp(e) for e in ends if e]
    if not finished:
        raise SystemExit("no task has a finished_at: the store's tasks did not end")
    return int(stored), [stamp(r[1]) - stamp(r[0]) for r in rows if r is not None], max(finished)


async def shepherd_round(n: int, lines: int, sandbox: bool, pg: pgserver.PgServer | None, tag: str
                         ) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shepherd-bench-") as tmp:
        os.chmod(tmp, 0o755)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_")}
        env.update(SHEPHERD_PORT=str(port), SHEPHERD_MAX_TASKS=str(n), SHEPHERD_MAX_TASKS_PER_PROJECT=str(n),
                   SHEPHERD_DEFAULT_AGENT="demo", SHEPHERD_LOG_LEVEL="WARNING", SHEPHERD_DATA_DIR=f"{tmp}/.shepherd",
                   SHEPHERD_SANDBOX="true" if sandbox else "false")
        db_url = f"sqlite:///{tmp}/.shepherd/shepherd.db"
        if pg is not None:
            pg.psql(f"CREATE DATABASE {tag}")
            db_url = env["SHEPHERD_DATABASE_URL"] = pg.url(tag)
            subprocess.run([SHEPHERD, "migrate"], cwd=tmp, env=env, capture_output=True, check=True)
        token = subprocess.run([SHEPHERD, "token", "create", "--scopes", "read", "write", "approve", "admin"],
                               cwd=tmp, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
        server = subprocess.Popen([SHEPHERD, "serve"], cwd=tmp, env=env, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with aiohttp.ClientSession(headers=headers) as http:
                for _ in range(300):
                    try:
                        async with http.get(f"{base}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.5)  # let start-up settle before the idle reading
                idle_rss = status_mb(server.pid, "VmRSS")
                cpu0 = cpu_seconds(server.pid)
                store0 = store_cpu_seconds(pg)
                started, started_at = time.monotonic(), time.time()

                async def create(i: int) -> str:
                    body = {"input": f"bench {i} [lines {lines}]", "agent": "demo"}
                    async with http.post(f"{base}/api/v2/tasks/me", json=body) as r:
                        if r.status != 201:
                            raise SystemExit(f"POST /api/v2/tasks/me gave {r.status}: {await r.text()}")
                        return str((await r.json())["id"])

                ids = await asyncio.gather(*(create(i) for i in range(n)))
                while True:
                    async with http.get(f"{base}/api/v2/tasks", params={"q": "owner:me", "limit": str(n)}) as r:
                        tasks = (await r.json())["tasks"]
                    if all(t["current_state"]["state"] in ("complete", "failed") for t in tasks) and len(tasks) == n:
                        break
                    await asyncio.sleep(POLL_S)
                noticed = time.monotonic() - started
                peak_rss = status_mb(server.pid, "VmHWM")
                cpu1 = cpu_seconds(server.pid)
                store1 = store_cpu_seconds(pg)
                failed = [t["id"] for t in tasks if t["current_state"]["state"] != "complete"]
            stored, firsts, last_end = await counted(db_url, ids)
            wall = last_end - started_at
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    expected = n * (lines + DEMO_EXTRA_LINES)
    return {
        "failed": len(failed), "wall_s": wall, "noticed_s": noticed, "stored": stored, "expected": expected,
        "lines_per_s": stored / wall, "first_p50": statistics.median(firsts),
        "first_p95": sorted(firsts)[int(0.95 * (len(firsts) - 1))], "first_max": max(firsts),
        "idle_rss": idle_rss, "peak_rss": peak_rss,
        "server_cpu_ms": (cpu1[0] - cpu0[0]) * 1000 / n, "child_cpu_ms": (cpu1[1] - cpu0[1]) * 1000 / n,
        "store_cpu_ms": (store1 - store0) * 1000 / n,
    }


async def bare_round(n: int, lines: int, sandbox: bool) -> dict[str, float]:
    """The floor: the same agents, same argv (and same sandbox), as plain asyncio subprocesses in empty
    directories, their lines kept in memory."""
    from bot.presets import DEMO
    from core.runners.presets import PYTHON
    from core.runners.sandbox import SANDBOX_HOME, SandboxView, bwrap_argv

    with tempfile.TemporaryDirectory(prefix="bare-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        view = None
        held: socket.socket | None = None
        if sandbox:  # as bot.background builds it: Shepherd's folders hidden, a tools folder and a socket shown
            (root / "data" / "bin").mkdir(parents=True)
            held = socket.socket(socket.AF_UNIX)
            held.bind(str(root / "data" / "ask.sock"))
            view = SandboxView(hidden=(root / "data", Path.cwd().resolve(), Path.home().resolve()),
                               programs=(Path(PYTHON),), tools=root / "data" / "bin", socket=root / "data" / "ask.sock")
        bwrap = shutil.which("bwrap") or "bwrap"
        firsts: list[float] = []
        counts: list[int] = []

        async def one(i: int) -> None:
            cwd = root / "ws" / str(i)
            cwd.mkdir(parents=True)
            cwd.chmod(0o777)  # the sandbox's uid writes here, as in Shepherd's workspaces
            argv = DEMO.argv(prompt=f"bench {i} [lines {lines}]", session=str(uuid.uuid4()), workspace=cwd,
                             task=f"bench-{i}", follow_up=False)
            env = {"PATH": os.environ.get("PATH", os.defpath), "SHEPHERD_WORKSPACE": str(cwd),
                   "SHEPHERD_TASK_ID": f"task-{i}", "SHEPHERD_TASK_NAME": f"bench-{i}"}
            begun = time.monotonic()
            if view is not None:
                home = root / ".homes" / str(i)
                home.mkdir(parents=True)
                home.chmod(0o777)
                env.update(HOME=SANDBOX_HOME, TMPDIR="/tmp")
                argv = bwrap_argv(bwrap, argv, cwd=cwd, env=env, view=view.for_task(home),
                                  program=DEMO.own_words(follow_up=False))
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            assert proc.stdout is not None
            got: list[bytes] = []
            async for line in proc.stdout:
                if not got:
                    firsts.append(time.monotonic() - begun)
                got.append(line)
            await proc.wait()
            counts.append(len(got) if proc.returncode == 0 else -1)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.monotonic() - started
        if held is not None:
            held.close()
    failed = sum(1 for c in counts if c < 0)
    if failed:
        raise SystemExit(f"the floor's agents failed: {failed} of {n} exited non-zero")
    return {"wall_s": wall, "first_p50": statistics.median(firsts), "lines": sum(counts)}


async def sandbox_holds() -> bool:
    """Does bubblewrap hold here, by the probe Shepherd itself runs before it sandboxes an agent?"""
    from core.runners.probe import probe
    from core.runners.sandbox import SandboxView

    return (await probe(SandboxView())).strong


def table(store: str, rounds: list[tuple[dict[str, float], dict[str, float]]], args: argparse.Namespace,
          sandbox: bool, commit: str) -> str:
    def med(key: str, which: int = 0) -> float:
        return statistics.median(r[which][key] for r in rounds)

    wall, first = med("wall_s") / med("wall_s", 1), med("first_p50") / med("first_p50", 1)
    how = "in bubblewrap, the same bwrap argv" if sandbox else "without a sandbox (bubblewrap does not hold here)"
    lines = [
        f"{store}: {args.tasks} tasks x {args.lines} lines, {how}, median of {args.rounds} rounds, commit {commit}",
        "",
        "| measure | Shepherd (serve) | bare asyncio | ratio | target |",
        "|---|---:|---:|---:|---:|",
        f"| wall time, first run to last finished | {med('wall_s'):.2f} s | {med('wall_s', 1):.2f} s | "
        f"{wall:.2f}x | <= 1.5x {'met' if wall <= 1.5 else '**not met**'} |",
        f"| (the same, as the bench's poll every {POLL_S} s noticed it) | {med('noticed_s'):.2f} s | | | |",
        f"| run to first output line, p50 | {med('first_p50') * 1000:.0f} ms | {med('first_p50', 1) * 1000:.0f} ms | "
        f"{first:.2f}x | <= 1.5x {'met' if first <= 1.5 else '**not met**'} |",
        f"| run to first output line, p95 / max | {med('first_p95') * 1000:.0f} / {med('first_max') * 1000:.0f} ms "
        "| | | |",
        f"| server RSS idle / peak (VmHWM) | {med('idle_rss'):.0f} / {med('peak_rss'):.0f} MB | | | "
        f"peak <= 150 MB {'met' if med('peak_rss') <= 150 else '**not met**'} |",
        f"| output lines stored per second | {med('lines_per_s'):,.0f} | | | |",
        f"| lines stored / expected | {med('stored'):,.0f} / {med('expected'):,.0f} | {med('lines', 1):,.0f} | | |",
        f"| server CPU per task (own / children: agent, git) | {med('server_cpu_ms'):.0f} / "
        f"{med('child_cpu_ms'):.0f} ms | | | |",
        f"| PostgreSQL's CPU per task (its processes, all of them) | {med('store_cpu_ms'):.0f} ms | | | |",
        f"| tasks not succeeded | {max(r[0]['failed'] for r in rounds):.0f} | | | |",
    ]
    return "\n".join(lines)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--store", choices=("all", "sqlite", "postgres"), default="all",
                    help="all: SQLite, then PostgreSQL if its server programs are installed (default)")
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                    help="auto: in bubblewrap when it holds here (default)")
    args = ap.parse_args()
    sandbox = args.sandbox == "on" or (args.sandbox == "auto" and await sandbox_holds())
    stores = ["sqlite", "postgres"] if args.store == "all" else [args.store]
    if "postgres" in stores and pgserver.bindir() is None:
        print("PostgreSQL server programs not found: measuring SQLite only (apt-get install postgresql)")
        stores.remove("postgres")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    tables: list[str] = []
    bad = 0
    for store in stores:
        rounds = []
        with tempfile.TemporaryDirectory(prefix="bench-tasks-pg-") as pg_root:
            os.chmod(pg_root, 0o755)
            pg = pgserver.PgServer.start(Path(pg_root) / "pg") if store == "postgres" else None
            try:
                for i in range(args.rounds):
                    ours = await shepherd_round(args.tasks, args.lines, sandbox, pg, f"tasks_{i}")
                    bare = await bare_round(args.tasks, args.lines, sandbox)
                    rounds.append((ours, bare))
                    print(f"[{store}] round {i + 1}: Shepherd wall {ours['wall_s']:.2f} s, first line p50 "
                          f"{ours['first_p50'] * 1000:.0f} ms, peak RSS {ours['peak_rss']:.0f} MB, "
                          f"{ours['stored']:,.0f}/{ours['expected']:,.0f} lines, {ours['failed']:.0f} failed; "
                          f"bare wall {bare['wall_s']:.2f} s, first line p50 {bare['first_p50'] * 1000:.0f} ms",
                          flush=True)
            finally:
                if pg is not None:
                    pg.stop()
        bad += sum(int(r[0]["failed"]) + int(r[0]["stored"] != r[0]["expected"]) for r in rounds)
        tables.append(table(store, rounds, args, sandbox, commit))
    print("\n" + "\n\n".join(tables))
    if bad:
        print(f"\nbench: {bad} rounds had tasks that did not succeed or lines not stored", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
