"""Background services: what `worker` runs, and `serve` runs beside the web server.

Later issues add the task runner, the outbox dispatcher and the scheduler here; each is an object with
async start() and stop(), started in order and stopped in reverse.
"""

from __future__ import annotations

import logging
from typing import Protocol

from core.service import Shepherd

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Worker:
    def __init__(self, shepherd: Shepherd, services: list[Service] | None = None) -> None:
        self.shepherd = shepherd
        self.services = services or []
        self._started: list[Service] = []

    async def start(self) -> None:
        for service in self.services:
            await service.start()
            self._started.append(service)
        names = ", ".join(s.name for s in self._started) or "none yet"
        log.info("background services started: %s", names)

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
