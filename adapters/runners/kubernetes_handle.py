"""One turn running as a Kubernetes Job: its lines from the pod's log, its watchdog, its real outcome.

The log is followed from `pods/log?follow=true`; a stream that drops while the agent runs is opened again from
where it ended (kubelet timestamps: see kubernetes_logs). The idle timeout is Shepherd's (engines have none);
the hard timeout is the engine's (the Job's activeDeadlineSeconds) and Shepherd's watchdog alike, so the reason
is reported right even when the engine is late. The outcome is read from the engine: the agent container's exit
code, a Job past its deadline, or a Job that vanished (LOST).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from adapters.runners.kubernetes_api import KubeApi
from adapters.runners.kubernetes_logs import LogCursor
from adapters.runners.kubernetes_objects import AGENT_CONTAINER, INIT_CONTAINER
from core.runners import ExitReason, RunExit, RunSpec
from core.runners.clock import TurnClock
from core.runners.local import RunnerError, clean_line

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.2
POLL_MIN_S = 0.1  # waiting for the pod to start: polls back off from this...
POLL_MAX_S = 2.0  # ...to this
RECONNECT_S = 0.5
OUTCOME_TRIES = 5
STOP_WAIT_S = 120.0  # the pod's grace period and the API's foreground deletion, with room
# A pod waiting for one of these will not start by waiting longer: the turn ends now, saying why.
FATAL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                           "CreateContainerError"})
DEADLINE_EXCEEDED = "DeadlineExceeded"


def container_state(pod: client.V1Pod | None, name: str, *, init: bool = False) -> client.V1ContainerState | None:
    if pod is None or pod.status is None:
        return None
    statuses = (pod.status.init_container_statuses if init else pod.status.container_statuses) or []
    for status in statuses:
        if status.name == name:
            state: client.V1ContainerState | None = status.state
            return state
    return None


def job_deadline_exceeded(job: client.V1Job | None, pod: client.V1Pod | None) -> bool:
    conditions = (job.status.conditions or []) if job is not None and job.status is not None else []
    if any(c.type == "Failed" and c.reason == DEADLINE_EXCEEDED for c in conditions):
        return True
    return pod is not None and pod.status is not None and pod.status.reason == DEADLINE_EXCEEDED


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


class KubeHandle:
    pid = 0

    def __init__(self, api: KubeApi, job: str, spec: RunSpec, *, started_s: float | None = None,
                 since_s: float | None = None) -> None:
        self.api = api
        self.unit = job
        self.spec = spec
        # a Job found again after a restart has been running since it started, not since Shepherd looked
        ran = max(0.0, time.time() - started_s) if started_s is not None else 0.0
        self.clock = TurnClock(idle_s=spec.idle_timeout, hard_s=spec.hard_timeout, ran_s=ran)
        self._reason: ExitReason | None = None
        self._failure: str | None = None
        self._cursor = LogCursor(last_ns=int(since_s * 1e9) if since_s is not None else 0)
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._follow = asyncio.create_task(self._follow_logs())
        self._watchdog = asyncio.create_task(self._watch())
        self._done = asyncio.create_task(self._finish())

    # following

    def _put(self, text: str) -> None:
        self.clock.output()
        self._lines.put_nowait(clean_line(text.encode()))

    async def _follow_logs(self) -> None:
        try:
            await self._follow_until_gone()
        except Exception as exc:  # the client itself broke (closed): nothing more can be read of this unit
            log.error("following %s failed: %s", self.unit, exc)
        finally:
            self._lines.put_nowait(None)

    async def _job_gone(self) -> bool:
        try:
            return await self.api.read_job(self.unit) is None
        except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("reading the Job %s failed, trying again: %s", self.unit, exc)
            return False

    async def _follow_until_gone(self) -> None:
        pause = POLL_MIN_S
        streamed = False
        while True:
            pod = await self._pod_or_none()
            if pod is None:
                if await self._job_gone():
                    return  # deleted (stop, timeout, by hand): the outcome says which
                await asyncio.sleep(pause)
                pause = min(POLL_MAX_S, pause * 2)
                continue
            state = container_state(pod, AGENT_CONTAINER)
            waiting = self._fatal_waiting(pod)
            if waiting:
                self._failure = waiting
                self._put(f"shepherd: the agent's container cannot start: {waiting}")
                return
            ended = state is not None and state.terminated is not None
            if self._init_failed(pod):
                await self._show_init_log(pod.metadata.name)
                return
            if state is None or (state.running is None and not ended):
                if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                    return  # ended before its container ever ran (deadline while pending, evicted)
                await asyncio.sleep(pause)
                pause = min(POLL_MAX_S, pause * 2)
                continue
            if not streamed:
                self.clock.output()  # idle time counts from the agent's start, not the pull
                streamed = True
            name = pod.metadata.name
            await self._stream(name)
            if ended:
                return  # the stream of an ended container gave everything it had
            state = container_state(await self._pod_or_none(), AGENT_CONTAINER)
            if state is not None and state.terminated is not None:
                await self._stream(name)  # what came between the drop and the end
                return
            await asyncio.sleep(RECONNECT_S)

    async def _pod_or_none(self) -> client.V1Pod | None:
        try:
            return await self.api.pod_of(self.unit)
        except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("listing the pods of %s failed, trying again: %s", self.unit, exc)
            return None

    async def _stream(self, pod: str) -> None:
        self._cursor.restart()
        try:
            async for raw in self.api.follow_log(pod, since_seconds=self._cursor.since_seconds(time.time())):
                text = self._cursor.take(raw)
                if text is not None:
                    self._put(text)
        except ApiException as exc:
            if exc.status not in (400, 404):  # 400: not started yet; 404: the pod went
                log.warning("reading the log of %s failed: %s", pod, exc.reason)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("the log stream of %s dropped, opening it again: %s", pod, exc)

    @staticmethod
    def _fatal_waiting(pod: client.V1Pod) -> str | None:
        for init in (True, False):
            statuses = (pod.status.init_container_statuses if init else pod.status.container_statuses) or []
            for status in statuses:
                waiting = status.state.waiting if status.state is not None else None
                if waiting is not None and waiting.reason in FATAL_WAITING:
                    return f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        return None

    @staticmethod
    def _init_failed(pod: client.V1Pod) -> bool:
        state = container_state(pod, INIT_CONTAINER, init=True)
        return bool(state is not None and state.terminated is not None and state.terminated.exit_code != 0)

    async def _show_init_log(self, pod: str) -> None:
        with contextlib.suppress(ApiException, aiohttp.ClientError):
            for line in (await self.api.read_log(pod, INIT_CONTAINER)).splitlines():
                self._put(line)
        self._put("shepherd: the workspace could not be made (the init container failed)")

    # watchdog and outcome

    async def _watch(self) -> None:
        reason = await self.clock.watch(WATCH_INTERVAL_S)
        self._reason = self._reason or reason
        try:
            await self._end_unit()
        except RunnerError as exc:  # the engine's own deadline still ends it
            log.error("%s", exc.message)

    async def _end_unit(self) -> None:
        for attempt in range(OUTCOME_TRIES):
            try:
                await self.api.delete_job(self.unit)
                if not await self.api.job_gone(self.unit, within_s=STOP_WAIT_S):
                    log.warning("the Job %s is still there %.0f s after its deletion", self.unit, STOP_WAIT_S)
                return
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("deleting the Job %s failed, trying again: %s", self.unit, exc)
                await asyncio.sleep(RECONNECT_S * (attempt + 1))
        raise RunnerError(f"the Job {self.unit} could not be deleted: Kubernetes does not answer",
                          code="RUNNER_ENGINE", status=502)

    async def _finish(self) -> RunExit:
        await asyncio.shield(self._follow)
        if self._reason is not None:
            # Shepherd is ending the unit (stop, a timeout): the outcome is said once nothing of it is left
            await asyncio.wait([self._watchdog])
        else:
            self._watchdog.cancel()
        code, reason = await self._outcome()
        return RunExit(reason=self._reason or reason, exit_code=code,
                       duration_s=self.clock.running())

    async def _outcome(self) -> tuple[int | None, ExitReason]:
        if self._failure is not None:
            await self._end_unit()
            return None, ExitReason.LOST
        for attempt in range(OUTCOME_TRIES):
            try:
                pod = await self.api.pod_of(self.unit)
                job = await self.api.read_job(self.unit)
                break
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("reading the outcome of %s failed: %s", self.unit, exc)
                await asyncio.sleep(RECONNECT_S * (attempt + 1))
        else:
            return None, ExitReason.LOST
        if job_deadline_exceeded(job, pod):
            return None, ExitReason.HARD_TIMEOUT
        if pod is not None and self._init_failed(pod):
            state = container_state(pod, INIT_CONTAINER, init=True)
            return (state.terminated.exit_code if state and state.terminated else None), ExitReason.EXITED
        state = container_state(pod, AGENT_CONTAINER)
        if state is not None and state.terminated is not None:
            return state.terminated.exit_code, ExitReason.EXITED
        return None, ExitReason.LOST

    # the port

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self._lines.get()) is not None:
            yield line

    async def batches(self) -> AsyncIterator[list[str]]:
        """What the log stream gave since the last look, a list at a time."""
        while (line := await self._lines.get()) is not None:
            read = [line]
            while not self._lines.empty():
                more = self._lines.get_nowait()
                if more is None:
                    yield read
                    return
                read.append(more)
            yield read

    async def wait(self) -> RunExit:
        """The turn's outcome. After `detach` nobody follows the unit any more: waiting is cancelled."""
        return await asyncio.shield(self._done)

    async def stop(self) -> None:
        if self._done.done():
            return
        self._reason = self._reason or ExitReason.STOPPED
        self._watchdog.cancel()
        await self._end_unit()
        await asyncio.shield(self._done)

    async def pause(self) -> None:
        raise RunnerError("a turn on Kubernetes cannot be paused: Kubernetes cannot freeze a pod",
                          code="PAUSE_UNSUPPORTED", status=409)

    async def resume(self) -> None:
        raise RunnerError("a turn on Kubernetes cannot be paused: Kubernetes cannot freeze a pod",
                          code="PAUSE_UNSUPPORTED", status=409)

    def keep_alive(self) -> None:
        self.clock.output()

    async def detach(self) -> None:
        """Stop following: the Job goes on in the engine and a new runner finds it by its name."""
        for task in (self._watchdog, self._follow, self._done):
            task.cancel()
        for task in (self._watchdog, self._follow, self._done):
            with contextlib.suppress(asyncio.CancelledError):
                await task
