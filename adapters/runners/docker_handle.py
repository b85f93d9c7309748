"""One turn's container, followed: its log as lines, Shepherd's idle and hard timeouts, pause, stop, its exit.

The turn's output is the container's log, read with `follow` (and `since` when a restarted Shepherd attaches
again); the log ends when the container stops, and the exit code is the engine's (`wait`). Stop sends TERM,
then KILL after a grace period: every process of the container dies with it (its own PID namespace), and the
container is removed, so nothing of the turn is left. A turn that ended by itself is removed too, once its exit
code is read; one that ended while Shepherd was away stays until a restarted Shepherd attaches and reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime

import aiodocker
from aiodocker.containers import DockerContainer

from core.runners import ExitReason, RunExit, RunSpec
from core.runners.clock import TurnClock
from core.runners.local import LineSplitter

STOP_GRACE_S = 3.0
GONE = (404,)  # the engine no longer knows the container


def started_at(state: dict[str, object]) -> float | None:
    """The epoch seconds of a container's State.StartedAt (RFC 3339 with nanoseconds), None when unknown."""
    text = str(state.get("StartedAt") or "")
    if not text or text.startswith("0001-"):
        return None
    head, _, rest = text.partition(".")
    zone = ""
    if rest:
        digits = rest.rstrip("Z")
        for mark in ("+", "-"):
            if mark in digits:
                digits, _, offset = digits.partition(mark)
                zone = mark + offset
        head += "." + digits[:6]
    else:
        head, zone = head.rstrip("Z"), ""
    try:
        return datetime.fromisoformat(head + (zone or "+00:00")).timestamp()
    except ValueError:
        return None


class DockerHandle:
    """A turn container being followed; `since` is where its log is read from (None: from its start)."""

    def __init__(self, docker: aiodocker.Docker, container: DockerContainer, unit: str, spec: RunSpec, *,
                 since: float | None = None, ran_s: float = 0.0, paused: bool = False) -> None:
        self.pid = 0
        self.unit = unit
        self.spec = spec
        self._docker = docker
        self._container = container
        self._since = since
        self._lines: asyncio.Queue[list[str] | None] = asyncio.Queue()
        # a turn found again after a restart has run for a while already, and may be paused
        self.clock = TurnClock(idle_s=spec.idle_timeout, hard_s=spec.hard_timeout, ran_s=ran_s, paused=paused)
        self._reason: ExitReason | None = None
        self._detached = False
        self._reader = asyncio.create_task(self._read())
        self._watchdog = asyncio.create_task(self._watch())
        self._done = asyncio.create_task(self._finish())

    @property
    def paused(self) -> bool:
        return self.clock.paused

    async def _read(self) -> None:
        if self._since is None:
            stream = self._container.log(stdout=True, stderr=True, follow=True)
        else:  # Docker reads `since` as seconds.nanoseconds
            stream = self._container.log(stdout=True, stderr=True, follow=True, since=f"{self._since:.9f}")
        splitter = LineSplitter()
        try:
            async for chunk in stream:
                self.clock.output()
                if read := splitter.feed(chunk.encode()):
                    self._lines.put_nowait(read)
            if read := splitter.rest():
                self._lines.put_nowait(read)
        except aiodocker.DockerError as exc:
            if exc.status not in GONE:
                raise
        finally:
            self._lines.put_nowait(None)

    async def _watch(self) -> None:
        reason = await self.clock.watch()
        self._reason = self._reason or reason
        await self._kill()

    async def _exit_code(self) -> int | None:
        """The container's exit code once it stopped (None: it is gone, nobody can say how it ended)."""
        try:
            answer = await self._container.wait()
        except aiodocker.DockerError as exc:
            if exc.status in GONE:
                return None
            raise
        code = answer.get("StatusCode")
        return int(code) if isinstance(code, int) else None

    async def _finish(self) -> RunExit:
        await asyncio.wait({self._reader})  # the log ends when the container stops (or on detach)
        if self._detached:
            return RunExit(reason=ExitReason.LOST, exit_code=None, duration_s=self.clock.running())
        code = await self._exit_code()
        end = time.monotonic()
        self._watchdog.cancel()
        await self._remove()
        reason = self._reason or (ExitReason.EXITED if code is not None else ExitReason.LOST)
        return RunExit(reason=reason, exit_code=code, duration_s=self.clock.running(end))

    async def _remove(self) -> None:
        with contextlib.suppress(aiodocker.DockerError):
            await self._container.delete(force=True)

    async def _signal(self, signal: str) -> None:
        with contextlib.suppress(aiodocker.DockerError):  # 409: it stopped meanwhile; 404: it is gone
            await self._container.kill(signal=signal)

    async def _kill(self) -> None:
        if self.paused:
            # a frozen container cannot act on TERM (and some engines refuse to signal it)
            with contextlib.suppress(aiodocker.DockerError):
                await self._container.unpause()
            self.clock.resume()
        await self._signal("SIGTERM")
        await asyncio.wait({self._reader}, timeout=STOP_GRACE_S)  # its log ends when it stopped
        await self._signal("SIGKILL")

    async def lines(self) -> AsyncIterator[str]:
        async for read in self.batches():
            for line in read:
                yield line

    async def batches(self) -> AsyncIterator[list[str]]:
        while (read := await self._lines.get()) is not None:
            yield read

    async def wait(self) -> RunExit:
        return await asyncio.shield(self._done)

    async def stop(self) -> None:
        if self._done.done():
            return
        self._reason = self._reason or ExitReason.STOPPED
        await self._kill()
        await asyncio.shield(self._done)  # the container is removed: nothing of the turn is left

    async def pause(self) -> None:
        if not self.paused and not self._done.done():
            await self._container.pause()
            self.clock.pause()

    async def resume(self) -> None:
        if self.paused:
            await self._container.unpause()
            self.clock.resume()

    def keep_alive(self) -> None:
        self.clock.output()

    async def detach(self) -> None:
        """Stop following; the container goes on, and a restarted Shepherd finds it by `unit`."""
        if self._done.done():
            return
        self._detached = True
        self._watchdog.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._done
