"""Eliza's cloud coding containers (shared/seeds/000, "Start Coding Container") over real HTTP: the seed's example
as written, run for real by the demo agent (as a preset named `codex`) on the local sandbox and on the Docker fake,
the workspace seen at workspacePath, the status moving as the run does, and fail-closed 503s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.runners.docker import DockerRunner
from adapters.runners.docker_spec import DockerConfig
from bot.app import create_app
from bot.callbacks import PYTHON
from bot.presets import DEMO
from bot.runners import capabilities
from core.autonomy.actions import ActionsConfig, Executor
from core.clock import utcnow
from core.runners import Runner
from core.runners.local import LocalRunner
from core.runners.presets import AgentCatalog
from core.runners.sandbox import SandboxView
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import RunnerNode
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.fakes.docker import FakeDocker
from tests.test_rest_coder import Rig
from tests.test_sandbox import _usable

START = "/api/cloud/coding-containers"
SEED_START = {  # the seed's example request, as written
    "agent": "codex",
    "promotionId": "promotion-id",
    "source": {
        "sourceKind": "project",
        "projectId": "demo-app",
        "snapshotId": "snapshot-id",
        "files": [
            {
                "path": "src/plugin.ts",
                "contents": "export default { name: 'demo' };",
                "encoding": "utf-8",
            }
        ],
    },
    "prompt": "Implement the app and return patches",
}
FIELDS = {"containerId", "status", "agent", "promotionId", "workspacePath", "url", "createdAt", "metadata"}
SEED_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ORDER = ["requested", "pending", "building", "running", "stopped"]


def codex(*, here: bool = False) -> AgentCatalog:
    """A preset named `codex` that runs the demo agent (with --here where its working directory is a volume the
    host sees elsewhere: the Docker fake)."""
    extra = ("--here",) if here else ()
    return AgentCatalog([replace(DEMO, name="codex", start=(*DEMO.start[:2], *extra, *DEMO.start[2:]),
                                 resume=(*DEMO.resume[:2], *extra, *DEMO.resume[2:]))])  # type: ignore[misc]


class Served(Rig):
    data: Path

    async def run(self, runner: Runner, **config: Any) -> None:
        cfg = RunnerConfig(workspace_root=self.data / "workspaces", poll_s=0.05, flush_s=0.05, idle_timeout_s=30,
                           hard_timeout_s=60, max_tasks=4)
        self.supervisor = TaskSupervisor(self.shepherd, replace(cfg, **config), runner=runner,
                                         executor=Executor(ActionsConfig()))
        self.shepherd.tasks.runner_capabilities = runner.capabilities
        await self.supervisor.start()

    async def elsewhere(self) -> None:
        """A ready runner in another process (a fresh heartbeat): containers may start, and wait for it."""
        async with self.shepherd.db.write() as session:
            now = utcnow()
            session.add(RunnerNode(id="elsewhere:1", host="elsewhere", pid=os.getpid(), started_at=now,
                                   heartbeat_at=now, runner_kind="local"))

    async def container(self, container_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"{START}/{container_id}")
        assert status == 200 and body["success"] is True, body
        return dict(body["data"])

    async def watch(self, container_id: str, timeout: float = 40) -> tuple[list[str], dict[str, Any]]:
        """Poll GET as a client would until the container ends; the statuses seen, in order, and the last answer."""
        seen: list[str] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            data = await self.container(container_id)
            if not seen or seen[-1] != data["status"]:
                seen.append(data["status"])
            if data["status"] in ("stopped", "failed"):
                return seen, data
            assert asyncio.get_running_loop().time() < deadline, (seen, data)
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def served(db_url: str, root: Path, catalog: AgentCatalog) -> AsyncIterator[Served]:
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=catalog, default_agent="codex", workspace_root=root / "data" / "workspaces")
    await shepherd.orgs.ensure("acme")
    await shepherd.orgs.ensure("globex")
    client = TestClient(TestServer(create_app(db_url, shepherd=shepherd)))
    await client.start_server()
    rig = Served(client, shepherd, "", root)
    rig.data = root / "data"
    rig.token = await rig.token_for("acme")
    try:
        yield rig
    finally:
        if rig.supervisor is not None:
            await rig.supervisor.stop()
        await client.close()
        await db.dispose()


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    async with served(db_url, tmp_path, codex()) as r:
        yield r


def in_order(seen: list[str]) -> bool:
    return [s for s in ORDER if s in seen] == seen


async def test_the_seed_example_runs_the_agent_in_the_sandbox_at_workspace_path(rig: Served) -> None:
    _usable()
    # the web process knows what the configured runner does (bot/cli.py): the sandboxed local runner mounts
    rig.shepherd.tasks.runner_capabilities = capabilities("local", sandbox=True)
    await rig.elsewhere()  # a runner is alive elsewhere: the container is accepted, and waits (requested)
    status, body = await rig.call("POST", START, SEED_START)
    assert status == 200, body
    assert set(body) == {"success", "data"} and body["success"] is True
    data = body["data"]
    assert set(data) == FIELDS
    assert data["containerId"].startswith("container-") and data["status"] == "requested"
    assert data["agent"] == "codex"
    assert data["promotionId"].startswith("promotion-"), "the files were promoted: the answer names that promotion"
    assert data["promotionId"] != "promotion-id"
    assert data["workspacePath"] == "/workspace/demo-app", "the sandbox shows the workspace at workspacePath"
    assert SEED_MS.match(data["createdAt"])
    assert data["metadata"] == {"sourceFileCount": 1, "sourceTotalBytes": len(b"export default { name: 'demo' };"),
                                "volumeMountPath": "/workspace/demo-app"}
    task_url = data["url"]
    assert task_url.startswith(str(rig.client.make_url("/api/v2/tasks/")))

    # its link is the task in the API
    status, task = await rig.call("GET", task_url.removeprefix(str(rig.client.make_url(""))))
    assert status == 200 and task["initial_prompt"] == SEED_START["prompt"] and task["template_name"] == "codex"

    # no runner of this process has claimed it yet: it is requested until one does
    assert (await rig.container(data["containerId"]))["status"] == "requested"
    data_dir = rig.data
    view = SandboxView(hidden=(data_dir, Path.cwd(), Path.home()), programs=(PYTHON,))
    await rig.run(LocalRunner(view), sandbox=view)
    seen, done = await rig.watch(data["containerId"])  # a quick runner may have claimed it before the first look
    assert seen[-1] == "stopped" and in_order(list(dict.fromkeys(["requested", *seen]))), seen
    assert (done["outcome"], done["taskId"]) == ("succeeded", task["id"]), done
    assert done["workspacePath"] == "/workspace/demo-app"

    # the agent worked on the promoted files, and its change is in Shepherd's copy
    copy = data_dir / "workspaces" / done["taskId"]
    assert (copy / "src" / "plugin.ts").read_text() == "export default { name: 'demo' };"
    assert "Implement the app and return patches" in (copy / "NOTES.md").read_text()

    # the agent saw the workspace at workspacePath, inside the sandbox (and Shepherd's data dir not at all)
    status, again = await rig.call("POST", START, {
        "agent": "codex", "promotionId": data["promotionId"],
        "prompt": f"look [see /workspace/demo-app/src/plugin.ts] [see {data_dir}] [env]"})
    assert status == 200, again
    assert again["data"]["promotionId"] == data["promotionId"], "started from the promotion named"
    _, looked = await rig.watch(again["data"]["containerId"])
    assert looked["outcome"] == "succeeded", looked
    status, logs = await rig.call("GET", f"/api/v2/tasks/me/{looked['taskId']}/logs")
    said = [e["content"] for e in logs["logs"] if e["type"] == "output"]
    assert "see /workspace/demo-app/src/plugin.ts: exists" in said, said
    assert f"see {data_dir}: missing" in said, said
    env = (data_dir / "workspaces" / looked["taskId"] / "env.json").read_text()
    assert '"SHEPHERD_WORKSPACE": "/workspace/demo-app"' in env

    # a failing agent's container is failed, and says why
    status, failing = await rig.call("POST", START, {"agent": "codex", "promotionId": data["promotionId"],
                                                     "prompt": "break it [fail]"})
    assert status == 200
    seen, failed = await rig.watch(failing["data"]["containerId"])
    assert seen[-1] == "failed" and failed["outcome"] == "failed" and failed["reason"], failed


async def test_without_a_sandbox_the_agent_runs_in_the_real_path_and_the_answer_says_so(rig: Served) -> None:
    await rig.run(LocalRunner())
    status, body = await rig.call("POST", START, SEED_START)
    assert status == 200, body
    _, done = await rig.watch(body["data"]["containerId"])
    real = str(rig.data / "workspaces" / done["taskId"])
    assert (done["workspacePath"], done["metadata"]["volumeMountPath"]) == (real, real)
    assert done["outcome"] == "succeeded" and (Path(real) / "NOTES.md").is_file()


async def test_bad_requests_and_other_orgs(rig: Served) -> None:
    status, body = await rig.call("POST", START, SEED_START)
    assert (status, body["code"]) == (503, "CONTAINERS_UNAVAILABLE") and "no runner is alive" in body["error"]
    await rig.elsewhere()
    status, body = await rig.call("POST", START, {**SEED_START, "agent": "aider"})
    assert (status, body["code"]) == (400, "INVALID_AGENT") and "claude, codex, opencode" in body["error"]
    status, body = await rig.call("POST", START, {"agent": "codex", "promotionId": "promotion-nope", "prompt": "x"})
    assert (status, body["code"]) == (404, "PROMOTION_NOT_FOUND")
    status, body = await rig.call("POST", START, {"agent": "codex", "prompt": "x"})
    assert (status, body["code"]) == (400, "NO_SOURCE")
    bad = {**SEED_START, "source": {**SEED_START["source"], "files": [{"path": "../etc/passwd", "contents": "x"}]}}
    status, body = await rig.call("POST", START, bad)
    assert (status, body["code"]) == (400, "INVALID_PATH")
    bad = {**SEED_START, "source": {**SEED_START["source"], "projectId": "../up"}}
    status, body = await rig.call("POST", START, bad)
    assert (status, body["code"]) == (400, "INVALID_PROJECT_ID")

    status, body = await rig.call("POST", START, SEED_START)
    assert status == 200
    mine = body["data"]["containerId"]
    other = await rig.token_for("globex")
    status, body = await rig.call("GET", f"{START}/{mine}", token=other)
    assert (status, body["code"]) == (404, "CONTAINER_NOT_FOUND"), "another org's container is not found"
    status, body = await rig.call("POST", START, {"agent": "codex", "promotionId": (await rig.container(mine))[
        "promotionId"], "prompt": "x"}, token=other)
    assert (status, body["code"]) == (404, "PROMOTION_NOT_FOUND"), "nor its promotion"
    status, body = await rig.call("GET", f"{START}/container-nope")
    assert (status, body["code"]) == (404, "CONTAINER_NOT_FOUND")


async def until_unavailable(rig: Served, why: str) -> None:
    status, body = await rig.call("POST", START, SEED_START)
    assert (status, body["code"]) == (503, "CONTAINERS_UNAVAILABLE"), body
    assert why in body["error"], body["error"]


async def test_a_weak_sandbox_is_503(rig: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no bubblewrap: the required sandbox cannot hold
    view = SandboxView(hidden=(rig.data,))
    await rig.run(LocalRunner(view), sandbox=view)
    await until_unavailable(rig, "the sandbox does not hold")


async def test_an_unreachable_engine_is_503(rig: Served, tmp_path: Path) -> None:
    runner = DockerRunner(aiodocker.Docker(url=f"unix://{tmp_path / 'nobody.sock'}"), DockerConfig())
    try:
        await rig.run(runner)
        await until_unavailable(rig, "docker: the Docker engine at")
    finally:
        if rig.supervisor is not None:
            await rig.supervisor.stop()
            rig.supervisor = None
        await runner.close()


async def test_a_container_runs_on_the_docker_fake_with_its_volume_at_workspace_path(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeDocker(tmp_path / "engine")
    await fake.start()
    runner = DockerRunner(aiodocker.Docker(url=fake.url), DockerConfig(user="1000:1000"))
    try:
        async with served(sqlite_url, tmp_path, codex(here=True)) as rig:
            await rig.run(runner)
            status, body = await rig.call("POST", START, SEED_START)
            assert status == 200, body
            assert body["data"]["workspacePath"] == "/workspace/demo-app"
            seen, done = await rig.watch(body["data"]["containerId"])
            assert seen[-1] == "stopped" and in_order(seen) and done["outcome"] == "succeeded", (seen, done)
            turns = [b for b in fake.created() if b["Labels"]["shepherd.dev/role"] == "turn"]
            assert turns and turns[0]["WorkingDir"] == "/workspace/demo-app"
            assert [m["Target"] for m in turns[0]["HostConfig"]["Mounts"]] == ["/workspace/demo-app"]
            copy = rig.data / "workspaces" / done["taskId"]
            assert (copy / "src" / "plugin.ts").is_file()
            assert "Implement the app" in (copy / "NOTES.md").read_text(), "the agent's work came back"
    finally:
        await runner.close()
        await fake.stop()
        shutil.rmtree(tmp_path / "engine", ignore_errors=True)


def test_remote_units_mount_the_workspace_at_the_run_s_cwd_and_keep_workspace_by_default(tmp_path: Path) -> None:
    from adapters.runners import docker_spec, kubernetes_objects
    from core.runners import RunSpec, Seed
    from core.runners.sandbox import bwrap_argv

    def spec(cwd: str) -> RunSpec:
        return RunSpec(argv=("codex", "go"), cwd=Path(cwd), env={}, idle_timeout=10, hard_timeout=60,
                       task_id="task-1", org_id="acme", turn=1, runtime="codex")

    seed = Seed(task_id="task-1", org_id="acme", local=tmp_path, work_branch="w", base_sha="0" * 40)
    for cwd in ("/workspace/demo-app", "/workspace"):
        job = kubernetes_objects.turn_job(kubernetes_objects.KubeSettings(), spec(cwd), name="j", seed=seed)
        pod = job["spec"]["template"]["spec"]
        agent, init = pod["containers"][0], pod["initContainers"][0]
        assert agent["workingDir"] == cwd
        assert [m["mountPath"] for m in agent["volumeMounts"] if m["name"] == "workspace"] == [cwd]
        assert [m["mountPath"] for m in init["volumeMounts"] if m["name"] == "workspace"] == ["/workspace"], \
            "the seed step unpacks where its script looks"
        turn = docker_spec.turn_container(DockerConfig(), spec(cwd))
        assert (turn["WorkingDir"], [m["Target"] for m in turn["HostConfig"]["Mounts"]]) == (cwd, [cwd])
    holder = docker_spec.workspace_container(DockerConfig(), task_id="task-1", org_id="acme")
    assert [m["Target"] for m in holder["HostConfig"]["Mounts"]] == ["/workspace"]

    # the sandbox shows a workspace at a path of Shepherd's choosing, never over the system or its own folders
    view = SandboxView(workspace=tmp_path)
    argv = bwrap_argv("bwrap", ["true"], cwd=Path("/workspace/demo-app"), env={"PATH": "/usr/bin"}, view=view)
    assert argv[argv.index("--chdir") + 1] == "/workspace/demo-app"
    at = [i for i, word in enumerate(argv) if word == "--bind" and argv[i + 2] == "/workspace/demo-app"]
    assert at and argv[at[0] + 1] == os.path.realpath(tmp_path)
    for bad in ("/usr/local/x", "/", "/tmp/x", "/home/agent"):
        with pytest.raises(ValueError):
            bwrap_argv("bwrap", ["true"], cwd=Path(bad), env={}, view=view)


async def test_the_promotions_path_is_no_container(rig: Served) -> None:
    """`/coding-containers/promotions` is the promotions route: read with GET it is no container named "promotions",
    and it says which method it takes."""
    async with rig.client.get("/api/cloud/coding-containers/promotions") as response:
        assert response.status == 405 and response.headers["Allow"] == "POST"
