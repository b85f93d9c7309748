"""The real engine CI sets up (.ci/engine: Podman's Docker-compatible API) runs containers the way the Docker
runner makes them: a turn as a non-root container with no network and no capability, limited, on a named
volume whose files come back through the archive API; pause freezes it and kill ends it. Spoken to in Docker's
own HTTP API, so what passes here holds for any Docker-compatible engine, and a machine where it does not gets
no exports from .ci/engine (these tests then skip) instead of a runner suite that fails for the engine's sake."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import struct
import tarfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.engines import HOST_VAR, IMAGE_VAR, REQUIRED_VAR, Engine, require_engine

API = "v1.41"  # the version Podman 4 serves and the Docker runner's client speaks
LABELS = {"app.kubernetes.io/managed-by": "shepherd", "shepherd.dev/task": "engine-test"}
TURN = """
import os, sys
print(open("/workspace/seed.txt").read().strip(), flush=True)
for n in range(1, 4):
    print("line", n, flush=True)
print("uid", os.getuid(), "env", os.environ.get("GREETING"), flush=True)
ifaces = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])
print("interfaces", ",".join(ifaces), flush=True)
with open("/workspace/out.txt", "w") as f:
    f.write("written by the agent\\n")
sys.exit(3)
"""
TICKING = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"


class DockerAPI:
    def __init__(self, engine: Engine) -> None:
        url = urlsplit(engine.docker_host)
        if url.scheme == "unix":
            self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=url.path))
            self.base = f"http://localhost/{API}"
        else:
            self.session = aiohttp.ClientSession()
            self.base = f"http://{url.hostname}:{url.port or 2375}/{API}"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    async def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kw: Any) -> bytes:
        async with self.session.request(method, f"{self.base}{path}", **kw) as response:
            body = await response.read()
            assert response.status in ok, f"{method} {path}: {response.status} {body[:300]!r}"
            return body

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        return json.loads(await self.call(method, path, **kw))

    async def volume(self) -> str:
        name = f"shepherd-test-{secrets.token_hex(4)}"
        await self.call("POST", "/volumes/create", json={"Name": name, "Labels": LABELS})
        self.volumes.append(name)
        return name

    async def container(self, image: str, cmd: list[str], *, volume: str, env: list[str] | None = None) -> str:
        config = {
            "Image": image, "Cmd": cmd, "User": "1000:1000", "WorkingDir": "/workspace", "Env": env or [],
            "Labels": LABELS,
            "HostConfig": {
                "Binds": [f"{volume}:/workspace"], "NetworkMode": "none", "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"], "Memory": 256 * 1024 * 1024, "PidsLimit": 64,
                "NanoCpus": 1_000_000_000,
            },
        }
        created = await self.json("POST", f"/containers/create?name=shepherd-test-{secrets.token_hex(4)}", json=config)
        self.containers.append(created["Id"])
        return str(created["Id"])

    async def logs(self, container: str) -> list[str]:
        raw = await self.call("GET", f"/containers/{container}/logs?stdout=1&stderr=1")
        return _demultiplex(raw).decode().splitlines()

    async def close(self) -> None:
        for container in self.containers:
            await self.call("DELETE", f"/containers/{container}?force=1", ok=(200, 204, 404))
        for volume in self.volumes:
            await self.call("DELETE", f"/volumes/{volume}", ok=(204, 404))
        await self.session.close()


def _demultiplex(raw: bytes) -> bytes:
    """A non-TTY container's log: frames of an 8-byte header (stream, 3 zero bytes, big-endian length)."""
    out, at = bytearray(), 0
    while at + 8 <= len(raw):
        (length,) = struct.unpack(">I", raw[at + 4:at + 8])
        out += raw[at + 8:at + 8 + length]
        at += 8 + length
    return bytes(out)


@pytest.fixture
async def docker(real_engine: Engine) -> AsyncIterator[DockerAPI]:
    api = DockerAPI(real_engine)
    try:
        yield api
    finally:
        await api.close()


def _seed_archive() -> bytes:
    data = b"seeded by Shepherd\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("seed.txt")
        info.size, info.uid, info.gid, info.mode = len(data), 1000, 1000, 0o644
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_a_turn_runs_confined_and_its_work_comes_back_through_the_archive(
    docker: DockerAPI, real_engine: Engine
) -> None:
    # as the Docker runner does it: an idle container holds the task's volume for copying in and out, and each
    # turn is a container of its own on that volume
    volume = await docker.volume()
    holder = await docker.container(real_engine.image, ["sleep", "infinity"], volume=volume)
    await docker.call("POST", f"/containers/{holder}/start")
    await docker.call("PUT", f"/containers/{holder}/archive?path=/workspace", data=_seed_archive(),
                      headers={"Content-Type": "application/x-tar"})
    turn = await docker.container(real_engine.image, ["python3", "-c", TURN], volume=volume, env=["GREETING=hello"])
    await docker.call("POST", f"/containers/{turn}/start")
    exited = await docker.json("POST", f"/containers/{turn}/wait")
    assert exited["StatusCode"] == 3

    lines = await docker.logs(turn)
    assert lines == [
        "seeded by Shepherd", "line 1", "line 2", "line 3", "uid 1000 env hello", "interfaces lo",
    ]
    tar = await docker.call("GET", f"/containers/{holder}/archive?path=/workspace")
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        names = set(archive.getnames())
        assert {"workspace/out.txt", "workspace/seed.txt"} <= names, names
        member = archive.extractfile("workspace/out.txt")
        assert member is not None and member.read() == b"written by the agent\n"
    inspected = await docker.json("GET", f"/containers/{turn}/json")
    assert inspected["Config"]["Labels"]["app.kubernetes.io/managed-by"] == "shepherd"


