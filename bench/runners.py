"""Shepherd's own overhead per run on a container engine, beside the local runner, in the same run: N concurrent
demo-agent tasks through the Runner port, once with LocalRunner and once with DockerRunner against the fake
Docker Engine (tests/fakes/docker.py, in its own process: its containers are host process groups, so the agents
cost the same on both sides and the difference is Shepherd's).

    .venv/bin/python bench/runners.py [--tasks 100] [--lines 200] [--rounds 2]

One task is what a runner does for it: seed its workspace, start a turn (the demo agent, `[lines N]`), read every
line, wait for the exit, collect the work tree back, discard. Local, seed/collect/discard are nothing (the agent
works in Shepherd's copy); Docker, they are the engine's volume and archive API. Measured per round, the two
runners in turns: this process's CPU per task (Shepherd's side only: the fake and the agents are other
processes), requests to the engine per task (counted on aiodocker's own HTTP session), time from the task's
first runner call to its first output line (p50, p95), and wall time for all N. Prints a Markdown table;
bench/README.md keeps the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.runners.docker import DockerRunner  # noqa: E402
from adapters.runners.docker_spec import DockerConfig  # noqa: E402
from bot.presets import DEMO_AGENT  # noqa: E402
from core.runners import ExitReason, Runner, RunSpec, Seed  # noqa: E402
from core.runners.local import LocalRunner  # noqa: E402
from core.runners.presets import PYTHON  # noqa: E402


def prepare(root: Path, count: int) -> list[tuple[str, Path]]:
    """Shepherd's copies of N workspaces (core prepares them the same way for every runner: not timed)."""
    made = []
    for _ in range(count):
        task_id = "b" + uuid.uuid4().hex[:10]
        local = root / task_id
        local.mkdir(parents=True)
        subprocess.run(["git", "init", "-q"], cwd=local, check=True)
        (local / "README.md").write_text("bench\n")
        made.append((task_id, local))
    return made


async def one_task(runner: Runner, task_id: str, local: Path, lines: int) -> tuple[float, int]:
    """Time to the first line, and the lines read."""
    began = time.monotonic()
    await runner.seed(Seed(task_id=task_id, org_id="bench", local=local, work_branch="w", base_sha=""))
    cwd = runner.workspace_path(local)
    env = {"PATH": os.environ["PATH"], "SHEPHERD_TASK_ID": task_id, "SHEPHERD_WORKSPACE": str(cwd),
           "PYTHONUNBUFFERED": "1"}
    argv = [PYTHON, str(DEMO_AGENT), "--here", "--session-id", str(uuid.uuid4()), f"bench [lines {lines}]"]
    handle = await runner.start(RunSpec(argv=argv, cwd=cwd, env=env, idle_timeout=120, hard_timeout=600,
                                        task_id=task_id, org_id="bench", turn=1, runtime="demo"))
    first = 0.0
    read = 0
    async for _ in handle.lines():
        if not read:
            first = time.monotonic() - began
        read += 1
    outcome = await handle.wait()
    if (outcome.reason, outcome.exit_code) != (ExitReason.EXITED, 0):
        raise RuntimeError(f"task {task_id} ended {outcome}")
    await runner.collect(task_id, local)
    await runner.discard(task_id)
    return first, read


async def round_of(name: str, runner: Runner, root: Path, tasks: int, lines: int,
                   requests: Callable[[], int]) -> dict[str, Any]:
    work = prepare(root / f"{name}-{uuid.uuid4().hex[:6]}", tasks)
    sent, cpu, began = requests(), time.process_time(), time.monotonic()
    results = await asyncio.gather(*(one_task(runner, t, local, lines) for t, local in work))
    wall, cpu, sent = time.monotonic() - began, time.process_time() - cpu, requests() - sent
    firsts = sorted(first for first, _ in results)
    return {"wall": wall, "cpu_ms": cpu * 1000 / tasks, "requests": sent / tasks,
            "first_p50": statistics.median(firsts) * 1000, "first_p95": firsts[int(len(firsts) * 0.95) - 1] * 1000,
            "lines": sum(read for _, read in results)}


async def start_fake(root: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.fakes.docker", str(root), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not url.startswith("unix://"):
        raise RuntimeError(f"the fake engine did not start: {url!r}")
    return proc, url


def counted_docker(url: str) -> tuple[aiodocker.Docker, aiohttp.ClientSession, Callable[[], int]]:
    """aiodocker on a session that counts every request it sends."""
    count = [0]

    async def on_start(*_: object) -> None:
        count[0] += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(url.removeprefix("unix://"), limit=0),
                                    trace_configs=[trace])
    return aiodocker.Docker(url=url, session=session), session, lambda: count[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runners-") as tmp:
        root = Path(tmp)
        fake, url = await start_fake(root / "engine")
        docker, session, sent = counted_docker(url)
        sides: dict[str, tuple[Runner, Callable[[], int]]] = {
            "local": (LocalRunner(), lambda: 0),
            "docker": (DockerRunner(docker, DockerConfig()), sent),
        }
        measured: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        try:
            for _ in range(args.rounds):
                for name, (runner, requests) in sides.items():  # in turns: both see the same machine
                    measured[name].append(await round_of(name, runner, root, args.tasks, args.lines, requests))
        finally:
            await docker.close()
            await session.close()
            fake.terminate()
            await fake.wait()
    table(measured, args)


def table(measured: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in measured[name])

    print(f"\n{args.tasks} concurrent demo tasks, [lines {args.lines}], median of {args.rounds} rounds each\n")
    print("| per task | local | docker (fake engine) | docker / local |")
    print("| --- | ---: | ---: | ---: |")
    rows: list[tuple[str, str, str, Callable[[float], str]]] = [
        ("Shepherd's CPU", "cpu_ms", " ms", lambda v: f"{v:.1f}"),
        ("requests to the engine", "requests", "", lambda v: f"{v:.1f}"),
        ("first line p50", "first_p50", " ms", lambda v: f"{v:,.0f}"),
        ("first line p95", "first_p95", " ms", lambda v: f"{v:,.0f}"),
        ("wall, all tasks", "wall", " s", lambda v: f"{v:.2f}"),
    ]
    for label, key, unit, fmt in rows:
        local, docker = med("local", key), med("docker", key)
        ratio = f"{docker / local:.2f}x" if local else "-"
        print(f"| {label} | {fmt(local)}{unit} | {fmt(docker)}{unit} | {ratio} |")
    for name in measured:
        expected = args.tasks * args.rounds
        got = sum(r["lines"] for r in measured[name])
        print(f"\n{name}: {got} lines read over {expected} tasks")


def run(entry: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(entry())


if __name__ == "__main__":
    run(main)
