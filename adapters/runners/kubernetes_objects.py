"""The objects the Kubernetes runner sends, built without I/O: a task's workspace claim, a turn's Job, the helper
Job that reads a workspace back. Each is a plain dict in the API's JSON shape (what `kubectl get -o json` shows),
so a test reads exactly what the engine is given.

Every pod runs as a fixed non-root uid with no privilege escalation, no capability, the runtime's seccomp
profile, no service-account token, no service links (Kubernetes would otherwise put `<SERVICE>_PORT`-style
variables of every service in the namespace into the agent's environment), and a read-only root filesystem
unless the agent's preset needs a writable one; /tmp and the home directory are emptyDirs of the pod.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.runners import RunSpec, Seed

WORKSPACE = "/workspace"  # where every pod of a task sees its workspace claim
HOME = "/home/agent"  # an emptyDir: agents keep caches and settings in their home
TMP = "/tmp"
AGENT_CONTAINER = "agent"
INIT_CONTAINER = "seed"
COLLECT_CONTAINER = "collect"
MANAGED_BY = "app.kubernetes.io/managed-by"
ORG_LABEL = "shepherd.dev/org"
TASK_LABEL = "shepherd.dev/task"
TURN_LABEL = "shepherd.dev/turn"
ROLE_LABEL = "shepherd.dev/role"  # turn, or collect (the helper Job reading a workspace back)
JOB_NAME_LABEL = "job-name"  # set by the Job controller on each of the Job's pods
MANAGER = "shepherd"
NAME_MAX = 63  # a DNS label: Job names end up in the pods' `job-name` label
LABEL_MAX = 63
COLLECT_DEADLINE_S = 300
COLLECT_BEGIN = "shepherd-collect-begin"
COLLECT_END = "shepherd-collect-end"
# A workspace made without a clone (Seed.source None) travels to the init container in its environment: a pod's
# spec must stay well under etcd's 1.5 MiB object limit.
MAX_SEED_ARCHIVE_BYTES = 512 * 1024
# ...in parts: Linux refuses to start a process with any one environment string over 128 KiB (MAX_ARG_STRLEN)
SEED_PART_CHARS = 96 * 1024
# Values of the environment that make sense only on Shepherd's host: the image has its own PATH, and HOME is the
# pod's own emptyDir.
HOST_ONLY_ENV = ("PATH", "HOME", "TMPDIR")

_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class KubeSettings:
    """What the runner is configured with (bot.settings' SHEPHERD_K8S_* block)."""

    namespace: str = "default"
    image: str = "shepherd-agent:latest"
    images: Mapping[str, str] = field(default_factory=dict)  # preset name -> image
    storage_class: str | None = None
    workspace_size: str = "10Gi"
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"
    uid: int = 1000
    job_ttl_s: int = 3600
    deadline_grace_s: int = 60
    writable_root: frozenset[str] = frozenset()  # presets whose agent writes outside its home, /tmp and workspace

    def image_for(self, runtime: str) -> str:
        return self.images.get(runtime, self.image)


def parse_images(text: str) -> dict[str, str]:
    """`claude=ghcr.io/x/claude:1,codex=ghcr.io/x/codex:2` as a mapping; a ValueError names a bad entry."""
    images: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, image = entry.partition("=")
        if not sep or not name.strip() or not image.strip() or any(c.isspace() for c in image.strip()):
            raise ValueError(f"{entry!r}: each entry is <preset>=<image>, e.g. claude=ghcr.io/acme/claude:1")
        images[name.strip()] = image.strip()
    return images


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def label_value(text: str) -> str:
    """`text` as a label value (63 characters of letters, digits, `-_.`, alphanumeric at both ends); a value that
    had to change keeps a digest of the original so two tasks never share one."""
    cleaned = _LABEL_UNSAFE.sub("-", text).strip("-_.")
    if cleaned == text and len(text) <= LABEL_MAX:
        return text
    return f"{cleaned[:LABEL_MAX - 9].rstrip('-_.')}-{_digest(text)}".lstrip("-")


def dns_name(*parts: str, suffix: str = "") -> str:
    """A DNS-1123 label from `parts` (lower case, digits, `-`), at most 63 characters with `suffix` kept whole."""
    base = _NAME_UNSAFE.sub("-", "-".join(parts).lower()).strip("-")
    room = NAME_MAX - (len(suffix) + 1 if suffix else 0)
    if len(base) > room:
        base = f"{base[:room - 9].rstrip('-')}-{_digest(base)}"
    return f"{base}-{suffix}" if suffix else base


def claim_name(task_id: str) -> str:
    return dns_name("shepherd-ws", task_id)


def job_name(task_id: str, turn: int) -> str:
    """A new name per Job: a turn started again (a retry) must not meet the Job of its first try."""
    return dns_name("shepherd", task_id, str(turn), suffix=secrets.token_hex(3))


def collect_job_name(task_id: str) -> str:
    return dns_name("shepherd-collect", task_id, suffix=secrets.token_hex(3))


def task_labels(org_id: str, task_id: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, ORG_LABEL: label_value(org_id or "none"), TASK_LABEL: label_value(task_id)}


def task_selector(task_id: str) -> str:
    return f"{MANAGED_BY}={MANAGER},{TASK_LABEL}={label_value(task_id)}"


def claim(settings: KubeSettings, *, task_id: str, org_id: str) -> dict[str, Any]:
    """The task's workspace: one claim, shared by all its turns (ReadWriteOnce: one turn's pod at a time)."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": settings.workspace_size}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name(task_id), "labels": task_labels(org_id, task_id)},
        "spec": spec,
    }


def _container_security(read_only_root: bool) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(settings: KubeSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.uid,
        "runAsGroup": settings.uid,
        "fsGroup": settings.uid,  # the workspace claim is writable by the agent's uid
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(settings: KubeSettings) -> dict[str, Any]:
    return {
        "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
        "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
    }


def _mounts(*, workspace_read_only: bool = False, workspace_at: str = WORKSPACE) -> list[dict[str, Any]]:
    return [
        {"name": "workspace", "mountPath": workspace_at, "readOnly": workspace_read_only},
        {"name": "tmp", "mountPath": TMP},
        {"name": "home", "mountPath": HOME},
    ]


def _volumes(task_id: str) -> list[dict[str, Any]]:
    return [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(task_id)}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
    ]


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def agent_env(spec_env: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment in its pod: core's allowlist exactly, less the host's PATH (the image has its own)
    and HOME/TMPDIR (the pod's own emptyDirs, set here)."""
    env = {name: value for name, value in spec_env.items() if name not in HOST_ONLY_ENV}
    env.update({"HOME": HOME, "TMPDIR": TMP})
    return env


def deadline_s(hard_timeout: float, grace_s: int) -> int:
    """The Job's activeDeadlineSeconds: the turn's hard timeout (Shepherd's watchdog reports it) plus a grace for
    the pod's start, so the engine ends a turn Shepherd no longer watches."""
    return max(1, math.ceil(hard_timeout)) + grace_s


SEED_SCRIPT = f"""set -eu
cd {WORKSPACE}
if [ -e .git ]; then echo "shepherd: the workspace is already there"; exit 0; fi
if [ -n "${{SEED_PARTS:-}}" ]; then
  i=0
  while [ "$i" -lt "$SEED_PARTS" ]; do eval "printf '%s' \\"\\$SEED_ARCHIVE_$i\\""; i=$((i + 1)); done \
    | base64 -d | tar -xzf - -C {WORKSPACE}
  echo "shepherd: workspace unpacked"
  exit 0
fi
git init -q .
git fetch -q --no-tags "$SEED_SOURCE" "$SEED_REF"
git cat-file -e "$SEED_SHA^{{commit}}" 2>/dev/null || git fetch -q --no-tags "$SEED_SOURCE" "$SEED_SHA"
git checkout -q -b "$SEED_BRANCH" "$SEED_SHA"
git remote add origin "$SEED_SOURCE"
echo "shepherd: cloned at $SEED_SHA"
"""


def seed_env(seed: Seed, archive: bytes | None) -> dict[str, str]:
    """The init container's environment: where to clone from and the clone's short-lived credential (git's own
    variables: GIT_CONFIG_COUNT/KEY/VALUE), or the workspace itself when there is nothing to clone (base64, in
    SEED_PARTS variables SEED_ARCHIVE_<n>)."""
    env = {"HOME": HOME, "TMPDIR": TMP, "SEED_BRANCH": seed.work_branch, "SEED_SHA": seed.base_sha}
    if seed.source is None:
        text = base64.b64encode(archive or b"").decode()
        parts = [text[i:i + SEED_PART_CHARS] for i in range(0, len(text), SEED_PART_CHARS)] or [""]
        env["SEED_PARTS"] = str(len(parts))
        env.update({f"SEED_ARCHIVE_{n}": part for n, part in enumerate(parts)})
        return env
    env.update({"SEED_SOURCE": seed.source, "GIT_TERMINAL_PROMPT": "0",
                "SEED_REF": f"refs/heads/{seed.base_branch}" if seed.base_branch else "HEAD"})
    env.update(seed.credential)
    return env


def _pod(settings: KubeSettings, *, task_id: str, containers: list[dict[str, Any]],
         init: list[dict[str, Any]] | None, deadline: int) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(settings),
        "activeDeadlineSeconds": deadline,
        "containers": containers,
        "volumes": _volumes(task_id),
    }
    if init:
        pod["initContainers"] = init
    return pod


