"""The runner contract: what every runner (local, Kubernetes, Docker) does for core, the same tests against each
(tests/runner_rigs.py). A user sees these as: output arriving line by line, exit codes that mean what the agent
said, stop and timeouts that leave nothing running, pause that freezes (or a clear refusal where the engine has no
pause), a run that outlives Shepherd's restart and is found again, the agent's work back in Shepherd's copy of the
workspace, and none of Shepherd's secrets in the agent's environment."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.runners import ExitReason, RunHandle, RunSpec, Seed
from core.runners.local import RunnerError
from core.runners.presets import PYTHON
from tests.runner_rigs import RIGS, Rig

SECRET = "xoxb-contract-secret-value"
LIMIT_S = 30.0


@pytest.fixture(params=sorted(RIGS))
async def rig(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    # Shepherd's own secrets are in its environment, as in production: none may reach a unit
    monkeypatch.setenv("SHEPHERD_SLACK_BOT_TOKEN", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    made = await RIGS[request.param](tmp_path / "workspaces")
    made.workspace_root.mkdir(parents=True, exist_ok=True)
    try:
        yield made
    finally:
        await made.close()


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


async def seeded(rig: Rig, files: dict[str, str] | None = None) -> tuple[str, Path, str]:
    """A task id, Shepherd's copy of its workspace (a git repository with `files` committed), and its base commit,
    seeded into the engine."""
    task_id = "t" + uuid.uuid4().hex[:12]
    local = rig.workspace_root / task_id
    local.mkdir(parents=True)
    _git(local, "init", "-q", "-b", "shepherd/work")
    for name, text in (files or {"README.md": "hello\n"}).items():
        (local / name).write_text(text)
    _git(local, "add", "-A")
    _git(local, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    base = _git(local, "rev-parse", "HEAD")
    await rig.runner.seed(Seed(task_id=task_id, org_id="org1", local=local, work_branch="shepherd/work",
                               base_sha=base))
    return task_id, local, base


def spec(rig: Rig, task_id: str, local: Path, code: str, *, idle: float = 20.0, hard: float = 30.0,
         turn: int = 1) -> RunSpec:
    cwd = rig.runner.workspace_path(local)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "SHEPHERD_TASK_ID": task_id,
           "SHEPHERD_WORKSPACE": str(cwd), "PYTHONUNBUFFERED": "1"}
    python = getattr(rig, "python", PYTHON)  # the unit's own interpreter: an engine's image has its own
    return RunSpec(argv=[python, "-c", code], cwd=cwd, env=env, idle_timeout=idle, hard_timeout=hard,
                   task_id=task_id, org_id="org1", turn=turn, runtime="custom")


async def read_all(handle: RunHandle) -> list[str]:
    return [line async for line in handle.lines()]


async def within(aw, limit: float = LIMIT_S):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(aw, timeout=limit)


async def nothing_left(rig: Rig, task_id: str) -> list[str]:
    """What still runs for the task, after giving the engine a moment to reap."""
    for _ in range(50):
        left = await rig.leftovers(task_id)
        if not left:
            return []
        await asyncio.sleep(0.1)
    return left


async def test_lines_arrive_in_order_and_exit_zero_is_exited(rig: Rig) -> None:
    assert await rig.runner.ready() is None
    task_id, local, _ = await seeded(rig)
    handle = await rig.runner.start(spec(rig, task_id, local, "for i in range(40): print(f'line {i}')"))
    lines = await within(read_all(handle))
    exit_ = await within(handle.wait())
    assert lines == [f"line {i}" for i in range(40)]
    assert (exit_.reason, exit_.exit_code) == (ExitReason.EXITED, 0)


async def test_an_exit_code_is_reported_as_the_agent_gave_it(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    handle = await rig.runner.start(spec(rig, task_id, local, "import sys; print('failing'); sys.exit(3)"))
    assert await within(read_all(handle)) == ["failing"]
    exit_ = await within(handle.wait())
    assert (exit_.reason, exit_.exit_code) == (ExitReason.EXITED, 3)


CHILD = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])
print('ready', flush=True)
time.sleep(300)
"""


