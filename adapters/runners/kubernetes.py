"""The Kubernetes runner (SHEPHERD_RUNNER=kubernetes): each turn of an agent is a Job in one namespace, on a
workspace claim (PVC) of its task that all its turns share.

The first turn's Job makes the workspace in an init container: a clone of the task's repository at its base
commit with a short-lived credential that only that container sees, or Shepherd's prepared copy unpacked when
there is nothing to clone. After each turn a short helper Job prints the work tree (tar, base64) on its log and
Shepherd's copy takes it (core.runners.mirror), where diff, commit and push happen: no token of Shepherd's ever
enters an agent's pod. A Job outlives a Shepherd restart and is found again by its name (the unit).

Kubernetes cannot freeze a pod: this runner has no pause.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from adapters.runners import kubernetes_objects as objects
from adapters.runners.kubernetes_api import KubeApi
from adapters.runners.kubernetes_handle import KubeHandle, container_state
from adapters.runners.kubernetes_objects import COLLECT_CONTAINER, KubeSettings
from core.runners import Capabilities, RunSpec, Seed
from core.runners.local import RunnerError
from core.runners.mirror import MirrorError, replace_tree, tree_archive_sync

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
COLLECT_POLL_S = 0.2
GONE_WAIT_S = 120.0


def _api_error(doing: str, exc: Exception) -> RunnerError:
    if isinstance(exc, ApiException):
        detail = f"{exc.status} {exc.reason}: {(exc.body or '')[:500] if isinstance(exc.body, str) else ''}"
    else:
        detail = str(exc) or type(exc).__name__
    return RunnerError(f"Kubernetes refused {doing}: {detail}", code="RUNNER_ENGINE", status=502)


class KubernetesRunner:
    """Runs each turn as a Kubernetes Job; see the module's docstring."""

    kind = "kubernetes"
    capabilities = Capabilities(pause=False, reconnect=True, remote=True, mounts=True,
                                why_no_pause="Kubernetes cannot freeze a pod: stop the task, or let it finish")

    def __init__(self, api_client: client.ApiClient, settings: KubeSettings) -> None:
        self.settings = settings
        self.api = KubeApi(api_client, settings.namespace)
        # the seeds of tasks whose first Job is not made yet: that Job's init container makes the workspace
        self._seeds: dict[str, tuple[Seed, bytes | None]] = {}

    @classmethod
    async def from_settings(cls, settings: Settings) -> KubernetesRunner:
        """A runner on the cluster the settings name: a kubeconfig (SHEPHERD_K8S_KUBECONFIG, KUBECONFIG) or, inside
        a pod, the service account's in-cluster configuration. A configuration that cannot be loaded is a
        RunnerError saying which (`shepherd doctor` and the worker's start print it, never a traceback)."""
        configuration = client.Configuration()
        kubeconfig = settings.k8s_kubeconfig or os.environ.get("KUBECONFIG")
        namespace = settings.k8s_namespace
        where = f"the kubeconfig {kubeconfig or config.KUBE_CONFIG_DEFAULT_LOCATION}"
        try:
            if kubeconfig is not None:
                if not await asyncio.to_thread(_is_file, str(kubeconfig)):
                    raise config.ConfigException("no such file")
                await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration,
                                              context=settings.k8s_context)
            elif (own := await asyncio.to_thread(_in_cluster_namespace)) is not None:
                where = "the pod's service account"
                config.load_incluster_config(client_configuration=configuration)
                namespace = namespace or own
            else:
                if not await asyncio.to_thread(_is_file, config.KUBE_CONFIG_DEFAULT_LOCATION):
                    raise config.ConfigException(
                        "no such file, and Shepherd runs outside a cluster: set SHEPHERD_K8S_KUBECONFIG")
                await config.load_kube_config(client_configuration=configuration, context=settings.k8s_context)
        except (config.ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
            raise RunnerError(f"SHEPHERD_RUNNER=kubernetes: {where} cannot be used: {exc}",
                              code="RUNNER_CONFIG", status=503) from None
        return cls(client.ApiClient(configuration), settings.k8s_settings(namespace or "default"))

    async def close(self) -> None:
        await self.api.close()

    def workspace_path(self, local: Path) -> Path:
        return Path(objects.WORKSPACE)

    async def ready(self) -> str | None:
        """The cluster answers, and lets Shepherd list Jobs in the agents' namespace (what every turn needs)."""
        try:
            await self.api.jobs("app.kubernetes.io/managed-by=shepherd")
        except (ApiException, aiohttp.ClientError, OSError) as exc:
            return _api_error(f"listing Jobs in namespace {self.settings.namespace}", exc).message
        return None

    async def seed(self, seed: Seed) -> None:
        archive = None
        if seed.source is None:
            archive = await seed_archive(seed.local)
        try:
            await self.api.create_claim(objects.claim(self.settings, task_id=seed.task_id, org_id=seed.org_id))
        except (ApiException, aiohttp.ClientError) as exc:
            raise _api_error("the workspace claim", exc) from None
        self._seeds[seed.task_id] = (seed, archive)

    async def start(self, spec: RunSpec) -> KubeHandle:
        seed, archive = self._seeds.get(spec.task_id, (None, None))
        name = objects.job_name(spec.task_id, spec.turn)
        body = objects.turn_job(self.settings, spec, name=name, seed=seed, archive=archive)
        try:
            await self.api.create_job(body)
        except (ApiException, aiohttp.ClientError) as exc:
            raise _api_error("the turn's Job", exc) from None
        self._seeds.pop(spec.task_id, None)
        return KubeHandle(self.api, name, spec)

    async def attach(self, unit: str, spec: RunSpec, *, since_s: float) -> KubeHandle | None:
        try:
            job = await self.api.read_job(unit)
        except (ApiException, aiohttp.ClientError) as exc:
            raise _api_error("reading the turn's Job", exc) from None
        labels = (job.metadata.labels or {}) if job is not None and job.metadata is not None else {}
        if job is None or labels.get(objects.MANAGED_BY) != objects.MANAGER \
                or labels.get(objects.TASK_LABEL) != objects.label_value(spec.task_id):
            return None  # gone (its TTL passed, deleted by hand), or not this task's: nothing to follow
        started = job.status.start_time if job.status is not None else None
        return KubeHandle(self.api, unit, spec, started_s=started.timestamp() if started else None, since_s=since_s)

    async def collect(self, task_id: str, local: Path) -> None:
        claim = await self._claim(task_id)
        if claim is None:
            raise MirrorError(f"the workspace of task {task_id} is gone from Kubernetes")
        org = (claim.metadata.labels or {}).get(objects.ORG_LABEL, "")
        name = objects.collect_job_name(task_id)
        body = objects.collect_job(self.settings, task_id=task_id, org_id=org, name=name,
                                   image=self.settings.image)
        try:
            await self.api.create_job(body)
            text = await self._finished_log(name)
        except (ApiException, aiohttp.ClientError) as exc:
            raise _api_error("the workspace's helper Job", exc) from None
        finally:
            await self._delete_quietly(name)
        try:
            archive = objects.collected_archive(text)
        except ValueError as exc:
            raise MirrorError(str(exc)) from None
        await replace_tree(local, archive)

    async def _claim(self, task_id: str) -> client.V1PersistentVolumeClaim | None:
        try:
            return await self.api.core.read_namespaced_persistent_volume_claim(
                objects.claim_name(task_id), self.api.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error("reading the workspace claim", exc) from None

    async def _finished_log(self, job: str) -> str:
        """The log of the helper Job's container once it ended; a MirrorError when it failed."""
        deadline = time.monotonic() + objects.COLLECT_DEADLINE_S + 30
        while time.monotonic() < deadline:
            pod = await self.api.pod_of(job)
            state = container_state(pod, COLLECT_CONTAINER)
            if pod is not None and state is not None and state.terminated is not None:
                text = await self.api.read_log(pod.metadata.name, COLLECT_CONTAINER)
                if state.terminated.exit_code != 0:
                    raise MirrorError(f"reading the workspace failed (exit {state.terminated.exit_code}): "
                                      f"{text[-500:]}")
                return text
            if pod is not None and pod.status is not None and pod.status.phase == "Failed":
                raise MirrorError(f"the workspace's helper pod failed: {pod.status.reason or 'no reason given'}")
            await asyncio.sleep(COLLECT_POLL_S)
        raise MirrorError("the workspace's helper Job did not finish in time")

    async def _delete_quietly(self, job: str) -> None:
        try:
            await self.api.delete_job(job)
            await self.api.job_gone(job, within_s=GONE_WAIT_S)
        except (ApiException, aiohttp.ClientError) as exc:
            log.warning("deleting the helper Job %s failed (its TTL removes it): %s", job, exc)

    async def discard(self, task_id: str) -> None:
        self._seeds.pop(task_id, None)
        try:
            for job in await self.api.jobs(objects.task_selector(task_id)):
                await self.api.delete_job(job.metadata.name)
            for job in await self.api.jobs(objects.task_selector(task_id)):
                await self.api.job_gone(job.metadata.name, within_s=GONE_WAIT_S)
            await self.api.delete_claim(objects.claim_name(task_id))
        except (ApiException, aiohttp.ClientError) as exc:
            raise _api_error("removing the task's workspace", exc) from None


def _is_file(path: str) -> bool:
    return Path(path).expanduser().is_file()


def _in_cluster_namespace() -> str | None:
    """The namespace of the pod Shepherd runs in, when it runs in one (its service account's mount says it)."""
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


async def seed_archive(local: Path) -> bytes:
    """Shepherd's copy of a workspace with nothing to clone (gzip'd tar), small enough to travel in a pod spec."""
    archive = await asyncio.to_thread(_gzip_tree, local)
    if len(archive) > objects.MAX_SEED_ARCHIVE_BYTES:
        raise RunnerError(f"the workspace must travel as Shepherd's copy (there is no repository to clone, or its "
                          f"token lasts and never leaves Shepherd: a GitHub App's short-lived tokens let the cluster "
                          f"clone it) and is too large to send in a pod's spec "
                          f"({len(archive) // 1024} KiB of {objects.MAX_SEED_ARCHIVE_BYTES // 1024} KiB)",
                          code="WORKSPACE_TOO_LARGE", status=413)
    return archive


def _gzip_tree(local: Path) -> bytes:
    return gzip.compress(tree_archive_sync(local), mtime=0)