def turn_job(settings: KubeSettings, spec: RunSpec, *, name: str, seed: Seed | None = None,
             archive: bytes | None = None) -> dict[str, Any]:
    """One turn of the agent: `spec.argv` in the preset's image on the task's claim. With `seed` (the task's first
    turn), an init container makes the workspace first; it alone sees the clone's credential."""
    labels = {**task_labels(spec.org_id, spec.task_id), TURN_LABEL: str(spec.turn), ROLE_LABEL: "turn"}
    image = settings.image_for(spec.runtime)
    read_only = spec.runtime not in settings.writable_root
    agent = {
        "name": AGENT_CONTAINER,
        "image": image,
        "command": list(spec.argv[:1]),
        "args": list(spec.argv[1:]),
        "workingDir": str(spec.cwd),
        "env": _env(agent_env(spec.env)),
        "resources": _resources(settings),
        "securityContext": _container_security(read_only),
        # the claim where the agent is to see it: /workspace, or a coding container's workspacePath (issue 19); the
        # init and collect steps keep /workspace
        "volumeMounts": _mounts(workspace_at=str(spec.cwd)),
    }
    init = None
    if seed is not None:
        init = [{
            "name": INIT_CONTAINER,
            "image": image,
            "command": ["sh", "-c", SEED_SCRIPT],
            "workingDir": WORKSPACE,
            "env": _env(seed_env(seed, archive)),
            "resources": _resources(settings),
            "securityContext": _container_security(True),
            "volumeMounts": _mounts(),
        }]
    deadline = deadline_s(spec.hard_timeout, settings.deadline_grace_s)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a failed turn is Shepherd's to judge, never run twice by the engine
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": settings.job_ttl_s,
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod(settings, task_id=spec.task_id, containers=[agent], init=init, deadline=deadline),
            },
        },
    }


