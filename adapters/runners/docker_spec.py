"""What the Docker runner asks the engine for, as data: names, labels and container configurations.

No I/O here, so the shapes (limits, no network, no privilege, the task's volume, labels) are checked without an
engine. A task has one *workspace* container (it holds the task's named volume and serves the archive API that
seeds and collects it; it only sleeps) and one *turn* container per turn, on the same volume.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.runners import RunSpec

MOUNT_PATH = "/workspace"  # where a task's containers see its workspace volume (a turn's: at spec.cwd, this default)
MANAGED_BY = "app.kubernetes.io/managed-by"
ORG = "shepherd.dev/org"
TASK = "shepherd.dev/task"
TURN = "shepherd.dev/turn"
ROLE = "shepherd.dev/role"  # "workspace" (the task's holder) or "turn"
ROLE_WORKSPACE = "workspace"
ROLE_TURN = "turn"
SHEPHERD = "shepherd"
_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class DockerConfig:
    """The settings a DockerRunner runs with (bot/settings.py: SHEPHERD_DOCKER_*)."""

    image: str = "shepherd-agent:latest"
    images: Mapping[str, str] = field(default_factory=dict)  # preset name -> image
    network: str = "none"
    networks: Mapping[str, str] = field(default_factory=dict)  # preset name -> network, for presets that need one
    cpus: float = 2.0
    memory_bytes: int = 4 * 1024**3
    pids_limit: int = 1024
    user: str = "1000:1000"  # uid:gid, never root

    def image_for(self, runtime: str) -> str:
        return self.images.get(runtime, self.image)

    def network_for(self, runtime: str) -> str:
        return self.networks.get(runtime, self.network)

    def owner(self) -> tuple[int, int]:
        """The uid and gid the workspace's files belong to, so the agent's non-root user can change them."""
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def parse_memory(text: str) -> int:
    """'4g', '512m', '2GiB', or bytes, as bytes."""
    match = _MEMORY.match(text)
    if not match:
        raise ValueError(f"not a memory size: {text!r} (e.g. 512m, 4g)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _safe(task_id: str) -> str:
    """A task id as a Docker name part (names allow [a-zA-Z0-9_.-]); a hash keeps two ids that clean to the same
    text apart."""
    cleaned = _NAME_SAFE.sub("-", task_id)[:60] or "task"
    if cleaned != task_id:
        cleaned += "-" + hashlib.sha256(task_id.encode()).hexdigest()[:8]
    return cleaned


def volume_name(task_id: str) -> str:
    return f"shepherd-ws-{_safe(task_id)}"


def workspace_name(task_id: str) -> str:
    return f"shepherd-{_safe(task_id)}"


def turn_name(task_id: str, turn: int, nonce: str) -> str:
    # the nonce: a turn started again after a restart that did not find the old one must not collide with it
    return f"shepherd-{_safe(task_id)}-t{turn}-{nonce}"


def labels(*, org_id: str, task_id: str, turn: int, role: str) -> dict[str, str]:
    return {MANAGED_BY: SHEPHERD, ORG: org_id, TASK: task_id, TURN: str(turn), ROLE: role}


def _host_config(config: DockerConfig, *, volume: str, network: str, target: str = MOUNT_PATH) -> dict[str, Any]:
    return {
        "NetworkMode": network,
        "NanoCpus": int(config.cpus * 1e9),
        "Memory": config.memory_bytes,
        "MemorySwap": config.memory_bytes,  # no swap beyond the memory limit
        "PidsLimit": config.pids_limit,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Privileged": False,
        "RestartPolicy": {"Name": "no"},
        "Mounts": [{"Type": "volume", "Source": volume, "Target": target}],
    }


def workspace_container(config: DockerConfig, *, task_id: str, org_id: str) -> dict[str, Any]:
    """The task's holder: it keeps the volume attached and answers the archive API; it runs nothing of the
    agent's, and has no network whatever the presets need."""
    return {
        "Image": config.image,
        "Entrypoint": ["sleep"],
        "Cmd": ["infinity"],
        "Env": [],
        "User": config.user,
        "WorkingDir": MOUNT_PATH,
        "Labels": labels(org_id=org_id, task_id=task_id, turn=0, role=ROLE_WORKSPACE),
        "Tty": False,
        "OpenStdin": False,
        "HostConfig": _host_config(config, volume=volume_name(task_id), network="none"),
    }


def turn_container(config: DockerConfig, spec: RunSpec) -> dict[str, Any]:
    """One turn: the agent's argv as given (the image's entrypoint is replaced, so nothing runs before it), its
    environment exactly `spec.env` (core's allowlist; nothing of Shepherd's is added), its output in the
    container's log (which outlives Shepherd, so a restarted Shepherd follows it from where it stopped)."""
    argv = list(spec.argv)
    return {
        "Image": config.image_for(spec.runtime),
        "Entrypoint": argv[:1],
        "Cmd": argv[1:],
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "User": config.user,
        "WorkingDir": str(spec.cwd),
        "Labels": labels(org_id=spec.org_id, task_id=spec.task_id, turn=spec.turn, role=ROLE_TURN),
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        # the volume where the agent is to see it: /workspace, or a coding container's workspacePath (issue 19)
        "HostConfig": _host_config(config, volume=volume_name(spec.task_id), network=config.network_for(spec.runtime),
                                   target=str(spec.cwd)),
    }
