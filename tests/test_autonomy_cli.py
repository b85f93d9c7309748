"""Autonomy as a new user meets it in the console: a level-1 task's pull request waits for `approve`, then
lands on the (fake) GitHub; an agent's `shepherd ask` blocks until the console approves."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fakes.github_api import FakeGitHub
from tests.gitrepos import github_host
from tests.procs import SHEPHERD

pytestmark = pytest.mark.slow
TOKEN = "ghs_console_test_token"


class ConsoleProc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self.mark = 0  # lines printed since the last command; what they say may come in any order

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.mark = len(self.seen)
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()

    async def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        assert self.proc.stdout is not None
        regex = re.compile(pattern)
        for line in self.seen[self.mark:]:
            if match := regex.search(line):
                return match
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"never printed {pattern!r}; got:\n" + "\n".join(self.seen))
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout=left)
            except TimeoutError:
                continue
            if not raw:
                raise AssertionError(f"console ended before {pattern!r}; got:\n" + "\n".join(self.seen))
            line = raw.decode().rstrip("\n")
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return match


async def test_console_approves_a_pull_request_and_an_agents_question(tmp_path: Path) -> None:
    hosts = github_host(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    async with FakeGitHub(TOKEN, git_root=hosts) as github:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_")}
        env.update(SHEPHERD_ORG="acme", SHEPHERD_DEFAULT_AGENT="demo", SHEPHERD_GIT_BASE_URL=str(hosts),
                   SHEPHERD_GITHUB_TOKEN=TOKEN, SHEPHERD_GITHUB_API_URL=github.base_url, SHEPHERD_LOG_LEVEL="WARNING")
        proc = await asyncio.create_subprocess_exec(
            SHEPHERD, "console", cwd=home, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        console = ConsoleProc(proc)
        try:
            await console.send('run "add a greeting to the README" --agent demo --repo acme/api --level 1')
            name = (await console.expect(r"started task (\S+)")).group(1)
            code = (await console.expect(r"^\? approval (\w{4}) \(medium\): open a pull request on acme/api: "
                                         rf"shepherd/{name} -> main")).group(1)
            await console.expect(rf"`approve {code} \[comment\]` or `reject {code} \[reason\]`")
            assert [r for r in github.requests if r.method == "POST"] == []
            await console.send(f"approve {code} looks right")
            await console.expect(rf"{code} approved by \S+ from console")
            await console.expect(rf"\[{name}\] succeeded .*pull request #1 opened: https://github.com/acme/api/pull/1")
            [pr] = [r.body for r in github.requests if r.method == "POST"]
            assert (pr["head"], pr["base"]) == (f"shepherd/{name}", "main")
            pushed = subprocess.run(["git", "rev-parse", f"refs/heads/shepherd/{name}"], cwd=hosts / "acme" / "api.git",
                                    capture_output=True, text=True)
            assert pushed.returncode == 0 and pushed.stdout.strip() == github.pulls[("acme/api", 1)]["head"]["sha"]

            await console.send('run "ship it [confirm deploy.staging] [noedit]" --agent demo --level 1')
            asker = (await console.expect(r"started task (\S+)")).group(1)
            await console.expect(rf"\[{asker}\] \| asking people before deploy.staging")
            ask = (await console.expect(r"^\? approval (\w{4}) \(high\): the demo agent wants to deploy.staging"))
            await console.send("pending")
            await console.expect(rf"{ask.group(1)}\s+high\s+deploy.staging")
            await console.send(f"approve {ask.group(1)}")
            await console.expect(rf"\[{asker}\] \| ask deploy.staging: approved")
            await console.expect(rf"\[{asker}\] succeeded")
            await console.send("pending")
            await console.expect("nothing waits for a decision")
        finally:
            if proc.returncode is None:
                assert proc.stdin is not None
                proc.stdin.close()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
