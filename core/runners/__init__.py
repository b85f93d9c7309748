"""Runners execute agent CLIs. The `Runner` port is what core.tasks drives; `local` (core.runners.local) is the
embedded implementation (a child process group per turn on this machine); remote engines live in
adapters/runners/ (Kubernetes Jobs, Docker or Podman containers) and are chosen by SHEPHERD_RUNNER.

A runner's *unit* is what one turn runs in: a process group locally, a Job on Kubernetes, an exec in the task's
container on Docker. A remote runner keeps each task's workspace in the engine (a volume); Shepherd keeps its own
copy on the worker (`workspace_root/<task>`), where it prepares the clone, counts the diff, commits and pushes
(tokens stay in Shepherd): `seed` hands Shepherd's copy to the engine before the first turn, `collect` brings the
agent's work tree back after each turn (core.runners.mirror applies it).
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
    LOST = "lost"  # a remote unit that vanished without an outcome Shepherd could read (deleted by hand, evicted)


@dataclass(frozen=True)
class Capabilities:
    """What a runner can do beyond start, stream, stop and exit: checked in core before a control is accepted."""

    pause: bool = True  # freeze a running turn and continue it later
    reconnect: bool = False  # a turn outlives a Shepherd restart and is found again (`attach`)
    remote: bool = False  # the workspace lives in the engine: `seed` and `collect` move it
    # the unit can show the workspace at a path of Shepherd's choosing (a container's mount, a sandbox's bind): a
    # coding container's agent sees it at its workspacePath; otherwise at the runner's own place (issue 19)
    mounts: bool = False
    why_no_pause: str = ""  # said to people when pause is refused (409)


@dataclass(frozen=True)
class RunSpec:
    """One turn of an agent: what to execute, where, with which environment and limits."""

    argv: Sequence[str]
    cwd: Path  # the workspace as the unit sees it (a local path, or the volume's mount path in a container)
    env: Mapping[str, str]
    idle_timeout: float
    hard_timeout: float
    sandbox: SandboxView | None = None  # run through bubblewrap, showing this much of the host (local only)
    program: Sequence[str] = field(default_factory=tuple)  # the command's own words (configuration, not prompts)
    # who the unit belongs to: labels on remote objects, and how a unit is found again after a restart
    task_id: str = ""
    org_id: str = ""
    turn: int = 0  # 1 for the first turn
    runtime: str = ""  # the agent preset's name (claude, codex, demo, ...): a remote runner picks its image by it


@dataclass(frozen=True)
class RunExit:
    reason: ExitReason
    exit_code: int | None
    duration_s: float  # wall time minus time spent paused


@dataclass(frozen=True)
class Seed:
    """What a remote workspace starts from: Shepherd's prepared copy of it (a git repository at the task's base
    commit on its work branch). A runner with an init step may clone `source` itself instead (with `credential`,
    a short-lived token that only that step sees); the copy at `local` is the fallback and the truth."""

    task_id: str
    org_id: str
    local: Path
    work_branch: str
    base_sha: str
    source: str | None = None  # the repository's URL as checked by core.runners.repos (None: an empty workspace)
    base_branch: str | None = None
    credential: Mapping[str, str] = field(default_factory=dict)  # git's environment for that clone, short-lived


class RunHandle(Protocol):
    pid: int  # the local process group's id; 0 for a remote unit
    unit: str  # how the runner finds this unit again (the pid as text, a Job's name, a container's exec)

    def lines(self) -> AsyncIterator[str]:
        """Output lines (stdout and stderr together) until the unit is gone."""
        ...

    def batches(self) -> AsyncIterator[list[str]]:
        """The same lines, a list at a time as they were read (what one read of the output gave): a turn handles a
        read's lines together, not a step of the event loop per line."""
        ...

    async def wait(self) -> RunExit: ...

    async def stop(self) -> None:
        """End the unit and everything it started. Returns when none of it is left."""
        ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    def keep_alive(self) -> None:
        """The agent is silent for a reason Shepherd knows (it waits for people): not idle."""
        ...

    async def detach(self) -> None:
        """Stop following the unit without ending it (Shepherd stops; a remote unit goes on and is found again)."""
        ...


class Runner(Protocol):
    kind: str  # "local", "kubernetes", "docker": stored with each running turn
    capabilities: Capabilities

    def workspace_path(self, local: Path) -> Path:
        """Where the unit sees the task's workspace whose Shepherd copy is `local`."""
        ...

    async def ready(self) -> str | None:
        """None when turns can start now; else why not (the engine unreachable, a required sandbox weak): shown by
        `shepherd doctor`, and what routes that need a runner answer 503 with."""
        ...

    async def start(self, spec: RunSpec) -> RunHandle: ...

    async def attach(self, unit: str, spec: RunSpec, *, since_s: float) -> RunHandle | None:
        """Follow a unit started before this process began (`reconnect`): its lines from `since_s` (epoch seconds)
        on, then its real exit. None when the engine no longer knows it."""
        ...

    async def seed(self, seed: Seed) -> None:
        """Before a task's first turn: make its workspace in the engine from `seed` (nothing to do locally)."""
        ...

    async def collect(self, task_id: str, local: Path) -> None:
        """After a turn: make the work tree of Shepherd's copy at `local` what the agent left in the engine's
        workspace (its .git stays Shepherd's). Nothing to do locally."""
        ...

    async def discard(self, task_id: str) -> None:
        """The task's workspace is removed: remove what the engine keeps for it (volume, container)."""
        ...
