"""Which runner this process drives its agents' turns with (SHEPHERD_RUNNER), and what the rest of the process
must know of it. The remote runners live in adapters/runners/ and are imported only when chosen: a Shepherd on the
local runner needs no Kubernetes or Docker client."""

from __future__ import annotations

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


def capabilities(kind: str) -> Capabilities:
    """What the configured runner can do, known to every process (a web replica refuses a pause on Kubernetes too)."""
    found: Capabilities = runner_class(kind).capabilities
    return found


async def make_runner(settings: Settings) -> Runner:
    if settings.runner == "local":
        return LocalRunner()
    made: Runner = await runner_class(settings.runner).from_settings(settings)
    return made
