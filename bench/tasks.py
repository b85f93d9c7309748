"""100 concurrent demo-agent tasks against a real `shepherd serve`, beside the same 100 agent processes
launched by a bare asyncio script (the floor: what running the CLIs costs without Shepherd).

    .venv/bin/python bench/tasks.py [--tasks 100] [--lines 2000] [--rounds 3]

Measures per round: wall time from the first POST to the last task finished, time from `run` (task
created) to its first output line, log lines stored per second (every line is counted back from the
store), the server's RSS (idle and peak) and CPU per task (the server process, and its children: the
agents, git). Prints a Markdown table; bench/README.md keeps the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
SHEPHERD = str(Path(sys.executable).parent / "shepherd")
DEMO = ROOT / "bot" / "demo_agent.py"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def parse_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def shepherd_round(n: int, lines: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shepherd-bench-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_")}
        env.update(SHEPHERD_PORT=str(port), SHEPHERD_MAX_TASKS=str(n), SHEPHERD_MAX_TASKS_PER_PROJECT=str(n),
                   SHEPHERD_DEFAULT_AGENT="demo", SHEPHERD_LOG_LEVEL="WARNING", SHEPHERD_DATA_DIR=f"{tmp}/.shepherd")
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
                idle_rss = rss_mb(server.pid)
                cpu0 = cpu_seconds(server.pid)
                peak = [idle_rss]
                sampling = True

                def sample() -> None:
                    while sampling:
                        peak[0] = max(peak[0], rss_mb(server.pid))
                        time.sleep(0.1)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                started = time.time()

                async def create(i: int) -> str:
                    body = {"input": f"bench {i} [lines {lines}]", "agent": "demo"}
                    async with http.post(f"{base}/api/v2/tasks/me", json=body) as r:
                        assert r.status == 201, await r.text()
                        return str((await r.json())["id"])

                ids = await asyncio.gather(*(create(i) for i in range(n)))
                while True:
                    async with http.get(f"{base}/api/v2/tasks", params={"q": "owner:me"}) as r:
                        tasks = (await r.json())["tasks"]
                    if all(t["current_state"]["state"] in ("complete", "failed") for t in tasks) and len(tasks) == n:
                        break
                    await asyncio.sleep(0.1)
                wall = time.time() - started
                sampling = False
                sampler.join()
                cpu1 = cpu_seconds(server.pid)
                failed = [t["id"] for t in tasks if t["current_state"]["state"] != "complete"]
            db = sqlite3.connect(f"{tmp}/.shepherd/shepherd.db")
            stored = db.execute("SELECT count(*) FROM tasklog WHERE type = 'output'").fetchone()[0]
            firsts = []
            for task_id in ids:
                created, first = db.execute(
                    "SELECT t.created_at, min(l.time) FROM task t JOIN tasklog l ON l.task_id = t.id "
                    "WHERE t.id = ? AND l.type = 'output'", (task_id,)).fetchone()
                firsts.append(datetime.fromisoformat(first).timestamp() - datetime.fromisoformat(created).timestamp())
            db.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    expected = n * (lines + 5)  # the demo agent prints 5 lines of its own around the [lines N] output
    return {
        "failed": len(failed), "wall_s": wall, "stored": stored, "expected": expected,
        "lines_per_s": stored / wall, "first_p50": statistics.median(firsts),
        "first_p95": sorted(firsts)[int(0.95 * (n - 1))], "first_max": max(firsts),
        "idle_rss": idle_rss, "peak_rss": peak[0],
        "server_cpu_ms": (cpu1[0] - cpu0[0]) * 1000 / n, "child_cpu_ms": (cpu1[1] - cpu0[1]) * 1000 / n,
    }


async def bare_round(n: int, lines: int) -> dict[str, float]:
    """The floor: the same agents as plain asyncio subprocesses in empty directories, lines kept in memory."""
    with tempfile.TemporaryDirectory(prefix="bare-bench-") as tmp:
        firsts: list[float] = []
        counts: list[int] = []

        async def one(i: int) -> None:
            cwd = Path(tmp) / str(i)
            cwd.mkdir()
            begun = time.time()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(DEMO), "--here", f"bench {i} [lines {lines}]", cwd=cwd,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            assert proc.stdout is not None
            got: list[bytes] = []
            async for line in proc.stdout:
                if not got:
                    firsts.append(time.time() - begun)
                got.append(line)
            await proc.wait()
            counts.append(len(got))

        started = time.time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.time() - started
    return {"wall_s": wall, "first_p50": statistics.median(firsts), "lines": sum(counts)}


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rounds = []
    for i in range(args.rounds):
        bare = await bare_round(args.tasks, args.lines)
        ours = await shepherd_round(args.tasks, args.lines)
        rounds.append((ours, bare))
        print(f"round {i + 1}: {json.dumps({k: round(v, 3) for k, v in ours.items()})} "
              f"bare {json.dumps({k: round(v, 3) for k, v in bare.items()})}", file=sys.stderr)

    def med(key: str, which: int = 0) -> float:
        return statistics.median(r[which][key] for r in rounds)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{args.tasks} tasks x {args.lines} lines, median of {args.rounds} rounds, commit {commit}\n")
    print("| measure | Shepherd (serve, SQLite) | bare asyncio | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| wall time, first run to last finished | {med('wall_s'):.2f} s | {med('wall_s', 1):.2f} s | "
          f"{med('wall_s') / med('wall_s', 1):.2f}x |")
    print(f"| run to first output line, p50 | {med('first_p50') * 1000:.0f} ms | "
          f"{med('first_p50', 1) * 1000:.0f} ms | {med('first_p50') / med('first_p50', 1):.2f}x |")
    print(f"| run to first output line, p95 / max | {med('first_p95') * 1000:.0f} / "
          f"{med('first_max') * 1000:.0f} ms | | |")
    print(f"| output lines stored per second | {med('lines_per_s'):,.0f} | | |")
    print(f"| lines stored / expected | {med('stored'):,.0f} / {med('expected'):,.0f} | | |")
    print(f"| server RSS idle / peak | {med('idle_rss'):.0f} / {med('peak_rss'):.0f} MB | | |")
    print(f"| server CPU per task (own / children: agent, git) | {med('server_cpu_ms'):.0f} / "
          f"{med('child_cpu_ms'):.0f} ms | | |")
    print(f"| tasks not succeeded | {max(r[0]['failed'] for r in rounds):.0f} | | |")
    return 1 if any(r[0]["failed"] for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