# What git would track (ignored files left out: dependencies and build output would overflow the log the archive
# travels on); a work tree git cannot list (no repository left, a broken one) goes whole, but for .git.
COLLECT_SCRIPT = f"""set -eu
cd {WORKSPACE}
if git -c safe.directory='*' ls-files -z --cached --others --exclude-standard > {TMP}/files 2>/dev/null; then
  tar -czf {TMP}/workspace.tgz --ignore-failed-read --null -T {TMP}/files
else
  tar -czf {TMP}/workspace.tgz --exclude=./.git .
fi
echo "{COLLECT_BEGIN} $(wc -c < {TMP}/workspace.tgz)"
base64 {TMP}/workspace.tgz
echo "{COLLECT_END}"
"""


def collect_job(settings: KubeSettings, *, task_id: str, org_id: str, name: str, image: str) -> dict[str, Any]:
    """A short helper Job printing the work tree of the task's claim (a gzip'd tar, base64) on its log; it mounts
    the claim read-only and has no environment of Shepherd's at all."""
    labels = {**task_labels(org_id, task_id), ROLE_LABEL: "collect"}
    container = {
        "name": COLLECT_CONTAINER,
        "image": image,
        "command": ["sh", "-c", COLLECT_SCRIPT],
        "workingDir": WORKSPACE,
        "env": _env({"HOME": HOME, "TMPDIR": TMP}),
        "resources": _resources(settings),
        "securityContext": _container_security(True),
        "volumeMounts": _mounts(workspace_read_only=True),
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": COLLECT_DEADLINE_S,
            "ttlSecondsAfterFinished": settings.job_ttl_s,
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod(settings, task_id=task_id, containers=[container], init=None,
                             deadline=COLLECT_DEADLINE_S),
            },
        },
    }


def collected_archive(log: str) -> bytes:
    """The tar the collect Job printed; a ValueError when its log is cut (a kubelet's log rotation) or garbled."""
    lines = log.splitlines()
    try:
        begin = next(i for i, line in enumerate(lines) if line.startswith(COLLECT_BEGIN + " "))
        end = next(i for i in range(len(lines) - 1, begin, -1) if lines[i].strip() == COLLECT_END)
    except StopIteration:
        raise ValueError("the workspace's archive is incomplete in the helper's log") from None
    size = int(lines[begin].split()[1])
    data = base64.b64decode("".join(lines[begin + 1:end]), validate=True)
    if len(data) != size:
        raise ValueError(f"the workspace's archive is {len(data)} bytes of {size} in the helper's log")
    return data
