"""A loopback fake of the Kubernetes API, enough for Shepherd's runner, driven by the real kubernetes_asyncio client.

batch/v1 Jobs (create, get, list by labelSelector, delete with propagationPolicy: Foreground and Background
delete the pods, the API's default for Jobs orphans them), core/v1 pods (list by labelSelector, get, log with
follow, timestamps and sinceSeconds), persistentvolumeclaims (create, get, delete). Its "kubelet" runs each
container as a local subprocess in a process group of its own: command and args, the environment exactly as
given (over an "image" environment holding only PATH), workingDir, every volume a host directory (one per claim,
one per pod and emptyDir) with the mount paths rewritten in workingDir, command, args and env values; init
containers first; activeDeadlineSeconds enforced as the Job controller does (pods deleted, condition Failed with
reason DeadlineExceeded).

It checks what it is sent and answers 422 as an admission policy would: a Job without a deadline, a TTL, or
backoffLimit 0, a pod that mounts a service-account token or may run as root or escalate privileges, objects
without Shepherd's labels, and any value containing one of the `forbidden` strings the test names (Shepherd's
secrets) anywhere in env, command, args or labels. Every object it was sent is kept in `received`. Given `rules`
(a Role's rules: (API group, resource) -> verbs, in `rules_namespace`), it answers 403 to any other request, as
the API server does for the worker's service account (tests.kubernetes_rig reads them from manifests/k8s).

Its state and processes outlive its HTTP server: `restart()` stops and starts the server on the same port (log
streams drop, Jobs go on), and `drop_log_streams()` cuts the open log streams, as a proxy or an API server
rollout would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

TOKEN = "fake-kube-token"
MANAGED_BY = "app.kubernetes.io/managed-by"
REQUIRED_LABELS = (MANAGED_BY, "shepherd.dev/org", "shepherd.dev/task")
STOP_GRACE_S = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.json_response(body, status=code)


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


@dataclass
class Container:
    name: str
    logs: list[tuple[int, str]] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    env: dict[str, str] = field(default_factory=dict)  # as given (before the mount paths are rewritten)


@dataclass
class Pod:
    obj: dict[str, Any]
    containers: dict[str, Container]
    init_names: list[str]
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    kubelet: asyncio.Task[None] | None = None
    killed: bool = False

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("labels", {}))

    def terminal(self) -> bool:
        return self.obj["status"].get("phase") in ("Succeeded", "Failed")


class FakeKubernetes:
    def __init__(self, root: Path, *, forbidden: Sequence[str] = (), missing_images: Sequence[str] = (),
                 rules: dict[tuple[str, str], set[str]] | None = None, rules_namespace: str = "") -> None:
        self.root = root
        self.rules = rules
        self.rules_namespace = rules_namespace
        self.forbidden = list(forbidden)
        self.missing_images = set(missing_images)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, Pod] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []  # every object created, as sent
        self.refused: list[tuple[int, str]] = []
        self.requests: list[str] = []
        self._streams: set[web.StreamResponse] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # life

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        jobs, pods, claims = "/apis/batch/v1/namespaces/{ns}/jobs", "/api/v1/namespaces/{ns}/pods", \
            "/api/v1/namespaces/{ns}/persistentvolumeclaims"
        r.add_post(jobs, self._create_job)
        r.add_get(jobs, self._list_jobs)
        r.add_get(jobs + "/{name}", self._get_job)
        r.add_delete(jobs + "/{name}", self._delete_job)
        r.add_get(pods, self._list_pods)
        r.add_get(pods + "/{name}", self._get_pod)
        r.add_delete(pods + "/{name}", self._delete_pod_request)
        r.add_get(pods + "/{name}/log", self._pod_log)
        r.add_post(claims, self._create_claim)
        r.add_get(claims + "/{name}", self._get_claim)
        r.add_delete(claims + "/{name}", self._delete_claim)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop_server(self) -> None:
        await self.drop_log_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> None:
        """The API server goes away and comes back on the same port; Jobs and their processes go on."""
        await self.stop_server()
        await self.start()

    async def close(self) -> None:
        await self.stop_server()
        for pod in list(self.pods.values()):
            await self._kill(pod)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def drop_log_streams(self) -> None:
        for stream in list(self._streams):
            transport = stream._req.transport if stream._req is not None else None  # type: ignore[attr-defined]
            if transport is not None:
                transport.abort()
        self._streams.clear()

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "shepherd", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "shepherd"}}],
        }
        path.write_text(json.dumps(config))
        return path

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # what tests ask

    def jobs_sent(self) -> list[dict[str, Any]]:
        return [o for o in self.received if o.get("kind") == "Job"]

    def live_pods(self, task_id: str) -> list[str]:
        return [p.name for p in self.pods.values()
                if p.labels.get("shepherd.dev/task") == task_id and not p.terminal()]

    def claim_dir(self, name: str) -> Path:
        return self.root / "claims" / name

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        if (refused := self._forbidden(request)) is not None:
            self.refused.append((403, refused))
            return _status(403, "Forbidden", refused)
        result: web.StreamResponse = await handler(request)
        return result

    # checks

    def _forbidden(self, request: web.Request) -> str | None:
        """Why RBAC refuses the request (None: the Role allows it), as the API server's authorizer decides."""
        if self.rules is None:
            return None
        match = _RESOURCE_PATH.match(request.path)
        if match is None:
            return f"{request.method} {request.path}: no rule of the Role reaches it"
        group, namespace, resource, name, sub = match.groups()
        if sub:
            resource = f"{resource}/{sub}"
        verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}.get(request.method)
        if verb is None:
            watch = request.query.get("watch", "").lower() in ("1", "true")
            verb = "get" if name else ("watch" if watch else "list")
        if namespace != self.rules_namespace or verb not in self.rules.get((group or "", resource), set()):
            return (f'{resource} is forbidden: User "system:serviceaccount:shepherd:shepherd-worker" cannot {verb} '
                    f'resource "{resource}" in API group "{group or ""}" in the namespace "{namespace}"')
        return None

    def _refuse(self, code: int, message: str) -> web.Response:
        self.refused.append((code, message))
        return _status(code, "Invalid" if code == 422 else "BadRequest", message)

    def _secret_in(self, obj: Any) -> str | None:
        text = json.dumps(obj)
        return next((s for s in self.forbidden if s and s in text), None)

    def _check_labels(self, kind: str, labels: dict[str, str]) -> str | None:
        missing = [k for k in REQUIRED_LABELS if not labels.get(k)]
        if missing:
            return f"{kind} lacks the labels {', '.join(missing)}"
        if labels[MANAGED_BY] != "shepherd":
            return f"{kind} is not managed by shepherd"
        return None

    def _check_job(self, job: dict[str, Any]) -> str | None:
        spec = job.get("spec") or {}
        template = spec.get("template") or {}
        pod = template.get("spec") or {}
        if not isinstance(spec.get("activeDeadlineSeconds"), int) or spec["activeDeadlineSeconds"] <= 0:
            return "spec.activeDeadlineSeconds: a Job must have a deadline"
        if spec.get("backoffLimit") != 0:
            return "spec.backoffLimit: must be 0 (a turn is never run twice)"
        if not isinstance(spec.get("ttlSecondsAfterFinished"), int):
            return "spec.ttlSecondsAfterFinished: a finished Job must go"
        if pod.get("automountServiceAccountToken") is not False:
            return "spec.template.spec.automountServiceAccountToken: must be false"
        if pod.get("restartPolicy") != "Never":
            return "spec.template.spec.restartPolicy: must be Never"
        for where, labels in (("the Job", job.get("metadata", {}).get("labels", {})),
                              ("the pod template", template.get("metadata", {}).get("labels", {}))):
            if (problem := self._check_labels(where, labels)) is not None:
                return problem
        pod_security = pod.get("securityContext") or {}
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            security = container.get("securityContext") or {}
            if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
                return f"container {container.get('name')}: runAsNonRoot must be true"
            if security.get("allowPrivilegeEscalation") is not False:
                return f"container {container.get('name')}: allowPrivilegeEscalation must be false"
            if "ALL" not in (security.get("capabilities") or {}).get("drop", []):
                return f"container {container.get('name')}: capabilities must drop ALL"
            if any("valueFrom" in e for e in container.get("env", [])):
                return f"container {container.get('name')}: the fake takes literal env values only"
        for volume in pod.get("volumes", []):
            if not ({"persistentVolumeClaim", "emptyDir"} & set(volume)):
                return f"volume {volume.get('name')}: only claims and emptyDirs are allowed"
        return None

    # jobs

    async def _create_job(self, request: web.Request) -> web.Response:
        job = await request.json()
        self.received.append(json.loads(json.dumps(job)))
        if (secret := self._secret_in(job)) is not None:
            return self._refuse(422, f"the Job carries a secret value ({secret[:4]}…)")
        if (problem := self._check_job(job)) is not None:
            return self._refuse(422, problem)
        name = job["metadata"]["name"]
        if name in self.jobs:
            return _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        job["metadata"].update({"namespace": request.match_info["ns"], "uid": str(uuid.uuid4()),
                                "creationTimestamp": _now(), "resourceVersion": "1"})
        job["status"] = {"startTime": _now(), "active": 1}
        self.jobs[name] = job
        self._make_pod(job)
        self._spawn(self._deadline(name, job["spec"]["activeDeadlineSeconds"]))
        return web.json_response(job, status=201)

    def _list(self, kind: str, items: list[dict[str, Any]]) -> web.Response:
        return web.json_response({"kind": kind, "apiVersion": "batch/v1" if kind == "JobList" else "v1",
                                  "metadata": {"resourceVersion": "1"}, "items": items})

    async def _list_jobs(self, request: web.Request) -> web.Response:
        selector = request.query.get("labelSelector", "")
        return self._list("JobList", [j for j in self.jobs.values()
                                      if _matches(j["metadata"].get("labels", {}), selector)])

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["name"])
        if job is None:
            return _status(404, "NotFound", f'jobs.batch "{request.match_info["name"]}" not found')
        return web.json_response(job)

    async def _delete_job(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        job = self.jobs.get(name)
        if job is None:
            return _status(404, "NotFound", f'jobs.batch "{name}" not found')
        body = await request.json() if request.can_read_body else {}
        policy = request.query.get("propagationPolicy") or (body or {}).get("propagationPolicy") or "Orphan"
        pods = [p for p in self.pods.values() if p.labels.get("job-name") == name]
        if policy == "Foreground":
            job["metadata"]["deletionTimestamp"] = _now()
            job["metadata"]["finalizers"] = ["foregroundDeletion"]
            self._spawn(self._delete_foreground(name, pods))
        elif policy == "Background":
            self.jobs.pop(name, None)
            for pod in pods:
                self._spawn(self._delete_pod(pod))
        else:  # Orphan: the Job goes, its pods (and the agent in them) stay
            self.jobs.pop(name, None)
        return web.json_response({**job, "status": job.get("status", {})})

    async def _delete_foreground(self, name: str, pods: list[Pod]) -> None:
        for pod in pods:
            await self._delete_pod(pod)
        self.jobs.pop(name, None)

    async def _delete_pod(self, pod: Pod) -> None:
        await self._kill(pod)
        self.pods.pop(pod.name, None)

    async def _deadline(self, name: str, seconds: int) -> None:
        await asyncio.sleep(seconds)
        job = self.jobs.get(name)
        if job is None or job["status"].get("completionTime") or job["status"].get("failed"):
            return
        for pod in [p for p in self.pods.values() if p.labels.get("job-name") == name]:
            await self._delete_pod(pod)
        job["status"].update({"active": 0, "failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
             "message": "Job was active longer than specified deadline", "lastTransitionTime": _now()}]})

    # pods and their kubelet

    def _make_pod(self, job: dict[str, Any]) -> None:
        template = json.loads(json.dumps(job["spec"]["template"]))
        name = f"{job['metadata']['name']}-{secrets.token_hex(3)[:5]}"
        labels = {**template.get("metadata", {}).get("labels", {}), "job-name": job["metadata"]["name"],
                  "batch.kubernetes.io/job-name": job["metadata"]["name"],
                  "controller-uid": job["metadata"]["uid"]}
        spec = template["spec"]
        inits = [c["name"] for c in spec.get("initContainers", [])]
        mains = [c["name"] for c in spec["containers"]]
        obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "labels": labels,
                         "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                              "uid": job["metadata"]["uid"], "controller": True}]},
            "spec": {**spec, "nodeName": "fake-node"},
            "status": {"phase": "Pending"},
        }
        pod = Pod(obj=obj, containers={n: Container(n) for n in [*inits, *mains]}, init_names=inits)
        self.pods[name] = pod
        self._publish(pod)
        pod.kubelet = asyncio.get_running_loop().create_task(self._kubelet(pod, job["metadata"]["name"]))
        self._tasks.add(pod.kubelet)
        pod.kubelet.add_done_callback(self._tasks.discard)

    def _publish(self, pod: Pod) -> None:
        """The pod's status as the API shows it, from its containers' states."""
        def statuses(names: list[str]) -> list[dict[str, Any]]:
            out = []
            for n in names:
                spec = next(c for c in [*pod.obj["spec"].get("initContainers", []), *pod.obj["spec"]["containers"]]
                            if c["name"] == n)
                state = pod.containers[n].state
                out.append({"name": n, "image": spec["image"], "imageID": "", "ready": "running" in state,
                            "restartCount": 0, "started": "running" in state, "state": state})
            return out
        mains = [n for n in pod.containers if n not in pod.init_names]
        pod.obj["status"]["containerStatuses"] = statuses(mains)
        if pod.init_names:
            pod.obj["status"]["initContainerStatuses"] = statuses(pod.init_names)

    def _volumes(self, pod: Pod) -> dict[str, Path]:
        paths = {}
        for volume in pod.obj["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                paths[volume["name"]] = self.claim_dir(volume["persistentVolumeClaim"]["claimName"])
            else:
                paths[volume["name"]] = self.root / "pods" / pod.name / volume["name"]
                paths[volume["name"]].mkdir(parents=True, exist_ok=True)
        return paths

    async def _kubelet(self, pod: Pod, job_name: str) -> None:
        volumes = self._volumes(pod)
        if any(not p.exists() for p in volumes.values()):
            return  # a claim that does not exist: the pod stays Pending, as an unschedulable one does
        spec = pod.obj["spec"]
        pod.obj["status"].update({"phase": "Pending", "startTime": _now()})
        for container in spec.get("initContainers", []):
            code = await self._run(pod, container, volumes)
            if code != 0:
                await self._ended(pod, job_name, "Failed")
                return
        pod.obj["status"]["phase"] = "Running"
        code = await self._run(pod, spec["containers"][0], volumes)
        await self._ended(pod, job_name, "Succeeded" if code == 0 else "Failed")

    async def _ended(self, pod: Pod, job_name: str, phase: str) -> None:
        if pod.killed:
            return
        pod.obj["status"]["phase"] = phase
        job = self.jobs.get(job_name)
        if job is not None and not job["status"].get("failed"):
            done = {"type": "Complete" if phase == "Succeeded" else "Failed", "status": "True",
                    "lastTransitionTime": _now()}
            if phase == "Failed":
                done["reason"] = "BackoffLimitExceeded"
            job["status"].update({"active": 0, "conditions": [done],
                                  "succeeded" if phase == "Succeeded" else "failed": 1})
            if phase == "Succeeded":
                job["status"]["completionTime"] = _now()
        async with pod.changed:
            pod.changed.notify_all()

    async def _run(self, pod: Pod, container: dict[str, Any], volumes: dict[str, Path]) -> int:
        box = pod.containers[container["name"]]
        if container["image"] in self.missing_images:
            box.state = {"waiting": {"reason": "ErrImagePull", "message": f"pull {container['image']}: not found"}}
            self._publish(pod)
            await asyncio.Event().wait()  # as a real kubelet: waiting until someone deletes the pod
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        rewrite = _rewriter(mounts)
        given = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        box.env = given
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # the "image's" own environment
        env.update({k: rewrite(v) for k, v in given.items()})
        argv = [rewrite(a) for a in [*container.get("command", []), *container.get("args", [])]]
        cwd = Path(rewrite(container.get("workingDir") or "/"))
        cwd.mkdir(parents=True, exist_ok=True)
        try:
            box.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            box.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc),
                                        "startedAt": _now(), "finishedAt": _now()}}
            self._publish(pod)
            return 128
        started = _now()
        box.state = {"running": {"startedAt": started}}
        self._publish(pod)
        assert box.proc.stdout is not None
        buffer = b""
        while chunk := await box.proc.stdout.read(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            if complete:
                for raw in complete:
                    box.logs.append((time.time_ns(), raw.decode(errors="replace")))
                async with pod.changed:
                    pod.changed.notify_all()
        if buffer:
            box.logs.append((time.time_ns(), buffer.decode(errors="replace")))
        code = await box.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(box.proc.pid, signal.SIGKILL)  # the container is gone: so is all it started
        box.state = {"terminated": {"exitCode": code if code >= 0 else 128 - code,
                                    "reason": "Completed" if code == 0 else "Error",
                                    "startedAt": started, "finishedAt": _now()}}
        self._publish(pod)
        async with pod.changed:
            pod.changed.notify_all()
        return code

    async def _kill(self, pod: Pod) -> None:
        """TERM to every container's process group, KILL after the grace, until none of them is left."""
        pod.killed = True
        groups = [c.proc.pid for c in pod.containers.values() if c.proc is not None]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if not any(_alive(g) for g in groups):
                break
            await asyncio.sleep(0.05)
        while True:
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            if not any(_alive(g) for g in groups):
                break
            await asyncio.sleep(0.02)
        if pod.kubelet is not None and not pod.kubelet.done():
            pod.kubelet.cancel()
        for box in pod.containers.values():
            if "terminated" not in box.state:
                box.state = {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": _now()}}
        pod.obj["status"]["phase"] = "Failed"
        self._publish(pod)
        async with pod.changed:
            pod.changed.notify_all()
        shutil.rmtree(self.root / "pods" / pod.name, ignore_errors=True)

    async def _list_pods(self, request: web.Request) -> web.Response:
        selector = request.query.get("labelSelector", "")
        return self._list("PodList", [p.obj for p in self.pods.values() if _matches(p.labels, selector)])

    async def _get_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        return web.json_response(pod.obj)

    async def _delete_pod_request(self, request: web.Request) -> web.Response:
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        self._spawn(self._delete_pod(pod))
        return web.json_response(pod.obj)

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        mains = [n for n in pod.containers if n not in pod.init_names]
        name = request.query.get("container") or (mains[0] if len(mains) == 1 else "")
        box = pod.containers.get(name)
        if box is None:
            return _status(400, "BadRequest", f"container {name!r} is not valid for pod {pod.name}")
        if "waiting" in box.state:
            return _status(400, "BadRequest",
                           f'container "{name}" in pod "{pod.name}" is waiting to start: PodInitializing')
        follow = request.query.get("follow", "").lower() == "true"
        stamps = request.query.get("timestamps", "").lower() == "true"
        since = request.query.get("sinceSeconds")
        floor = time.time_ns() - int(since) * 1_000_000_000 if since else 0

        def render(entries: list[tuple[int, str]]) -> bytes:
            return "".join(f"{_stamp(ns)} {text}\n" if stamps else f"{text}\n"
                           for ns, text in entries if ns >= floor).encode()

        if not follow:
            return web.Response(body=render(box.logs), content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._streams.add(response)
        sent = 0
        try:
            while True:
                if sent < len(box.logs):
                    entries = box.logs[sent:]
                    sent += len(entries)
                    await response.write(render(entries))
                    continue
                if "terminated" in box.state or pod.killed:
                    break
                async with pod.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(pod.changed.wait(), timeout=0.5)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            self._streams.discard(response)
        return response

    # claims

    async def _create_claim(self, request: web.Request) -> web.Response:
        claim = await request.json()
        self.received.append(json.loads(json.dumps(claim)))
        if (secret := self._secret_in(claim)) is not None:
            return self._refuse(422, f"the claim carries a secret value ({secret[:4]}…)")
        if (problem := self._check_labels("the claim", claim.get("metadata", {}).get("labels", {}))) is not None:
            return self._refuse(422, problem)
        name = claim["metadata"]["name"]
        if name in self.claims:
            return _status(409, "AlreadyExists", f'persistentvolumeclaims "{name}" already exists')
        claim["metadata"].update({"namespace": request.match_info["ns"], "uid": str(uuid.uuid4()),
                                  "creationTimestamp": _now()})
        claim["status"] = {"phase": "Bound"}
        self.claims[name] = claim
        self.claim_dir(name).mkdir(parents=True, exist_ok=True)
        return web.json_response(claim, status=201)

    async def _get_claim(self, request: web.Request) -> web.Response:
        claim = self.claims.get(request.match_info["name"])
        if claim is None:
            return _status(404, "NotFound", f'persistentvolumeclaims "{request.match_info["name"]}" not found')
        return web.json_response(claim)

    async def _delete_claim(self, request: web.Request) -> web.Response:
        claim = self.claims.pop(request.match_info["name"], None)
        if claim is None:
            return _status(404, "NotFound", f'persistentvolumeclaims "{request.match_info["name"]}" not found')
        shutil.rmtree(self.claim_dir(request.match_info["name"]), ignore_errors=True)
        return web.json_response(claim)


_RESOURCE_PATH = re.compile(
    r"^/(?:api/v1|apis/([^/]+)/[^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?(?:/([^/]+))?$")


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie member counts as gone: the fake's own child is reaped by asyncio
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rfind(")") + 2:].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    return True
    return False


def _rewriter(mounts: dict[str, Path]) -> Callable[[str], str]:
    """Each mount path in a string becomes its host directory, in one pass (a host directory may itself lie
    under a path that is also mounted, such as /tmp)."""
    if not mounts:
        return lambda text: text
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
                         + r")(?=/|$|[^\w.-])([^\s'\":;,]*)")

    def swap(m: re.Match[str]) -> str:
        # a file of this host's under a mount's path (the test suite checked out under /tmp, its demo agent) is
        # the program to run, not a path inside the container: a real image would have its own copy there
        if m.group(2) and Path(m.group(1) + m.group(2)).exists():
            return m.group(0)
        return str(mounts[m.group(1)]) + m.group(2)

    return lambda text: pattern.sub(swap, text)
