"""Which runner this process drives its agents' turns with (SHEPHERD_RUNNER), and what the rest of the process
must know of it. The remote runners live in adapters/runners/ and are imported only when chosen: a Shepherd on the
local runner needs no Kubernetes or Docker client."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from core.runners import Capabilities, Runner
from core.runners.local import LocalRunner

if TYPE_CHECKING:
    from bot.settings import Settings

RUNNERS = ("local", "kubernetes", "docker")


def runner_class(kind: str) -> Any:
    if kind == "kubernetes":
        from adapters.runners.kubernetes import KubernetesRunner

        return KubernetesRunner
    if kind == "docker":
        from adapters.runners.docker import DockerRunner

        return DockerRunner
    return LocalRunner


def capabilities(kind: str, *, sandbox: bool = False) -> Capabilities:
    """What the configured runner can do, known to every process (a web replica refuses a pause on Kubernetes too;
    it says where a coding container's agent sees its workspace: the local runner binds it there only sandboxed)."""
    found: Capabilities = runner_class(kind).capabilities
    return replace(found, mounts=True) if kind == "local" and sandbox else found


async def make_runner(settings: Settings) -> Runner:
    if settings.runner == "local":
        return LocalRunner(settings.sandbox_view() if settings.sandbox else None, nice=settings.agent_nice)
    made: Runner = await runner_class(settings.runner).from_settings(settings)
    return made
