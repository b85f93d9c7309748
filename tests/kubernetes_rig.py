"""The Kubernetes runner's rig for the runner contract suite (tests/runner_rigs.py): a KubernetesRunner driving the
real kubernetes_asyncio client against the loopback fake of the API (tests/fakes/kubernetes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes_asyncio import client, config

from adapters.runners.kubernetes import KubernetesRunner
from adapters.runners.kubernetes_objects import AGENT_CONTAINER, TASK_LABEL, KubeSettings
from bot.settings import FORBIDDEN_TO_AGENTS
from tests.fakes.kubernetes import FakeKubernetes
from tests.runner_rigs import processes_of

NAMESPACE = "shepherd-agents"
RBAC = Path(__file__).resolve().parent.parent / "manifests" / "k8s" / "10-rbac.yaml"
SECRET_MIN_CHARS = 8  # shorter values of Shepherd's settings (a port, `true`) are no secret and match anything


def shepherds_secrets() -> list[str]:
    """The values of Shepherd's own environment that no object sent to the engine may carry."""
    return [value for name, value in os.environ.items()
            if (name.startswith(FORBIDDEN_TO_AGENTS) or name == "DATABASE_URL") and len(value) >= SECRET_MIN_CHARS]


def runner_role() -> tuple[str, dict[tuple[str, str], set[str]]]:
    """The namespace and rules of the worker's Role as manifests/k8s ships it: what the runner may do on a cluster."""
    role = next(doc for doc in yaml.safe_load_all(RBAC.read_text())
                if doc and doc["kind"] == "Role" and doc["metadata"]["name"] == "shepherd-runner")
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return role["metadata"]["namespace"], rules


class KubernetesRig:
    def __init__(self, root: Path, fake: FakeKubernetes, kubeconfig: Path, settings: KubeSettings) -> None:
        self.workspace_root = root
        self.fake = fake
        self.kubeconfig = kubeconfig
        self.settings = settings
        self._runners: list[KubernetesRunner] = []
        self.runner: KubernetesRunner

    async def new_runner(self) -> KubernetesRunner:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        runner = KubernetesRunner(client.ApiClient(configuration), self.settings)
        self._runners.append(runner)
        return runner

    async def leftovers(self, task_id: str) -> list[str]:
        return [f"pod/{name}" for name in self.fake.live_pods(task_id)] + \
            [f"pid/{pid}" for pid in processes_of(task_id)]

    async def unit_env(self, task_id: str) -> dict[str, str] | None:
        jobs = [j for j in self.fake.jobs_sent()
                if j["metadata"]["labels"].get(TASK_LABEL) == task_id
                and j["metadata"]["labels"].get("shepherd.dev/role") == "turn"]
        if not jobs:
            return None
        containers = jobs[-1]["spec"]["template"]["spec"]["containers"]
        agent = next(c for c in containers if c["name"] == AGENT_CONTAINER)
        return {e["name"]: e["value"] for e in agent.get("env", [])}

    async def close(self) -> None:
        for runner in self._runners:
            await runner.close()
        await self.fake.close()


async def make_kubernetes_rig(root: Path, *, settings: KubeSettings | None = None,
                              missing_images: tuple[str, ...] = ()) -> KubernetesRig:
    engine = root.parent / "k8s-engine"
    engine.mkdir(parents=True, exist_ok=True)
    settings = settings or KubeSettings(namespace=NAMESPACE, deadline_grace_s=5)
    # the API answers as the cluster would to the worker's service account bound to the shipped Role (in the
    # namespace the runner is configured with)
    _, rules = runner_role()
    fake = FakeKubernetes(engine, forbidden=shepherds_secrets(), missing_images=missing_images, rules=rules,
                          rules_namespace=settings.namespace)
    await fake.start()
    rig = KubernetesRig(root, fake, fake.kubeconfig(engine / "kubeconfig"), settings)
    rig.runner = await rig.new_runner()
    return rig