async def test_pause_freezes_a_container_and_kill_ends_it(docker: DockerAPI, real_engine: Engine) -> None:
    container = await docker.container(real_engine.image, ["python3", "-c", TICKING], volume=await docker.volume())
    await docker.call("POST", f"/containers/{container}/start")
    # running for real before the pause (on a busy machine the interpreter had not printed a line yet: CI saw it)
    for _ in range(600):
        if "tick" in await docker.logs(container):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the container printed nothing within 60 s")
    await docker.call("POST", f"/containers/{container}/pause")
    state = (await docker.json("GET", f"/containers/{container}/json"))["State"]
    assert state["Paused"] is True and state["Status"] == "paused"
    await docker.call("POST", f"/containers/{container}/unpause")
    state = (await docker.json("GET", f"/containers/{container}/json"))["State"]
    assert state["Paused"] is False and state["Running"] is True
    await docker.call("POST", f"/containers/{container}/kill?signal=KILL")
    exited = await asyncio.wait_for(docker.json("POST", f"/containers/{container}/wait"), 60)
    assert exited["StatusCode"] == 137
    assert "tick" in await docker.logs(container)


def test_an_engine_set_up_for_the_run_cannot_quietly_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOST_VAR, f"unix://{os.devnull}.absent.sock")
    monkeypatch.setenv(IMAGE_VAR, "localhost/nothing:here")
    monkeypatch.delenv(REQUIRED_VAR, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no engine answers"):
        require_engine()
    monkeypatch.setenv(REQUIRED_VAR, "1")
    with pytest.raises(pytest.fail.Exception, match="set up for this run"):
        require_engine()


async def test_a_demo_task_runs_end_to_end_on_the_docker_runner_against_the_real_engine(
        real_engine: Engine, sqlite_url: str, tmp_path: Any) -> None:
    """What a user of SHEPHERD_RUNNER=docker sees: the demo agent (the image's copy, as the README's image has it)
    runs its turn in a container of the engine, and its work is in Shepherd's copy of the workspace."""
    import time

    import aiodocker

    from adapters.runners.docker import DockerRunner
    from adapters.runners.docker_spec import DockerConfig
    from bot.presets import agent_catalog
    from core.autonomy.actions import ActionsConfig, Executor
    from core.people.access import Role
    from core.shepherd import Shepherd
    from core.store.db import Database
    from core.tasks.supervisor import RunnerConfig, TaskSupervisor
    from tests.conftest import person

    workspaces = tmp_path / "data" / "workspaces"
    db = Database(sqlite_url)
    shepherd = Shepherd(db, catalog=agent_catalog(in_image=True), default_agent="demo", workspace_root=workspaces)
    await shepherd.orgs.ensure("acme")
    runner = DockerRunner(aiodocker.Docker(url=real_engine.docker_host),
                          DockerConfig(user="1000:1000", image=real_engine.image))
    config = RunnerConfig(workspace_root=workspaces, poll_s=0.05, flush_s=0.05, idle_timeout_s=60,
                          hard_timeout_s=120, max_tasks=2)
    sup = TaskSupervisor(shepherd, config, runner=runner, executor=Executor(ActionsConfig()))
    await sup.start()
    who = person(Role.ADMIN)
    task_id = None
    try:
        task_id = (await shepherd.tasks.create(who, prompt="write a haiku", runtime="demo")).task.id
        deadline = time.monotonic() + 120
        while (row := await shepherd.tasks.get(who, task_id)).outcome is None:
            assert time.monotonic() < deadline, f"the task never ended: {row.status} {row.state_message}"
            await asyncio.sleep(0.2)
        assert row.outcome == "succeeded", row.state_message
        assert row.runner_kind == "docker"
        written = [p for p in (workspaces / task_id).rglob("*") if ".git" not in p.parts and p.is_file()]
        assert written, "the agent's work did not come back into Shepherd's copy"
        _, logs = await shepherd.tasks.logs(who, task_id, limit=1000)
        assert any(r.type == "output" for r in logs)
    finally:
        await sup.stop()
        if task_id is not None:
            await runner.discard(task_id)  # the engine outlives the test
        await runner.close()
        await db.dispose()
