"""The few calls of the Kubernetes API the runner makes, through kubernetes_asyncio: Jobs, their pods, pod logs
and workspace claims in one namespace. A 404 is an answer here (None, or False), not an error: a unit that is
gone is something the runner reports, not something that breaks it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from adapters.runners.kubernetes_objects import AGENT_CONTAINER, JOB_NAME_LABEL

LOG_STREAM_S = 600  # a follow stream is opened again after this long: a half-open connection cannot hang a turn
GONE_POLL_S = 0.2
NOT_FOUND = 404
MAX_PENDING_BYTES = 64 * 1024


class KubeApi:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.client = api_client
        self.namespace = namespace
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    async def close(self) -> None:
        await self.client.close()

    # Jobs

    async def create_job(self, body: dict[str, Any]) -> None:
        await self.batch.create_namespaced_job(self.namespace, body)

    async def read_job(self, name: str) -> client.V1Job | None:
        try:
            return await self.batch.read_namespaced_job(name, self.namespace)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise

    async def jobs(self, selector: str) -> list[client.V1Job]:
        found = await self.batch.list_namespaced_job(self.namespace, label_selector=selector)
        return list(found.items or [])

    async def delete_job(self, name: str) -> None:
        """Delete the Job and its pods. Foreground: the Job stays (being deleted) until its pods are gone; the
        API's default for Jobs would orphan the pods, leaving the agent running."""
        try:
            await self.batch.delete_namespaced_job(
                name, self.namespace, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise

    async def job_gone(self, name: str, *, within_s: float) -> bool:
        """Wait until neither the Job nor any pod of it is left; False when that took longer than `within_s`."""
        deadline = time.monotonic() + within_s
        orphans_deleted = False
        while time.monotonic() < deadline:
            if await self.read_job(name) is None:
                pods = await self.pods_of(name)
                if not pods:
                    return True
                if not orphans_deleted:  # the Job was deleted without its pods (by hand, without propagation)
                    for pod in pods:
                        await self.delete_pod(pod.metadata.name)
                    orphans_deleted = True
            await asyncio.sleep(GONE_POLL_S)
        return False

    # Pods

    async def pods_of(self, job: str) -> list[client.V1Pod]:
        found = await self.core.list_namespaced_pod(self.namespace, label_selector=f"{JOB_NAME_LABEL}={job}")
        return list(found.items or [])

    async def pod_of(self, job: str) -> client.V1Pod | None:
        """The Job's pod (backoffLimit 0: at most one; the newest should a controller ever make another)."""
        pods = await self.pods_of(job)
        if not pods:
            return None
        return max(pods, key=lambda p: p.metadata.creation_timestamp or 0)

    async def delete_pod(self, name: str) -> None:
        try:
            await self.core.delete_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise

    async def follow_log(self, pod: str, *, since_seconds: int | None,
                         container: str = AGENT_CONTAINER) -> AsyncIterator[str]:
        """The container's log lines with their kubelet timestamps, as they come, until the container ends, the
        stream drops, or LOG_STREAM_S passes. ApiException 400 while the container has not started."""
        kwargs: dict[str, Any] = {"container": container, "follow": True, "timestamps": True,
                                  "_preload_content": False,
                                  "_request_timeout": aiohttp.ClientTimeout(total=LOG_STREAM_S, sock_connect=30)}
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        response = await self.core.read_namespaced_pod_log(pod, self.namespace, **kwargs)
        buffer = b""
        try:
            async for chunk in response.content.iter_any():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_PENDING_BYTES:  # a line with no end in sight: what came of it so far
                    complete.append(buffer)
                    buffer = b""
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace")
            if buffer:
                yield buffer.decode("utf-8", errors="replace")
        finally:
            response.release()

    async def read_log(self, pod: str, container: str) -> str:
        """A finished container's whole log."""
        text: str = await self.core.read_namespaced_pod_log(pod, self.namespace, container=container)
        return text

    # Workspace claims

    async def create_claim(self, body: dict[str, Any]) -> None:
        try:
            await self.core.create_namespaced_persistent_volume_claim(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # already there: a seed done again after a restart
                raise

    async def delete_claim(self, name: str) -> None:
        try:
            await self.core.delete_namespaced_persistent_volume_claim(name, self.namespace)
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise
