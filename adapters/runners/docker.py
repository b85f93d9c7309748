"""The Docker runner (SHEPHERD_RUNNER=docker): agent turns in containers of a Docker or Podman engine, through
its HTTP API (aiodocker), at DOCKER_HOST (unix:// or tcp://) or the default socket.

Each task has a named volume (`shepherd-ws-<task>`, its workspace, mounted at /workspace) and a small workspace
container on it that only sleeps: `seed` PUTs the archive of Shepherd's copy into it, `collect` GETs the work
tree back. Each turn is a fresh container on the same volume, not an `exec` in the task's container: Docker has
no API to signal or kill an exec, and an exec's output goes only to the connection that started it, so after a
Shepherd restart neither its output nor its end could be followed. A container's log outlives Shepherd (read
again with `since`), its exit code stays readable until it is removed, `kill` ends every process in it (its own
PID namespace), and `pause` freezes exactly the turn.

Every container runs as a non-root user with all capabilities dropped, no new privileges, CPU, memory and
process limits, and no network unless SHEPHERD_DOCKER_NETWORK (or the preset's entry in
SHEPHERD_DOCKER_NETWORKS) names one.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.volumes import DockerVolume

from adapters.runners import docker_spec as shapes
from adapters.runners.docker_handle import DockerHandle, started_at
from core.runners import Capabilities, RunSpec, Seed
from core.runners.local import RunnerError
from core.runners.mirror import MAX_TREE_BYTES, MirrorError, replace_tree, tree_archive

if TYPE_CHECKING:
    from bot.settings import Settings

ARCHIVE_SLACK_BYTES = 64 * 1024 * 1024  # tar headers and padding on top of the files' own bytes
CONFLICT = 409
NOT_FOUND = 404


class DockerRunner:
    kind = "docker"
    capabilities = Capabilities(pause=True, reconnect=True, remote=True, mounts=True)

    def __init__(self, docker: aiodocker.Docker, config: shapes.DockerConfig) -> None:
        self.docker = docker
        self.config = config

    @classmethod
    async def from_settings(cls, settings: Settings) -> DockerRunner:
        config = shapes.DockerConfig(
            image=settings.docker_image, images=dict(settings.docker_images), network=settings.docker_network,
            networks=dict(settings.docker_networks), cpus=settings.docker_cpus,
            memory_bytes=shapes.parse_memory(settings.docker_memory), pids_limit=settings.docker_pids,
            user=settings.docker_user,
        )
        try:
            docker = aiodocker.Docker(url=settings.docker_host or None)
        except ValueError as exc:  # a DOCKER_HOST aiodocker cannot read: said at start, never a traceback
            raise RunnerError(f"SHEPHERD_RUNNER=docker: DOCKER_HOST={settings.docker_host!r} cannot be used: {exc} "
                              "(unix:///path/to/docker.sock or tcp://host:port)", code="RUNNER_CONFIG",
                              status=503) from None
        return cls(docker, config)

    async def close(self) -> None:
        await self.docker.close()

    def workspace_path(self, local: Path) -> Path:
        return Path(shapes.MOUNT_PATH)

    async def ready(self) -> str | None:
        """The engine answers: a ping, and its version for the record."""
        try:
            version = await self.docker.version()
        except (aiodocker.DockerError, OSError) as exc:
            return f"the Docker engine at {self.docker.docker_host} does not answer: {exc}"
        except Exception as exc:  # aiohttp's connection errors, a socket that is not an engine's
            return f"the Docker engine at {self.docker.docker_host} does not answer: {type(exc).__name__}: {exc}"
        return None if version else "the Docker engine gave no version"

    async def start(self, spec: RunSpec) -> DockerHandle:
        name = shapes.turn_name(spec.task_id, spec.turn, secrets.token_hex(3))
        try:
            container = await self.docker.containers.create(shapes.turn_container(self.config, spec), name=name)
        except aiodocker.DockerError as exc:
            raise _failed("create the turn's container", exc) from None
        try:
            await container.start()
        except aiodocker.DockerError as exc:
            await _remove(container)
            raise _failed("start the turn's container", exc) from None
        return DockerHandle(self.docker, container, name, spec)

    async def attach(self, unit: str, spec: RunSpec, *, since_s: float) -> DockerHandle | None:
        try:
            container = await self.docker.containers.get(unit)
        except aiodocker.DockerError as exc:
            if exc.status == NOT_FOUND:
                return None
            raise _failed("find the turn's container", exc) from None
        config: dict[str, Any] = container["Config"] or {}
        if (config.get("Labels") or {}).get(shapes.MANAGED_BY) != shapes.SHEPHERD:
            return None  # a container of somebody else's with that name: not ours to follow or remove
        state: dict[str, Any] = container["State"] or {}
        began = started_at(state)
        ran = max(0.0, time.time() - began) if began is not None and state.get("Running") else 0.0
        return DockerHandle(self.docker, container, unit, spec, since=since_s, ran_s=ran,
                            paused=bool(state.get("Paused")))

    async def _workspace(self, task_id: str, org_id: str) -> DockerContainer:
        """The task's workspace container, running (made, or started again, when it is not)."""
        name = shapes.workspace_name(task_id)
        try:
            container = await self.docker.containers.get(name)
            if container["State"]["Running"]:
                return container
        except aiodocker.DockerError as exc:
            if exc.status != NOT_FOUND:
                raise
            await self.docker.volumes.create({
                "Name": shapes.volume_name(task_id),
                "Labels": shapes.labels(org_id=org_id, task_id=task_id, turn=0, role=shapes.ROLE_WORKSPACE),
            })
            config = shapes.workspace_container(self.config, task_id=task_id, org_id=org_id)
            try:
                container = await self.docker.containers.create(config, name=name)
            except aiodocker.DockerError as exc:
                if exc.status != CONFLICT:
                    raise
                container = await self.docker.containers.get(name)  # made by another worker meanwhile
        try:
            await container.start()
        except aiodocker.DockerError as exc:
            if exc.status != 304:  # started meanwhile
                raise
        return container

    async def seed(self, seed: Seed) -> None:
        try:
            container = await self._workspace(seed.task_id, seed.org_id)
            archive = await tree_archive(seed.local, owner=self.config.owner())
            await container.put_archive(shapes.MOUNT_PATH, archive)
        except aiodocker.DockerError as exc:
            raise _failed("seed the task's workspace", exc) from None

    async def collect(self, task_id: str, local: Path) -> None:
        try:
            container = await self._workspace(task_id, "")
            archive = await self._read_archive(container.id, shapes.MOUNT_PATH)
        except aiodocker.DockerError as exc:
            raise _failed("read the task's workspace", exc) from None
        await replace_tree(local, archive, strip=PurePosixPath(shapes.MOUNT_PATH).name)

    async def _read_archive(self, container_id: str, path: str) -> bytes:
        """GET archive as bytes, capped (aiodocker's get_archive hands back an opened TarFile instead)."""
        chunks: list[bytes] = []
        size = 0
        async with self.docker._query(f"containers/{container_id}/archive", params={"path": path}) as response:
            async for chunk in response.content.iter_chunked(1024 * 1024):
                size += len(chunk)
                if size > MAX_TREE_BYTES + ARCHIVE_SLACK_BYTES:
                    raise MirrorError(f"the workspace is larger than {MAX_TREE_BYTES // (1024 * 1024)} MB")
                chunks.append(chunk)
        return b"".join(chunks)

    async def discard(self, task_id: str) -> None:
        filters = {"label": [f"{shapes.MANAGED_BY}={shapes.SHEPHERD}", f"{shapes.TASK}={task_id}"]}
        try:
            for container in await self.docker.containers.list(all=True, filters=filters):
                await _remove(container, paused=container["State"] == "paused")
            await DockerVolume(self.docker, shapes.volume_name(task_id)).delete()
        except aiodocker.DockerError as exc:
            if exc.status != NOT_FOUND:
                raise _failed("remove the task's containers and volume", exc) from None


async def _remove(container: DockerContainer, *, paused: bool = False) -> None:
    """Remove a container whatever its state (a frozen one is thawed first: some engines refuse to remove it)."""
    if paused:
        with contextlib.suppress(aiodocker.DockerError):
            await container.unpause()
    try:
        await container.delete(force=True)
    except aiodocker.DockerError as exc:
        if exc.status != NOT_FOUND:
            raise


def _failed(what: str, exc: aiodocker.DockerError) -> RunnerError:
    return RunnerError(f"the Docker engine could not {what}: {exc.message} ({exc.status})", code="RUNNER_ENGINE")
