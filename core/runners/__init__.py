"""Runners execute agent CLIs. The `Runner` port is what core.tasks.supervisor drives; `local` is the
embedded implementation (a child process group per run); remote engines (Coder, Kubernetes) come later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.runners.sandbox import SandboxView


class ExitReason(StrEnum):
    EXITED = "exited"  # the agent ended its turn by itself; see the exit code
    IDLE_TIMEOUT = "idle_timeout"
    HARD_TIMEOUT = "hard_timeout"
    STOPPED = "stopped"  # someone asked: stop, delete, or the runner shutting down


@dataclass(frozen=True)
class RunSpec:
    """One turn of an agent: what to execute, where, with which environment and limits."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    idle_timeout: float
    hard_timeout: float
    sandbox: SandboxView | None = None  # run through bubblewrap, showing this much of the host
    program: Sequence[str] = field(default_factory=tuple)  # the command's own words (configuration, not prompts)


@dataclass(frozen=True)
class RunExit:
    reason: ExitReason
    exit_code: int | None
    duration_s: float  # wall time minus time spent paused


class RunHandle(Protocol):
    pid: int

    def lines(self) -> AsyncIterator[str]:
        """Output lines (stdout and stderr together) until the process group is gone."""
        ...

    async def wait(self) -> RunExit: ...

    async def stop(self) -> None:
        """End the whole process group: TERM, a grace period, then KILL. Returns when none is left."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def keep_alive(self) -> None:
        """The agent is silent for a reason Shepherd knows (it waits for people): not idle."""
        ...


class Runner(Protocol):
    async def start(self, spec: RunSpec) -> RunHandle: ...
