"""The Docker runner as the engine sees it: the real aiodocker client against the fake Docker Engine API
(tests/fakes/docker.py). What every runner does is tests/test_runner_contract.py's; here is what is Docker's own:
the containers it asks for (confined, limited, labelled, no network unless a preset needs one), pause as the
engine's, nothing left after stop or discard, the workspace given to the agent's user, a turn that ended while
Shepherd was away, and the settings that build it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pydantic
import pytest

from adapters.runners.docker import DockerRunner
from adapters.runners.docker_spec import DockerConfig, parse_memory
from bot.settings import Settings
from core.runners import ExitReason, RunSpec, Seed
from core.runners.local import RunnerError
from core.runners.presets import PYTHON
from tests.fakes.docker import FakeDocker

LIMIT_S = 30.0
CONFIG = DockerConfig(image="agents:1", images={"claude": "agents-claude:2"}, cpus=1.5, memory_bytes=512 * 1024**2,
                      pids_limit=256, user="1000:1000")


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeDocker]:
    async with FakeDocker(tmp_path / "engine") as engine:
        yield engine


@pytest.fixture
async def runner(fake: FakeDocker) -> AsyncIterator[DockerRunner]:
    made = DockerRunner(aiodocker.Docker(url=fake.url), CONFIG)
    yield made
    await made.close()


async def seeded(runner: DockerRunner, root: Path, files: dict[str, str] | None = None) -> tuple[str, Path]:
    task_id = "t" + uuid.uuid4().hex[:10]
    local = root / task_id
    local.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=local, check=True)
    for name, text in (files or {"README.md": "hello\n"}).items():
        (local / name).write_text(text)
    await runner.seed(Seed(task_id=task_id, org_id="acme", local=local, work_branch="w", base_sha=""))
    return task_id, local


def spec(task_id: str, code: str, *, runtime: str = "demo", env: dict[str, str] | None = None,
         turn: int = 1) -> RunSpec:
    given = env if env is not None else {"PATH": os.environ["PATH"], "SHEPHERD_TASK_ID": task_id,
                                         "PYTHONUNBUFFERED": "1"}
    return RunSpec(argv=[PYTHON, "-c", code], cwd=Path("/workspace"), env=given, idle_timeout=20, hard_timeout=30,
                   task_id=task_id, org_id="acme", turn=turn, runtime=runtime)


async def finished(handle: object) -> tuple[list[str], object]:
    lines = [line async for line in handle.lines()]  # type: ignore[attr-defined]
    return lines, await asyncio.wait_for(handle.wait(), LIMIT_S)  # type: ignore[attr-defined]


def turn_containers(fake: FakeDocker, task_id: str) -> list[str]:
    return [c.name for c in fake.containers.values()
            if c.labels.get("shepherd.dev/task") == task_id and c.labels.get("shepherd.dev/role") == "turn"]


async def test_a_turn_runs_confined_limited_labelled_and_with_exactly_the_environment_given(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, _ = await seeded(runner, tmp_path)
    run = spec(task_id, "print('hi')", runtime="claude", turn=2)
    lines, _ = await finished(await runner.start(run))
    assert lines == ["hi"]
    body = [b for b in fake.created() if b["Labels"]["shepherd.dev/role"] == "turn"][-1]
    host = body["HostConfig"]
    assert body["Image"] == "agents-claude:2"  # the preset's own image
    assert body["Entrypoint"] + body["Cmd"] == list(run.argv)
    assert body["Env"] == [f"{k}={v}" for k, v in run.env.items()]
    assert (body["User"], body["WorkingDir"]) == ("1000:1000", "/workspace")
    assert body["Labels"] == {"app.kubernetes.io/managed-by": "shepherd", "shepherd.dev/org": "acme",
                              "shepherd.dev/task": task_id, "shepherd.dev/turn": "2", "shepherd.dev/role": "turn"}
    assert host["NetworkMode"] == "none"
    assert (host["CapDrop"], host["SecurityOpt"], host["Privileged"]) == (["ALL"], ["no-new-privileges"], False)
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (
        1_500_000_000, 512 * 1024**2, 512 * 1024**2, 256)
    assert host["Mounts"] == [{"Type": "volume", "Source": f"shepherd-ws-{task_id}", "Target": "/workspace"}]


async def test_only_a_preset_named_in_the_network_setting_gets_a_network(tmp_path: Path) -> None:
    async with FakeDocker(tmp_path / "engine", networks=frozenset({"none", "bridge"})) as fake:
        runner = DockerRunner(aiodocker.Docker(url=fake.url),
                              DockerConfig(user="1000:1000", networks={"webby": "bridge"}))
        try:
            task_id, _ = await seeded(runner, tmp_path)
            await finished(await runner.start(spec(task_id, "print('online')", runtime="webby")))
            await finished(await runner.start(spec(task_id, "print('offline')", runtime="demo", turn=2)))
            modes = {b["Labels"]["shepherd.dev/turn"]: b["HostConfig"]["NetworkMode"] for b in fake.created()}
            assert modes == {"0": "none", "1": "bridge", "2": "none"}  # the workspace holder never has one
        finally:
            await runner.close()


async def test_an_engine_refusal_is_a_runner_error_that_says_why(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, _ = await seeded(runner, tmp_path)
    leaked = {"PATH": "/usr/bin", "SLACK_BOT_TOKEN": "xoxb-leak"}
    with pytest.raises(RunnerError, match="secret-looking variable in Env: SLACK_BOT_TOKEN") as refused:
        await runner.start(spec(task_id, "print(1)", env=leaked))
    assert refused.value.code == "RUNNER_ENGINE"
    assert turn_containers(fake, task_id) == []


async def test_pause_freezes_the_container_in_the_engine_and_resume_thaws_it(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, _ = await seeded(runner, tmp_path)
    handle = await runner.start(spec(task_id, "import time\nwhile True:\n    print('.', flush=True)\n"
                                              "    time.sleep(0.05)"))
    lines = handle.lines()
    await asyncio.wait_for(anext(lines), LIMIT_S)
    await handle.pause()
    (container,) = [c for c in fake.running(task_id) if c.name == handle.unit]
    info = await runner.docker.containers.get(handle.unit)
    assert info["State"]["Paused"] and container.paused
    await handle.resume()
    assert not (await runner.docker.containers.get(handle.unit))["State"]["Paused"]
    await asyncio.wait_for(anext(lines), LIMIT_S)
    await asyncio.wait_for(handle.stop(), LIMIT_S)
    assert (await handle.wait()).reason is ExitReason.STOPPED


async def test_stop_removes_the_turn_and_keeps_the_work_and_discard_removes_everything(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, local = await seeded(runner, tmp_path)
    code = ("import pathlib, subprocess, sys, time\npathlib.Path('kept.txt').write_text('work')\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\nprint('ready', flush=True)\n"
            "time.sleep(300)")
    handle = await runner.start(spec(task_id, code))
    await asyncio.wait_for(anext(handle.lines()), LIMIT_S)
    await asyncio.wait_for(handle.stop(), LIMIT_S)
    assert turn_containers(fake, task_id) == []  # the turn's container is gone, its helper with it
    assert await runner.attach(handle.unit, spec(task_id, ""), since_s=0) is None
    await runner.collect(task_id, local)
    assert (local / "kept.txt").read_text() == "work"  # the volume keeps what the turn wrote
    await runner.discard(task_id)
    assert [c for c in fake.containers.values() if c.labels.get("shepherd.dev/task") == task_id] == []
    assert f"shepherd-ws-{task_id}" not in fake.volumes
    assert not (tmp_path / "engine" / "volumes" / f"shepherd-ws-{task_id}").exists()
    await runner.discard(task_id)  # again: nothing to do, no error


async def test_the_workspace_is_seeded_with_git_and_given_to_the_agents_user(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, _ = await seeded(runner, tmp_path, {"a.txt": "A\n"})
    assert fake.archive_owners == {(1000, 1000)}
    lines, _ = await finished(await runner.start(spec(task_id, "import os; print(sorted(os.listdir('.')))")))
    assert lines == ["['.git', 'a.txt']"]
    holder = [b for b in fake.created() if b["Labels"]["shepherd.dev/role"] == "workspace"]
    assert len(holder) == 1 and holder[0]["HostConfig"]["NetworkMode"] == "none" and holder[0]["Env"] == []


async def test_collect_finds_the_work_again_when_the_workspace_container_was_removed_by_hand(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, local = await seeded(runner, tmp_path)
    await finished(await runner.start(spec(task_id, "open('made.txt', 'w').write('yes')")))
    await runner.docker.containers.container(f"shepherd-{task_id}").delete(force=True)
    await runner.collect(task_id, local)
    assert (local / "made.txt").read_text() == "yes"


async def test_a_turn_that_ended_while_shepherd_was_away_reports_its_lines_and_exit_at_once(
    fake: FakeDocker, runner: DockerRunner, tmp_path: Path,
) -> None:
    task_id, _ = await seeded(runner, tmp_path)
    run = spec(task_id, "import sys, time\nprint('one', flush=True)\ntime.sleep(0.3)\nprint('two')\nsys.exit(5)")
    before = time.time()
    handle = await runner.start(run)
    await handle.detach()
    for _ in range(400):  # Shepherd is away while the turn ends
        if not [c for c in fake.running(task_id) if c.name == handle.unit]:
            break
        await asyncio.sleep(0.05)
    restarted = DockerRunner(aiodocker.Docker(url=fake.url), CONFIG)
    try:
        again = await restarted.attach(handle.unit, run, since_s=before - 1)
        assert again is not None
        lines, exit_ = await finished(again)
        assert lines == ["one", "two"]
        assert (exit_.reason, exit_.exit_code) == (ExitReason.EXITED, 5)  # type: ignore[attr-defined]
        assert turn_containers(fake, task_id) == []  # read, then removed
    finally:
        await restarted.close()


async def test_settings_build_the_runner_from_docker_host_and_refuse_root_and_bad_sizes(
    fake: FakeDocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", fake.url)
    monkeypatch.setenv("SHEPHERD_DOCKER_MEMORY", "256m")
    monkeypatch.setenv("SHEPHERD_DOCKER_IMAGES", '{"demo": "demo-agent:3"}')
    runner = await DockerRunner.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        task_id, _ = await seeded(runner, tmp_path)
        assert (await finished(await runner.start(spec(task_id, "print('via settings')"))))[0] == ["via settings"]
        body = fake.created()[-1]
        assert (body["Image"], body["HostConfig"]["Memory"]) == ("demo-agent:3", 256 * 1024**2)
    finally:
        await runner.close()
    for bad in ({"docker_user": "0"}, {"docker_user": "root"}, {"docker_memory": "lots"}):
        with pytest.raises(pydantic.ValidationError):
            Settings(_env_file=None, **bad)  # type: ignore[call-arg]
    assert parse_memory("2GiB") == 2 * 1024**3 and parse_memory("1024") == 1024


async def test_a_demo_task_runs_end_to_end_through_the_supervisor_on_the_docker_runner(
    fake: FakeDocker, runner: DockerRunner, sqlite_url: str, tmp_path: Path,
) -> None:
    from dataclasses import replace as replaced

    from bot.presets import DEMO
    from core.autonomy.actions import ActionsConfig, Executor
    from core.people.access import Role
    from core.runners.presets import AgentCatalog
    from core.shepherd import Shepherd
    from core.store.db import Database
    from core.tasks.supervisor import RunnerConfig, TaskSupervisor
    from tests.conftest import person

    # the demo agent edits only where it is told to: in a container its working directory is the volume
    here = replaced(DEMO, start=(*DEMO.start[:2], "--here", *DEMO.start[2:]),
                    resume=(*DEMO.resume[:2], "--here", *DEMO.resume[2:]))
    workspaces = tmp_path / "data" / "workspaces"
    db = Database(sqlite_url)
    shepherd = Shepherd(db, catalog=AgentCatalog([here]), default_agent="demo", workspace_root=workspaces)
    await shepherd.orgs.ensure("acme")
    config = RunnerConfig(workspace_root=workspaces, poll_s=0.05, flush_s=0.05, idle_timeout_s=20,
                          hard_timeout_s=60, max_tasks=2)
    sup = TaskSupervisor(shepherd, config, runner=runner, executor=Executor(ActionsConfig()))
    await sup.start()
    who = person(Role.ADMIN)
    try:
        task = (await shepherd.tasks.create(who, prompt="write a haiku", runtime="demo")).task
        deadline = time.monotonic() + LIMIT_S
        while (row := await shepherd.tasks.get(who, task.id)).outcome is None:
            assert time.monotonic() < deadline, f"the task never ended: {row.status} {row.state_message}"
            await asyncio.sleep(0.1)
        assert row.outcome == "succeeded", row.state_message
        _, logs = await shepherd.tasks.logs(who, task.id, limit=1000)
        assert any(r.type == "output" for r in logs)
        turns = [b for b in fake.created() if b["Labels"]["shepherd.dev/role"] == "turn"]
        assert turns and turns[0]["Labels"]["shepherd.dev/task"] == task.id and turns[0]["WorkingDir"] == "/workspace"
        assert not any(e.startswith(("SLACK_", "SHEPHERD_DATABASE")) for e in turns[0]["Env"])
        assert turn_containers(fake, task.id) == []  # the turn's container was removed once read
        changed = [p for p in (workspaces / task.id).rglob("*") if ".git" not in p.parts and p.is_file()]
        assert changed, "the agent's work did not come back into Shepherd's copy"
    finally:
        await sup.stop()
        await db.dispose()
