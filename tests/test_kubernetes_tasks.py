"""Tasks through the Kubernetes runner end to end: the demo agent in a Job of the loopback fake cluster, driven by
TaskSupervisor with the real kubernetes_asyncio client, the real store and real git. What a user sees: the
agent's output, its work in the task's workspace, and a run that outlives a Shepherd restart found again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.presets import agent_catalog
from core.autonomy.actions import ActionsConfig, Executor
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.tasks.supervisor import TaskSupervisor
from tests.conftest import person
from tests.kubernetes_rig import KubernetesRig, make_kubernetes_rig
from tests.test_tasks import Rig, fast_config

SECRET = "xoxb-end-to-end-secret"


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubernetesRig]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    made = await make_kubernetes_rig(tmp_path / "data" / "workspaces")
    try:
        yield made
    finally:
        await made.close()


async def shepherd_on(url: str, cluster: KubernetesRig, tmp_path: Path) -> tuple[Rig, Database]:
    db = Database(url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo",
                        workspace_root=tmp_path / "data" / "workspaces")
    await shepherd.orgs.ensure("acme")
    config = fast_config(tmp_path / "data", heartbeat_s=0.2, stale_after_s=1.0)
    sup = TaskSupervisor(shepherd, config, runner=await cluster.new_runner(),
                         executor=Executor(ActionsConfig(git_base_url=config.git_base_url)))
    await sup.start()
    return Rig(shepherd, sup, person(Role.ADMIN)), db


async def test_a_demo_task_runs_as_a_job_and_its_work_comes_back(
        sqlite_url: str, cluster: KubernetesRig, tmp_path: Path) -> None:
    rig, db = await shepherd_on(sqlite_url, cluster, tmp_path)
    try:
        task = await rig.run("write the notes [env]")
        done = await rig.finished(task.id, timeout=60)
        assert done.outcome == "succeeded", done.state_message
        assert await rig.output(task.id)
        # the agent wrote in the engine's workspace; Shepherd's copy has it now
        env = json.loads((Path(done.workspace or "") / "env.json").read_text())
        assert env["SHEPHERD_TASK_ID"] == task.id and SECRET not in json.dumps(env)
        (job,) = [j for j in cluster.fake.jobs_sent() if j["metadata"]["labels"].get("shepherd.dev/role") == "turn"]
        assert job["metadata"]["labels"]["shepherd.dev/task"] == task.id
        assert cluster.fake.refused == [] and SECRET not in json.dumps(cluster.fake.received)
        assert await cluster.leftovers(task.id) == []
    finally:
        await rig.sup.stop()
        await db.dispose()


async def test_a_run_outlives_a_shepherd_restart_and_ends_with_its_real_outcome(
        sqlite_url: str, cluster: KubernetesRig, tmp_path: Path) -> None:
    first, db = await shepherd_on(sqlite_url, cluster, tmp_path)
    task = await first.run("work for a while [long 3]")
    await first.printed(task.id, "tick", timeout=60)
    await first.sup.stop()  # a restart: the Job goes on in the cluster
    await db.dispose()
    assert cluster.fake.live_pods(task.id), "stopping Shepherd ended the remote run"
    second, db = await shepherd_on(sqlite_url, cluster, tmp_path)
    try:
        done = await second.finished(task.id, timeout=60)
        assert done.outcome == "succeeded", done.state_message  # the agent's own exit 0, read from the pod
        names = [e.name for e in await second.shepherd.events.list(second.who, limit=200)]
        assert "task.reattached" in names
        assert await cluster.leftovers(task.id) == []
    finally:
        await second.sup.stop()
        await db.dispose()
