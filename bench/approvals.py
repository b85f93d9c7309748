"""How long an approval takes to become an action, and how many decisions the store takes per second.

    .venv/bin/python bench/approvals.py [--tasks 20] [--decisions 200] [--voters 8]

1. approve → pull request: N demo-agent tasks at level 1 wait with a pull request to approve; each is
   approved and timed until the task has pushed its branch to a local bare repository and opened the pull
   request on the loopback fake GitHub (tests/fakes/github_api.py) — the supervisor's executor pass, the
   workspace re-check, `git push`, two GitHub calls and the task's final transaction. In the same run, the
   bare floor: the same `git push` and the same two GitHub calls, made directly, N times.
2. decisions/s: D pending confirmations decided by V concurrent approvers through core (the row lock,
   the vote, the task counters, the event and the outbox row in one transaction), on SQLite.

Everything runs in this process on 127.0.0.1 with the real SQLite store, real git and the real gidgethub
client; results print as a table (medians; the ratio is Shepherd over the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.github.auth import GitHubAuth  # noqa: E402
from adapters.github.forge import GitHubForge  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.presets import agent_catalog  # noqa: E402
from core.autonomy.actions import ActionsConfig, Executor  # noqa: E402
from core.autonomy.plans import (  # noqa: E402
    Origin,
    Plan,
    Target,  # noqa: E402
)
from core.autonomy.policy import PolicyStore  # noqa: E402
from core.people.access import Principal, Role  # noqa: E402
from core.runners.local import LocalRunner  # noqa: E402
from core.runners.workspace import push  # noqa: E402
from core.shepherd import Shepherd  # noqa: E402
from core.store.db import Database  # noqa: E402
from core.store.models import Task  # noqa: E402
from core.tasks.supervisor import RunnerConfig, TaskSupervisor  # noqa: E402
from tests.fakes.github_api import FakeGitHub  # noqa: E402
from tests.gitrepos import git, github_host, seed_repo  # noqa: E402

TOKEN = "ghs_bench"
ALICE = Principal.for_role("acme", "alice", Role.ADMIN, "console", user_id="user-alice")
BOB = Principal.for_role("acme", "bob", Role.APPROVER, "console", user_id="user-bob")


async def until(check: object, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.01)


async def approve_to_pr(root: Path, n: int) -> tuple[list[float], list[float]]:
    hosts = github_host(root)
    url = f"sqlite:///{root / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=root / "ws",
                        policies=PolicyStore(root / "policies"))
    await shepherd.orgs.ensure("acme")
    async with FakeGitHub(TOKEN, git_root=hosts) as github, aiohttp.ClientSession() as http:
        forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
        config = replace(RunnerConfig(workspace_root=root / "ws"), max_tasks=8, git_base_url=str(hosts))
        sup = TaskSupervisor(shepherd, config, runner=LocalRunner(),
                             executor=Executor(ActionsConfig(git_base_url=str(hosts)), forge))
        await sup.start()
        try:
            tasks = [(await shepherd.tasks.create(ALICE, prompt=f"change {i}", repo="acme/api", level=1)).task
                     for i in range(n)]

            async def all_waiting() -> bool:
                return len(await shepherd.confirmations.pending(ALICE)) == n

            await until(all_waiting, limit_s=120)
            shepherd_s = []
            for task in tasks:
                [conf] = await shepherd.confirmations.pending(ALICE, task_id=task.id)
                started = time.perf_counter()
                await shepherd.confirmations.vote(BOB, conf.code, approve=True)

                async def done(task_id: str = task.id) -> bool:
                    return (await shepherd.tasks.get(ALICE, task_id)).outcome is not None

                await until(done)
                shepherd_s.append(time.perf_counter() - started)
                assert (await shepherd.tasks.get(ALICE, task.id)).outcome == "succeeded"

            floor_s = []
            for i in range(n):
                work = seed_repo(root / f"floor-{i}")
                git("fetch", "-q", str(hosts / "acme" / "api.git"), "main", cwd=work)
                git("checkout", "-q", "-b", f"floor/{i}", "FETCH_HEAD", cwd=work)
                (work / "CHANGE.md").write_text(f"{i}\n")
                git("add", "-A", cwd=work)
                git("commit", "-qm", "floor", cwd=work)
                started = time.perf_counter()
                await push(work, str(hosts / "acme" / "api.git"), f"floor/{i}", "HEAD")
                await forge.open_pull_request("acme/api", head=f"floor/{i}", base="main", title="t", body="")
                floor_s.append(time.perf_counter() - started)
        finally:
            await sup.stop()
            await db.dispose()
    return shepherd_s, floor_s


async def decisions(root: Path, count: int, voters: int) -> float:
    url = f"sqlite:///{root / 'decisions.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    shepherd = Shepherd(db, catalog=agent_catalog())
    await shepherd.orgs.ensure("acme")
    try:
        task = (await shepherd.tasks.create(ALICE, prompt="bench", runtime="demo")).task
        codes = []
        async with db.write() as session:
            row = await session.get(Task, task.id)
            assert row is not None
            for i in range(count):
                gate = await shepherd.confirmations.gate(
                    session, org_id="acme", plan=Plan("pr.merge", f"merge {i}", Target(number=i)), origin=Origin.PERSON,
                    level=1, requester_id="user-alice", requester_name="alice", task=row, agent_id=None,
                    project_id=None)
                codes.append(gate.confirmation.code)
        queue = list(codes)

        async def voter(k: int) -> None:
            who = Principal.for_role("acme", f"v{k}", Role.APPROVER, "console", user_id=f"user-v{k}")
            while queue:
                await shepherd.confirmations.vote(who, queue.pop(), approve=True)

        started = time.perf_counter()
        await asyncio.gather(*(voter(k) for k in range(voters)))
        elapsed = time.perf_counter() - started
        assert len(await shepherd.confirmations.pending(ALICE, limit=500)) == 0
        return count / elapsed
    finally:
        await db.dispose()


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--decisions", type=int, default=200)
    p.add_argument("--voters", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="shepherd-approvals-") as tmp:
        shepherd_s, floor_s = await approve_to_pr(Path(tmp), args.tasks)
        rate = await decisions(Path(tmp), args.decisions, args.voters)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    med_s, med_f = statistics.median(shepherd_s), statistics.median(floor_s)
    p95 = sorted(shepherd_s)[max(0, int(len(shepherd_s) * 0.95) - 1)]
    print(f"\napprovals, commit {commit}, SQLite, {args.tasks} tasks, {args.decisions} decisions by "
          f"{args.voters} approvers\n")
    print("| measure | Shepherd | bare floor | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| approve → branch pushed and pull request open, p50 | {med_s * 1000:.0f} ms | {med_f * 1000:.0f} ms "
          f"| {med_s / med_f:.1f}x |")
    print(f"| approve → pull request, p95 / max | {p95 * 1000:.0f} / {max(shepherd_s) * 1000:.0f} ms | | |")
    print(f"| decisions per second ({args.voters} concurrent approvers) | {rate:.0f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
