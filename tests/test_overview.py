"""`status`: what an org has right now, read in one statement, never another org's."""

from __future__ import annotations

from core.commands.registry import build_registry
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.models import RunnerNode
from tests.conftest import person
from tests.test_confirmations import ALICE, gate, pr_plan, started_task

OTHER = person(Role.ADMIN, org="other", name="olga")


async def test_status_counts_what_the_org_has_and_nothing_of_another_org(shepherd: Shepherd) -> None:
    await shepherd.orgs.ensure("other")
    admin = person(Role.ADMIN)
    await shepherd.projects.create(admin, name="api", repo=None, default_branch="main")
    await shepherd.projects.create(admin, name="web", repo=None, default_branch="main")
    await shepherd.agents.create(admin, name="a1", type="task")
    paused = (await shepherd.agents.create(admin, name="a2", type="task")).agent
    await shepherd.agents.act(admin, paused.id, "suspend")
    task = await started_task(shepherd)
    await gate(shepherd, task, pr_plan(), level=1)
    await shepherd.projects.create(OTHER, name="theirs", repo=None, default_branch="main")  # not ours to count
    await shepherd.agents.create(OTHER, name="b1", type="task")

    now = await shepherd.overview.of(ALICE)
    assert now.projects == 2 and now.pending == 1 and now.runners == 0
    assert now.agents["SUSPENDED"] == 1 and sum(now.agents.values()) == 2 + 1  # and the task's own agent
    assert sum(now.tasks.values()) == 1 and now.tasks["awaiting"] == 1

    async with shepherd.db.write() as session:
        session.add(RunnerNode(id="r1", host="here", pid=1))
    reply = await build_registry().run(shepherd, admin, "status")
    assert "confirmations: 1 pending" in reply.text and "projects: 2" in reply.text
    assert "a runner is up" in reply.text and "1 suspended" in reply.text
    assert reply.data["pending"] == 1 and reply.data["tasks"] == {"awaiting": 1}
    theirs = await shepherd.overview.of(OTHER)
    assert theirs.projects == 1 and theirs.pending == 0 and theirs.tasks == {}
