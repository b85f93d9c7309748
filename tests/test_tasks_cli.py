"""Tasks as a new user meets them: the console demo, and a server killed in the middle of a run."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.presets import agent_catalog
from core.people.access import Role
from core.runners.local import group_members
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Task
from tests.conftest import person
from tests.gitrepos import seed_repo
from tests.procs import Home, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    yield Home(tmp_path, SHEPHERD_DEFAULT_AGENT="demo", SHEPHERD_ORG="acme")


def test_console_run_streams_the_agent_and_ends_with_its_evidence(home: Home) -> None:
    repo = seed_repo(home.root / "app")
    out = home.run("console", "-c", f'run "add a greeting" --agent demo --repo {repo}')
    lines = out.stdout.splitlines()
    assert lines[0].startswith("started task add-a-greeting-")
    name = lines[0].split()[2]
    assert f"[{name}] > add a greeting" in lines and f"[{name}] | edited README.md" in lines
    assert lines[-1].startswith(f"[{name}] succeeded in") and "2 files changed, +" in lines[-1]
    failed = home.run("console", "-c", 'run "break it [fail]" --agent demo', check=False)
    assert failed.returncode == 1 and "failed" in failed.stdout.splitlines()[-1]
    listing = home.run("console", "-c", "tasks").stdout
    assert name in listing and "succeeded" in listing and "failed" in listing


def test_killing_the_server_mid_run_marks_the_task_interrupted_on_restart(home: Home) -> None:
    url = f"sqlite:///{home.root / '.shepherd' / 'shepherd.db'}"
    server = home.start()
    try:
        task_id = asyncio.run(_create(url, "work for a long time [long 120]"))
        running = _wait(url, task_id, lambda t: t.status == "running" and t.log_count > 2)
        assert running.pid is not None and group_members(running.pid)
    finally:
        stop(server, signal.SIGKILL)
    server = home.start()
    try:
        done = _wait(url, task_id, lambda t: t.outcome is not None)
        assert (done.status, done.outcome) == ("failed", "interrupted")
        assert "crash or restart" in done.evidence["reason"]
        deadline = time.monotonic() + 5
        while group_members(running.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_members(running.pid) == [], "the dead server's agent does not go on editing the workspace"
    finally:
        out = stop(server)
    assert server.returncode == 0, out


async def _create(url: str, prompt: str) -> str:
    db = Database(url)
    try:
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo")
        await shepherd.orgs.ensure("acme")
        return (await shepherd.tasks.create(person(Role.OPERATOR), prompt=prompt)).task.id
    finally:
        await db.dispose()


def _wait(url: str, task_id: str, test: object, timeout: float = 30) -> Task:
    async def poll() -> Task:
        db = Database(url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                async with db.read() as session:
                    task = await session.get(Task, task_id)
                assert task is not None
                if test(task):  # type: ignore[operator]
                    return task
                if time.monotonic() > deadline:
                    raise AssertionError(f"task stayed {task.status}/{task.outcome}: {task.state_message}")
                await asyncio.sleep(0.1)
        finally:
            await db.dispose()

    return asyncio.run(poll())