async def test_stop_ends_the_unit_and_everything_it_started(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    handle = await rig.runner.start(spec(rig, task_id, local, CHILD))
    lines = handle.lines()
    assert await within(anext(lines)) == "ready"
    await within(handle.stop())
    exit_ = await within(handle.wait())
    assert exit_.reason is ExitReason.STOPPED
    assert await nothing_left(rig, task_id) == []


async def test_silence_past_the_idle_timeout_ends_the_turn(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    handle = await rig.runner.start(spec(rig, task_id, local, CHILD, idle=1.0))
    await within(read_all(handle))
    exit_ = await within(handle.wait())
    assert exit_.reason is ExitReason.IDLE_TIMEOUT
    assert await nothing_left(rig, task_id) == []


async def test_running_past_the_hard_timeout_ends_the_turn(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    ticking = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)"
    handle = await rig.runner.start(spec(rig, task_id, local, ticking, idle=10.0, hard=2.0))
    lines = await within(read_all(handle))
    exit_ = await within(handle.wait())
    assert exit_.reason is ExitReason.HARD_TIMEOUT
    assert lines and set(lines) == {"tick"}
    assert await nothing_left(rig, task_id) == []


COUNTING = "import time\nfor i in range(10000):\n    print(i, flush=True)\n    time.sleep(0.05)"


async def test_pause_freezes_the_turn_and_resume_continues_it_or_is_refused_with_why(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    handle = await rig.runner.start(spec(rig, task_id, local, COUNTING, idle=20.0))
    seen: list[str] = []

    async def follow() -> None:
        async for line in handle.lines():
            seen.append(line)

    reader = asyncio.get_running_loop().create_task(follow())
    try:
        for _ in range(200):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.05)
        if not rig.runner.capabilities.pause:
            with pytest.raises(RunnerError) as refused:
                await handle.pause()
            assert refused.value.code == "PAUSE_UNSUPPORTED" and refused.value.status == 409
            assert rig.runner.capabilities.why_no_pause
            return
        await within(handle.pause())
        await asyncio.sleep(0.5)  # what was already in flight arrives
        frozen = len(seen)
        await asyncio.sleep(1.0)
        assert len(seen) == frozen, "a paused turn went on printing"
        await within(handle.resume())
        for _ in range(100):
            if len(seen) > frozen + 3:
                break
            await asyncio.sleep(0.05)
        assert len(seen) > frozen + 3, "a resumed turn printed nothing more"
    finally:
        await within(handle.stop())
        reader.cancel()
    assert await nothing_left(rig, task_id) == []


SLOW = "import sys, time\nfor i in range(30):\n    print(f'step {i}', flush=True)\n    time.sleep(0.1)\nsys.exit(7)"


async def test_a_run_outlives_a_restart_and_is_found_again_with_its_real_outcome(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    run = spec(rig, task_id, local, SLOW)
    handle = await rig.runner.start(run)
    lines = handle.lines()
    assert await within(anext(lines)) == "step 0"
    unit = handle.unit
    if not rig.runner.capabilities.reconnect:
        # a local turn's output goes to the process that started it: the restarted runner cannot follow it, and
        # core reaps what is left (tests/test_tasks.py covers that)
        assert await (await rig.new_runner()).attach(unit, run, since_s=time.time()) is None
        await within(handle.stop())
        return
    await within(handle.detach())
    await within(read_all(handle), 5.0)  # the detached handle's lines end (core's turn then returns)
    await asyncio.sleep(0.3)
    assert await rig.leftovers(task_id), "detaching ended the remote unit"
    again = await within((await rig.new_runner()).attach(unit, run, since_s=time.time() - 0.5))
    assert again is not None
    later = await within(read_all(again))
    exit_ = await within(again.wait())
    assert later and later[-1] == "step 29"
    assert (exit_.reason, exit_.exit_code) == (ExitReason.EXITED, 7)
    assert await (await rig.new_runner()).attach("no-such-unit", run, since_s=time.time()) is None


EDIT = """
import os, pathlib
pathlib.Path('README.md').write_text('changed by the agent\\n')
os.remove('old.txt')
pathlib.Path('sub').mkdir()
pathlib.Path('sub/new.txt').write_text('new\\n')
print('edited')
"""


async def test_the_agents_work_comes_back_into_shepherds_copy_and_its_git_stays_shepherds(rig: Rig) -> None:
    task_id, local, base = await seeded(rig, {"README.md": "hello\n", "old.txt": "old\n"})
    handle = await rig.runner.start(spec(rig, task_id, local, EDIT))
    assert await within(read_all(handle)) == ["edited"]
    assert (await within(handle.wait())).exit_code == 0
    await within(rig.runner.collect(task_id, local))
    assert (local / "README.md").read_text() == "changed by the agent\n"
    assert not (local / "old.txt").exists()
    assert (local / "sub" / "new.txt").read_text() == "new\n"
    assert _git(local, "rev-parse", "HEAD") == base
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=local, check=True, capture_output=True, text=True)
    assert set(changed.stdout.splitlines()) == {" M README.md", " D old.txt", "?? sub/"}
    # a second turn sees the first one's work (the workspace is the task's, shared by its turns)
    second = await rig.runner.start(spec(rig, task_id, local, "print(open('sub/new.txt').read().strip())", turn=2))
    assert await within(read_all(second)) == ["new"]
    await within(second.wait())
    await rig.runner.discard(task_id)


async def test_none_of_shepherds_secrets_reach_the_unit(rig: Rig) -> None:
    task_id, local, _ = await seeded(rig)
    handle = await rig.runner.start(spec(rig, task_id, local, "import json, os; print(json.dumps(dict(os.environ)))"))
    printed = json.loads("".join(await within(read_all(handle))))
    await within(handle.wait())
    assert printed["SHEPHERD_TASK_ID"] == task_id
    assert SECRET not in json.dumps(printed)
    assert "SHEPHERD_SLACK_BOT_TOKEN" not in printed and "SLACK_BOT_TOKEN" not in printed
    given = await rig.unit_env(task_id)
    if given is not None:
        assert given["SHEPHERD_TASK_ID"] == task_id and SECRET not in json.dumps(given)
