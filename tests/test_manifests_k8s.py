"""The Kubernetes manifests in manifests/k8s are what the README's "Scaling out" deploys: they load, the worker
runs agents through the Kubernetes runner with exactly the API access that needs, no secret is written inline,
and the web replicas are probed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "manifests" / "k8s"
README = (ROOT / "README.md").read_text()

# What the Kubernetes runner does in the agents' namespace, and nothing more: (API group, resource) -> verbs. The
# fake API enforces the shipped Role in every Kubernetes runner test (tests/kubernetes_rig.py): a call the Role
# does not allow fails there.
RUNNER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "delete"},
    ("", "pods"): {"list", "delete"},
    ("", "pods/log"): {"get"},
    ("", "persistentvolumeclaims"): {"create", "get", "delete"},
}
# Names whose value is a credential or carries one: they come from a Secret, never from the manifest itself.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PRIVATE_KEY|API_KEY|DATABASE_URL", re.IGNORECASE)
SECRET_VALUE = re.compile(r"://[^/\s:@]+:[^/\s@]+@|xox[abp]-|xapp-|gh[pousr]_|github_pat_|BEGIN [A-Z ]*PRIVATE KEY")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = _documents()


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for _, doc in DOCS:
        template = doc.get("spec", {}).get("template")
        if template:
            specs.append((f"{doc['kind']} {doc['metadata']['name']}", template["spec"]))
    return specs


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _worker() -> tuple[dict[str, Any], dict[str, Any]]:
    pod = _one("Deployment", "shepherd-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_every_document_loads_and_is_namespaced() -> None:
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "Job"} <= {
        doc["kind"] for _, doc in DOCS
    }
    namespaces = {doc["metadata"]["name"] for _, doc in DOCS if doc["kind"] == "Namespace"}
    for name, doc in DOCS:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), f"{name}: a document without apiVersion or name"
        if doc["kind"] != "Namespace":
            # `kubectl apply -f manifests/k8s/` goes in file order: the namespaces come first (00-namespaces.yaml)
            assert doc["metadata"].get("namespace") in namespaces, f"{name}: {doc['kind']} outside the namespaces"
    assert sorted(p.name for p in K8S.glob("*.yaml"))[0] == "00-namespaces.yaml"


def test_the_runner_role_allows_exactly_what_the_runner_needs_in_the_agents_namespace() -> None:
    _, worker = _worker()
    agents = _env(worker)["SHEPHERD_K8S_NAMESPACE"]["value"]
    role = _one("Role", "shepherd-runner")
    assert role["metadata"]["namespace"] == agents
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames or nonResourceURLs tricks"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    assert rules == RUNNER_RULES
    assert not [doc for _, doc in DOCS if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_worker_is_bound_to_the_runner_role_and_nothing_else_gets_a_token() -> None:
    pod, _ = _worker()
    worker_ns = _one("Deployment", "shepherd-worker")["metadata"]["namespace"]
    binding = _one("RoleBinding", "shepherd-runner")
    role = _one("Role", "shepherd-runner")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shepherd-runner"}
    account = pod["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": worker_ns}]
    _one("ServiceAccount", pod["serviceAccountName"])
    for where, spec in _pod_specs():
        if spec is not pod:
            assert spec.get("automountServiceAccountToken") is False, f"{where} mounts an API token it never uses"


def test_the_agents_namespace_holds_pods_to_the_restricted_standard() -> None:
    _, worker = _worker()
    agents = _one("Namespace", _env(worker)["SHEPHERD_K8S_NAMESPACE"]["value"])
    assert agents["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_worker_runs_agents_as_kubernetes_jobs() -> None:
    pod, worker = _worker()
    env = _env(worker)
    assert worker["command"] == ["shepherd", "worker"]
    assert env["SHEPHERD_RUNNER"]["value"] == "kubernetes"
    assert env["SHEPHERD_K8S_IMAGE"]["value"]
    # agents in their pods call `shepherd ask` back at the web Service
    service = _one("Service", "shepherd")
    assert env["SHEPHERD_PUBLIC_URL"]["value"].startswith(
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    )
    assert env["SHEPHERD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "SHEPHERD_DATABASE_URL"
    assert "ports" not in worker, "a worker serves no HTTP"
    # Shepherd's copies of the workspaces live on a volume of the pod, not in the container's root
    (data,) = [m for m in worker["volumeMounts"] if m["mountPath"] == env["SHEPHERD_DATA_DIR"]["value"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == data["name"]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


def test_the_web_replicas_are_probed_and_served() -> None:
    web = _one("Deployment", "shepherd-web")
    assert web["spec"]["replicas"] >= 2
    (container,) = web["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert _env(container)["SHEPHERD_PORT"]["value"] == str(port["containerPort"])
    service = _one("Service", "shepherd")
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])


def test_the_release_job_migrates() -> None:
    job = _one("Job", "shepherd-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["shepherd", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_no_secret_object_is_shipped() -> None:
    assert not [doc for _, doc in DOCS if doc["kind"] == "Secret"], "the operator makes the Secret (see README)"


@pytest.mark.parametrize("where,pod", _pod_specs(), ids=[where for where, _ in _pod_specs()])
def test_no_secret_is_written_in_a_manifest(where: str, pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in _containers(pod):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for name, item in _env(container).items():
            value = str(item.get("value", ""))
            assert not SECRET_VALUE.search(value), f"{where}: {name} holds a credential"
            if SECRET_NAME.search(name):
                assert "value" not in item and "secretKeyRef" in item["valueFrom"], f"{where}: {name} not from a Secret"
        for source in container.get("envFrom", []):
            assert set(source) == {"secretRef"}, f"{where}: environment from something other than a Secret"


def test_every_shepherd_setting_the_manifests_set_is_a_known_setting() -> None:
    # settings of the runners (SHEPHERD_RUNNER, SHEPHERD_K8S_*) are documented in README with their runner
    known = {Settings.env_name(name) for name in Settings.model_fields}
    for where, pod in _pod_specs():
        for container in _containers(pod):
            for name in _env(container):
                if name.startswith("SHEPHERD_"):
                    assert name in known or f"`{name}`" in README, f"{where}: {name} is no setting Shepherd reads"


def test_the_readme_tells_how_to_deploy_every_manifest() -> None:
    scaling = README.split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    assert "kubectl apply -f manifests/k8s/" in scaling
    for path in K8S.glob("*.yaml"):
        assert path.name in scaling, f"README's Scaling out does not mention {path.name}"
