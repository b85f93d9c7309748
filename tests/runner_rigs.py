"""One rig per runner for the runner contract suite (tests/test_runner_contract.py): the runner under test, where
Shepherd's copies of workspaces live, and what the engine can tell about a task's units. Each remote rig drives its
real client library against a loopback fake of the engine (tests/fakes/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import aiodocker

from adapters.runners.docker import DockerRunner
from adapters.runners.docker_spec import DockerConfig
from core.runners import Runner, Seed
from core.runners.local import LocalRunner
from tests.fakes.docker import FakeDocker


class Rig(Protocol):
    runner: Runner
    workspace_root: Path

    async def new_runner(self) -> Runner:
        """A fresh runner on the same engine, as after a Shepherd restart."""
        ...

    async def leftovers(self, task_id: str) -> list[str]:
        """What of the task's units still runs in the engine."""
        ...

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        """The environment the engine was given for the task's latest unit (None: no engine records it)."""
        ...

    async def close(self) -> None: ...


def processes_of(task_id: str) -> list[str]:
    """Live processes on this host (but this one) whose environment names the task (every unit's does:
    SHEPHERD_TASK_ID)."""
    marker = f"SHEPHERD_TASK_ID={task_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in environ.split(b"\0") and state[state.rfind(")") + 2:][:1] != "Z":
            found.append(entry.name)
    return found


class LocalRig:
    def __init__(self, root: Path) -> None:
        self.runner: Runner = LocalRunner()
        self.workspace_root = root

    async def new_runner(self) -> Runner:
        return LocalRunner()

    async def leftovers(self, task_id: str) -> list[str]:
        return processes_of(task_id)

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        return None

    async def close(self) -> None:
        return None


async def make_local_rig(root: Path) -> Rig:
    return LocalRig(root)


class DockerRig:
    """The Docker runner driving the real aiodocker against the fake engine (tests/fakes/docker.py)."""

    def __init__(self, root: Path, fake: FakeDocker) -> None:
        self.fake = fake
        self.workspace_root = root
        self._runners: list[DockerRunner] = []
        self.runner: Runner = self._runner()

    def _runner(self) -> DockerRunner:
        runner = DockerRunner(aiodocker.Docker(url=self.fake.url), DockerConfig(user="1000:1000"))
        self._runners.append(runner)
        return runner

    async def new_runner(self) -> Runner:
        return self._runner()

    async def leftovers(self, task_id: str) -> list[str]:
        turns = [c.name for c in self.fake.running(task_id) if c.labels.get("shepherd.dev/role") == "turn"]
        return turns + processes_of(task_id)

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        made = [body for body in self.fake.created()
                if (body.get("Labels") or {}).get("shepherd.dev/task") == task_id
                and body["Labels"].get("shepherd.dev/role") == "turn"]
        return dict(str(e).partition("=")[::2] for e in made[-1]["Env"]) if made else None

    async def close(self) -> None:
        for runner in self._runners:
            await runner.close()
        await self.fake.stop()


async def make_docker_rig(root: Path) -> Rig:
    fake = FakeDocker(root.parent / "engine")
    await fake.start()
    return DockerRig(root, fake)


async def make_kubernetes_rig(root: Path) -> Rig:
    from tests.kubernetes_rig import make_kubernetes_rig as make  # the real client against the loopback fake

    return await make(root)


class RealDockerRig:
    """The Docker runner against a real engine (Podman in CI, set up by .ci/engine; tests/engines.py). The unit
    runs the engine's image, so its Python is the image's `python3`, not this host's."""

    python = "python3"

    def __init__(self, root: Path, host: str, image: str) -> None:
        self.workspace_root = root
        self.host, self.image = host, image
        self._tasks: set[str] = set()  # what this rig's tests made (the engine holds other tests' containers too)
        self._runners: list[DockerRunner] = []
        self.runner: Runner = self._runner()

    def _runner(self) -> DockerRunner:
        runner = _Recording(aiodocker.Docker(url=self.host), DockerConfig(user="1000:1000", image=self.image),
                            seen=self._tasks)
        self._runners.append(runner)
        return runner

    async def new_runner(self) -> Runner:
        return self._runner()

    async def _containers(self, *labels: str) -> list[dict[str, Any]]:
        docker = aiodocker.Docker(url=self.host)
        try:
            found = await docker.containers.list(all=True, filters={"label": list(labels)})
            return [dict(c._container) for c in found]
        finally:
            await docker.close()

    async def leftovers(self, task_id: str) -> list[str]:
        turns = await self._containers(f"shepherd.dev/task={task_id}", "shepherd.dev/role=turn")
        return [c["Id"] for c in turns if c.get("State") in ("running", "paused")]

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        turns = await self._containers(f"shepherd.dev/task={task_id}", "shepherd.dev/role=turn")
        if not turns:
            return None
        docker = aiodocker.Docker(url=self.host)
        try:
            info = await docker.containers.get(max(turns, key=lambda c: c.get("Created", 0))["Id"])
            return dict(str(e).partition("=")[::2] for e in info["Config"]["Env"])
        finally:
            await docker.close()

    async def close(self) -> None:
        # the engine outlives the test (CI keeps it between runs): what its tasks left goes
        for task in self._tasks:  # only its own: a test running beside it on the same engine keeps its units
            await self._runners[0].discard(task)
        for runner in self._runners:
            await runner.close()


class _Recording(DockerRunner):
    """The Docker runner, remembering the tasks it seeded: what a rig on a shared engine removes at its end."""

    def __init__(self, docker: aiodocker.Docker, config: DockerConfig, *, seen: set[str]) -> None:
        super().__init__(docker, config)
        self._seen = seen

    async def seed(self, seed: Seed) -> None:
        self._seen.add(seed.task_id)
        await super().seed(seed)


async def make_real_docker_rig(root: Path) -> Rig:
    from tests.engines import require_engine  # skips (or fails, in CI) when no engine is set up

    engine = require_engine()
    return RealDockerRig(root, engine.docker_host, engine.image)


RIGS = {"local": make_local_rig, "docker": make_docker_rig, "kubernetes": make_kubernetes_rig,
        "real-docker": make_real_docker_rig}
