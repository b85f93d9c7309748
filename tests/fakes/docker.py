"""A loopback fake of the Docker Engine API on a Unix socket, for the real aiodocker client (adapters/runners/docker).

    GET    /_ping, /version                               (unversioned, and under /v1.xx/)
    POST   /v1.xx/containers/create?name=                 (checked: see `refusal`)
    GET    /v1.xx/containers/json?all=&filters=           (label filters)
    GET    /v1.xx/containers/{id|name}/json
    POST   /v1.xx/containers/{id}/start|pause|unpause|kill?signal=|wait
    DELETE /v1.xx/containers/{id}?force=
    GET    /v1.xx/containers/{id}/logs?follow=&since=     (Docker's multiplexed stream format)
    GET    /v1.xx/containers/{id}/archive?path=           (a tar whose root is the path's last name)
    PUT    /v1.xx/containers/{id}/archive?path=
    POST   /v1.xx/volumes/create, GET|DELETE /v1.xx/volumes/{name}  (409 while a container uses it)

A container "runs" as a local process group: its Entrypoint + Cmd as a host command, its Env exactly as given
(nothing of this process's environment), its WorkingDir and every argument under a mount's target mapped to the
volume's host directory (`<root>/volumes/<name>`). Its log is what the group prints, each line stamped with the
time it came (for `since`). Pause is SIGSTOP of the group, kill a signal to it; when the main process ends, the
rest of the group is killed, as the end of a container's PID 1 ends its PID namespace. The fake has no image
store and no root filesystem: archive paths must lie under a mount.

Tests read `requests` (method, path, query, body) and `refusals`; the fake answers 400 to a container it would
not run (privileged, capabilities kept, no limits, root, a network not in `networks`, a secret-looking env).
It runs apart from any runner, so a new DockerRunner (a restarted Shepherd) finds its containers again; run it
as its own process with `python -m tests.fakes.docker <root>` (it prints its URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import struct
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from core.runners.local import group_members

API_VERSION = "1.43"
STDOUT = 1
SECRET_NAME = re.compile(r"^(SLACK_|TELEGRAM_|GITHUB_|DATABASE_URL$)|^SHEPHERD_.*(TOKEN|SECRET|PASSWORD|DATABASE|KEY)")
SECRET_VALUE = re.compile(r"^(xox[a-z]-|xapp-|ghp_|ghs_|github_pat_|postgres(ql)?://)")
REQUIRED_LABELS = ("app.kubernetes.io/managed-by", "shepherd.dev/org", "shepherd.dev/task", "shepherd.dev/turn")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class Container:
    id: str
    name: str
    config: dict[str, Any]
    mounts: dict[str, Path]  # target in the container -> host directory
    created: float = field(default_factory=time.time)
    proc: asyncio.subprocess.Process | None = None
    log: list[tuple[float, bytes]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    paused: bool = False
    reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def host_path(self, path: str) -> Path | None:
        """A container path under one of its mounts, as the host directory it is (None: not under a mount)."""
        pure = PurePosixPath(path)
        for target, host in self.mounts.items():
            if pure == PurePosixPath(target) or PurePosixPath(target) in pure.parents:
                return host / pure.relative_to(target)
        return None

    def touch(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def _stamp(epoch: float | None) -> str:
    if epoch is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _error(status: int, message: str) -> web.Response:
    # Docker's own content type, without a charset: aiodocker reads the message only then
    return web.Response(status=status, text=json.dumps({"message": message}),
                        headers={"Content-Type": "application/json"})


def refusal(config: dict[str, Any], networks: frozenset[str]) -> str | None:
    """Why the fake will not run a container so configured (None: it will)."""
    host = config.get("HostConfig") or {}
    user = str(config.get("User") or "")
    if host.get("Privileged"):
        return "privileged containers are refused"
    if "ALL" not in (host.get("CapDrop") or []):
        return "CapDrop must hold ALL"
    if not any(str(opt).startswith("no-new-privileges") for opt in host.get("SecurityOpt") or []):
        return "SecurityOpt must hold no-new-privileges"
    if not user or user.split(":")[0] in ("0", "root"):
        return f"the container must run as a non-root user (User={user!r})"
    for limit in ("NanoCpus", "Memory", "PidsLimit"):
        if not isinstance(host.get(limit), int) or host[limit] <= 0:
            return f"HostConfig.{limit} must be set"
    if host.get("NetworkMode") not in networks:
        return f"NetworkMode {host.get('NetworkMode')!r}, expected one of {sorted(networks)}"
    for entry in config.get("Env") or []:
        name, _, value = str(entry).partition("=")
        if SECRET_NAME.search(name) or SECRET_VALUE.search(value):
            return f"a secret-looking variable in Env: {name}"
    missing = [label for label in REQUIRED_LABELS if label not in (config.get("Labels") or {})]
    if missing:
        return f"labels missing: {', '.join(missing)}"
    if any(m.get("Type") != "volume" for m in host.get("Mounts") or []) or host.get("Binds"):
        return "only named volumes may be mounted (no host paths)"
    return None


class FakeDocker:
    def __init__(self, root: Path, *, networks: frozenset[str] = frozenset({"none"})) -> None:
        self.root = root
        self.networks = networks  # the NetworkModes it accepts
        self.requests: list[Seen] = []
        self.refusals: list[str] = []
        self.containers: dict[str, Container] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.archive_owners: set[tuple[int, int]] = set()  # (uid, gid) of the last archive PUT's entries
        # a socket path must be short (108 bytes): it lives in a fresh directory of its own under /tmp
        self._socket_dir = Path(tempfile.mkdtemp(prefix="fakedocker-"))
        self.socket = self._socket_dir / "docker.sock"
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    # ---- lifecycle

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record], client_max_size=1024**3)
        v = "/{version:v[0-9.]+}"
        for prefix in ("", v):
            app.router.add_get(prefix + "/_ping", self._ping)
            app.router.add_get(prefix + "/version", self._version)
        app.router.add_post(v + "/containers/create", self._create)
        app.router.add_get(v + "/containers/json", self._list)
        app.router.add_get(v + "/containers/{id}/json", self._inspect)
        app.router.add_post(v + "/containers/{id}/start", self._start)
        app.router.add_post(v + "/containers/{id}/pause", self._pause)
        app.router.add_post(v + "/containers/{id}/unpause", self._unpause)
        app.router.add_post(v + "/containers/{id}/kill", self._kill)
        app.router.add_post(v + "/containers/{id}/wait", self._wait)
        app.router.add_delete(v + "/containers/{id}", self._delete)
        app.router.add_get(v + "/containers/{id}/logs", self._logs)
        app.router.add_get(v + "/containers/{id}/archive", self._get_archive)
        app.router.add_put(v + "/containers/{id}/archive", self._put_archive)
        app.router.add_post(v + "/volumes/create", self._volume_create)
        app.router.add_get(v + "/volumes/{name}", self._volume_get)
        app.router.add_delete(v + "/volumes/{name}", self._volume_delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket)).start()
        return self.url

    async def stop(self) -> None:
        for container in list(self.containers.values()):
            await self._end(container)
        if self._runner is not None:
            await self._runner.cleanup()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def __aenter__(self) -> FakeDocker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- what tests ask

    def running(self, task_id: str | None = None) -> list[Container]:
        return [c for c in self.containers.values()
                if c.running and (task_id is None or c.labels.get("shepherd.dev/task") == task_id)]

    def created(self, path_suffix: str = "/containers/create") -> list[dict[str, Any]]:
        return [seen.body for seen in self.requests if seen.method == "POST" and seen.path.endswith(path_suffix)]

    # ---- the API

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.method in ("POST", "PUT") and request.content_type == "application/json" and request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        self.requests.append(Seen(request.method, request.path, dict(request.query), body))
        response: web.StreamResponse = await handler(request)
        return response

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": API_VERSION})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"Version": "fake", "ApiVersion": API_VERSION, "MinAPIVersion": "1.24",
                                  "Os": "linux", "Arch": "amd64"})

    def _find(self, request: web.Request) -> Container | None:
        key = request.match_info["id"]
        if key in self.containers:
            return self.containers[key]
        for container in self.containers.values():
            if container.name == key or (len(key) >= 12 and container.id.startswith(key)):
                return container
        return None

    async def _create(self, request: web.Request) -> web.Response:
        config = await request.json()
        name = request.query.get("name") or secrets.token_hex(6)
        if any(c.name == name for c in self.containers.values()):
            return _error(409, f'Conflict. The container name "/{name}" is already in use')
        why = refusal(config, self.networks)
        if why:
            self.refusals.append(why)
            return _error(400, f"fake docker refuses: {why}")
        mounts = {}
        for mount in (config.get("HostConfig") or {}).get("Mounts") or []:
            volume = self._volume(mount["Source"], {})
            mounts[mount["Target"]] = Path(volume["Mountpoint"])
        container = Container(id=secrets.token_hex(32), name=name, config=config, mounts=mounts)
        self.containers[container.id] = container
        return web.json_response({"Id": container.id, "Warnings": []}, status=201)

    def _describe(self, c: Container) -> dict[str, Any]:
        status = "paused" if c.paused else "running" if c.running else "exited" if c.proc else "created"
        return {
            "Id": c.id, "Name": "/" + c.name, "Created": _stamp(c.created),
            "Config": {**{k: v for k, v in c.config.items() if k != "HostConfig"}, "Tty": False},
            "HostConfig": c.config.get("HostConfig") or {},
            "State": {"Status": status, "Running": c.running, "Paused": c.paused, "OOMKilled": False,
                      "Dead": False, "Pid": c.proc.pid if c.running and c.proc else 0,
                      "ExitCode": c.exit_code or 0, "StartedAt": _stamp(c.started_at),
                      "FinishedAt": _stamp(c.finished_at)},
            "Mounts": [{"Type": "volume", "Name": Path(h).name, "Destination": t} for t, h in c.mounts.items()],
        }

    async def _inspect(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, f"No such container: {request.match_info['id']}")
        return web.json_response(self._describe(c))

    async def _list(self, request: web.Request) -> web.Response:
        wanted = json.loads(request.query.get("filters") or "{}").get("label", [])
        everyone = request.query.get("all") in ("1", "true", "True")
        found = []
        for c in self.containers.values():
            if not everyone and not c.running:
                continue
            if all(c.labels.get(k) == v for k, _, v in (label.partition("=") for label in wanted)):
                described = self._describe(c)
                found.append({"Id": c.id, "Names": ["/" + c.name], "Labels": c.labels,
                              "State": described["State"]["Status"], "Image": c.config.get("Image")})
        return web.json_response(found)

    def _argv(self, c: Container) -> list[str]:
        argv = [str(a) for a in (c.config.get("Entrypoint") or []) + (c.config.get("Cmd") or [])]
        return [str(c.host_path(a)) if a.startswith("/") and c.host_path(a) else a for a in argv]

    async def _start(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        if c.running:
            return web.Response(status=304)
        workdir = c.host_path(str(c.config.get("WorkingDir") or "/")) or self.root
        env = dict(str(e).partition("=")[::2] for e in c.config.get("Env") or [])
        try:
            c.proc = await asyncio.create_subprocess_exec(
                *self._argv(c), cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return _error(400, f"failed to create task for container: exec: {exc}")
        c.exit_code, c.started_at, c.finished_at = None, time.time(), None
        c.reader = asyncio.get_running_loop().create_task(self._follow(c))
        return web.Response(status=204)

    async def _follow(self, c: Container) -> None:
        assert c.proc is not None and c.proc.stdout is not None
        stdout = c.proc.stdout

        async def read() -> None:
            while line := await stdout.readline():
                c.log.append((time.time(), line))
                c.touch()

        reading = asyncio.get_running_loop().create_task(read())
        code = await c.proc.wait()
        self._signal(c, signal.SIGKILL)  # the container's PID 1 ended: its whole namespace goes
        await self._gone(c)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reading, timeout=5.0)
        c.exit_code, c.finished_at, c.paused = code if code >= 0 else 128 - code, time.time(), False
        c.touch()

    def _signal(self, c: Container, sig: signal.Signals) -> None:
        if c.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, sig)

    async def _gone(self, c: Container) -> None:
        if c.proc is None:
            return
        for _ in range(250):
            if not group_members(c.proc.pid):
                return
            self._signal(c, signal.SIGKILL)
            await asyncio.sleep(0.02)

    async def _end(self, c: Container) -> None:
        if c.running:
            self._signal(c, signal.SIGCONT)
            self._signal(c, signal.SIGKILL)
            assert c.reader is not None
            await c.reader

    async def _pause(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        if not c.running:
            return _error(409, f"Container {c.id} is not running")
        self._signal(c, signal.SIGSTOP)
        c.paused = True
        return web.Response(status=204)

    async def _unpause(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        if not c.paused:
            return _error(409, f"Container {c.id} is not paused")
        self._signal(c, signal.SIGCONT)
        c.paused = False
        return web.Response(status=204)

    async def _kill(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        if not c.running:
            return _error(409, f"Cannot kill container: {c.id} is not running")
        name = request.query.get("signal", "SIGKILL")
        sig = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        self._signal(c, sig)
        return web.Response(status=204)

    async def _wait(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        while (c.proc is None or c.running) and c.id in self.containers:
            await c.changed.wait()  # a created container is waited for until it has run and stopped
        return web.json_response({"StatusCode": c.exit_code, "Error": None})

    async def _delete(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, f"No such container: {request.match_info['id']}")
        if c.running and request.query.get("force") not in ("1", "true", "True"):
            return _error(409, "You cannot remove a running container: stop it first or use force")
        await self._end(c)
        del self.containers[c.id]
        c.touch()
        return web.Response(status=204)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        since = float(request.query.get("since") or 0)
        follow = request.query.get("follow") in ("1", "true", "True")
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.multiplexed-stream"})
        await response.prepare(request)
        sent = 0
        while True:
            changed = c.changed
            for stamp, line in c.log[sent:]:
                if stamp >= since:
                    await response.write(struct.pack(">BxxxL", STDOUT, len(line)) + line)
            sent = len(c.log)
            if not follow or (not c.running and c.proc is not None) or c.id not in self.containers:
                break
            await changed.wait()
        await response.write_eof()
        return response

    async def _get_archive(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        path = request.query.get("path", "")
        host = c.host_path(path)
        if host is None or not host.exists():
            return _error(404, f"Could not find the file {path} in container {c.name}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(host, arcname=PurePosixPath(path).name or ".")
        return web.Response(body=buffer.getvalue(), content_type="application/x-tar")

    async def _put_archive(self, request: web.Request) -> web.Response:
        c = self._find(request)
        if c is None:
            return _error(404, "No such container")
        path = request.query.get("path", "")
        host = c.host_path(path)
        if host is None or not host.is_dir():
            return _error(404, f"Could not find the file {path} in container {c.name}")
        raw = await request.read()
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
            self.archive_owners = {(m.uid, m.gid) for m in tar.getmembers()}
            tar.extractall(host, filter="data")
        return web.Response(status=200)

    def _volume(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        if name not in self.volumes:
            mountpoint = self.root / "volumes" / name
            mountpoint.mkdir(parents=True, exist_ok=True)
            self.volumes[name] = {"Name": name, "Driver": "local", "Mountpoint": str(mountpoint),
                                  "Labels": labels, "Scope": "local"}
        return self.volumes[name]

    async def _volume_create(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(self._volume(body["Name"], body.get("Labels") or {}), status=201)

    async def _volume_get(self, request: web.Request) -> web.Response:
        volume = self.volumes.get(request.match_info["name"])
        if volume is None:
            return _error(404, f"get {request.match_info['name']}: no such volume")
        return web.json_response(volume)

    async def _volume_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.volumes:
            return _error(404, f"get {name}: no such volume")
        users = [c.name for c in self.containers.values() if any(Path(h).name == name for h in c.mounts.values())]
        if users:
            return _error(409, f"remove {name}: volume is in use - [{', '.join(users)}]")
        shutil.rmtree(self.volumes.pop(name)["Mountpoint"], ignore_errors=True)
        return web.Response(status=204)


async def _serve(root: Path) -> None:
    fake = FakeDocker(root)
    print(await fake.start(), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(Path(sys.argv[1])))
