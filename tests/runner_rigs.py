"""One rig per runner for the runner contract suite (tests/test_runner_contract.py): the runner under test, where
Shepherd's copies of workspaces live, and what the engine can tell about a task's units. Each remote rig drives its
real client library against a loopback fake of the engine (tests/fakes/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from core.runners import Runner
from core.runners.local import LocalRunner


class Rig(Protocol):
    runner: Runner
    workspace_root: Path

    async def new_runner(self) -> Runner:
        """A fresh runner on the same engine, as after a Shepherd restart."""
        ...

    async def leftovers(self, task_id: str) -> list[str]:
        """What of the task's units still runs in the engine."""
        ...

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        """The environment the engine was given for the task's latest unit (None: no engine records it)."""
        ...

    async def close(self) -> None: ...


def processes_of(task_id: str) -> list[str]:
    """Live processes on this host whose environment names the task (every unit's does: SHEPHERD_TASK_ID)."""
    marker = f"SHEPHERD_TASK_ID={task_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in environ.split(b"\0") and state[state.rfind(")") + 2:][:1] != "Z":
            found.append(entry.name)
    return found


class LocalRig:
    def __init__(self, root: Path) -> None:
        self.runner: Runner = LocalRunner()
        self.workspace_root = root

    async def new_runner(self) -> Runner:
        return LocalRunner()

    async def leftovers(self, task_id: str) -> list[str]:
        return [pid for pid in processes_of(task_id) if int(pid) != os.getpid()]

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        return None

    async def close(self) -> None:
        return None


async def make_local_rig(root: Path) -> Rig:
    return LocalRig(root)


async def make_kubernetes_rig(root: Path) -> Rig:
    from tests.kubernetes_rig import make_kubernetes_rig as make  # the real client against the loopback fake

    return await make(root)


RIGS = {"local": make_local_rig, "kubernetes": make_kubernetes_rig}
