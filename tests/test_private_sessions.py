"""A private session is private all the way down: its tasks, their logs and what they ask people are its owner's and
admins'; to anyone else of the org they do not exist (404, absent from lists and counts), on every surface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.channels.conversations import Conversations, Where
from core.clock import utcnow
from core.commands.registry import build_registry
from core.digests.compose import gather
from core.errors import NotFound
from core.people.access import Principal
from core.store.models import Agent, Digest, Outbox
from tests.test_rest_coder import Rig, served


@dataclass
class World:
    rig: Rig
    tokens: dict[str, str]  # ada, bob (members: read/write/approve), root (an admin)
    people: dict[str, Principal]
    hidden: Any  # Ada's task in her private session, waiting on its start's confirmation
    code: str  # that confirmation
    shared: Any  # Ada's task in an organization-visibility session
    loose: Any  # Ada's task in no session


async def _world(rig: Rig) -> World:
    core = rig.shepherd
    tokens = {"ada": (await core.tokens.create(org_id="acme", user="ada", scopes="read,write,approve")).secret,
              "bob": (await core.tokens.create(org_id="acme", user="bob", scopes="read,write,approve")).secret,
              "root": (await core.tokens.create(org_id="acme", user="root", scopes="read,write,approve,admin")).secret}
    people = {who: await core.tokens.authenticate(secret) for who, secret in tokens.items()}
    ada = people["ada"]
    private = await core.sessions.create(ada, label="rotate the keys")  # private unless said otherwise
    open_one = await core.sessions.create(ada, label="the docs", visibility="organization")
    hidden = await core.tasks.create(ada, prompt="rotate the production ssh keys", runtime="demo",
                                     name="secret-work", session_id=private.id, gate="task.start")
    assert hidden.confirmation is not None and hidden.confirmation.status == "pending"
    shared = await core.tasks.create(ada, prompt="fix the docs", runtime="demo", name="docs-work",
                                     session_id=open_one.id)
    loose = await core.tasks.create(ada, prompt="tidy up", runtime="demo", name="loose-work")
    return World(rig, tokens, people, hidden.task, hidden.confirmation.code, shared.task, loose.task)


@pytest.fixture
async def world(sqlite_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with served(sqlite_url, tmp_path, runner=False) as rig:
        yield await _world(rig)


async def test_coder_shows_a_private_sessions_task_to_its_owner_and_admins_only(world: World) -> None:
    rig, ada_id = world.rig, world.people["ada"].identity
    secret = world.hidden.name

    async def names(who: str) -> list[str]:
        status, body = await rig.call("GET", f"/api/v2/tasks?q=owner:{ada_id}", token=world.tokens[who])
        assert status == 200, body
        assert body["count"] == len(body["tasks"])
        return [t["name"] for t in body["tasks"]]

    assert await names("bob") == ["loose-work", "docs-work"], "absent from the list and its count"
    assert await names("ada") == await names("root") == ["loose-work", "docs-work", secret]
    for path in (f"/api/v2/tasks/{ada_id}/{secret}", f"/api/v2/tasks/{ada_id}/{secret}/logs",
                 f"/api/v2/tasks/{ada_id}/{secret}/logs?follow=true", f"/api/v2/tasks/{ada_id}/{world.hidden.id}"):
        status, body = await rig.call("GET", path, token=world.tokens["bob"])
        assert (status, body["code"]) == (404, "TASK_NOT_FOUND"), path
    status, _ = await rig.call("DELETE", f"/api/v2/tasks/{ada_id}/{secret}", token=world.tokens["bob"])
    assert status == 404, "nor can he steer it"
    for who in ("ada", "root"):
        status, body = await rig.call("GET", f"/api/v2/tasks/{ada_id}/{secret}", token=world.tokens[who])
        assert status == 200 and body["initial_prompt"] == "rotate the production ssh keys"
    status, body = await rig.call("GET", f"/api/v2/tasks/{ada_id}/docs-work", token=world.tokens["bob"])
    assert status == 200, "an organization session's task stays the org's"


async def test_its_questions_are_hidden_and_cannot_be_decided_by_others(world: World) -> None:
    rig, code, bob = world.rig, world.code, world.tokens["bob"]

    async def codes(path: str, who: str) -> list[str]:
        status, body = await rig.call("GET", path, token=world.tokens[who])
        assert status == 200, body
        return [c["code"] for c in body]

    assert code not in await codes("/api/confirmations", "bob")
    assert code in await codes("/api/confirmations", "ada") and code in await codes("/api/confirmations", "root")
    status, body = await rig.call("GET", "/api/coding-agents/pending", token=bob)
    assert status == 200 and body == [], "Eliza's coordinator does not see it either"
    assert (await rig.call("GET", f"/api/confirmations/{code}", token=bob))[0] == 404
    status, body = await rig.call("POST", f"/api/confirmations/{code}/decision", {"decision": "reject"}, token=bob)
    assert (status, body["code"]) == (404, "CONFIRMATION_NOT_FOUND"), "Bob cannot reject Ada's question"
    status, body = await rig.call("POST", f"/api/coding-agents/confirm/{world.hidden.id}", {"approved": False},
                                  token=bob)
    assert status == 404
    assert (await rig.call("GET", f"/api/confirmations/{code}", token=world.tokens["ada"]))[1]["status"] == "pending"


async def test_chat_status_and_digests_leave_it_out(world: World) -> None:
    core = world.rig.shepherd
    chat = Conversations(core, build_registry())
    here = Where("console", "bob")
    bob, ada = world.people["bob"], world.people["ada"]
    listed = await chat.command(bob, "tasks", where=here)
    assert listed.ok and "loose-work" in listed.text and "secret-work" not in listed.text
    assert not (await chat.command(bob, "task secret-work", where=here)).ok
    assert not (await chat.command(bob, "logs secret-work", where=here)).ok
    assert "secret-work" in (await chat.command(ada, "tasks", where=here)).text
    assert world.code not in (await chat.command(bob, "pending", where=here)).text

    for who, tasks, pending in ((bob, 2, 0), (ada, 3, 1)):  # `status`: the counts leave it out too
        data = (await chat.command(who, "status", where=here)).data
        assert (sum(data["tasks"].values()), data["pending"]) == (tasks, pending), who.name

    # a digest is posted to a shared place: no private session's task or question, even its owner's
    now = utcnow()
    digest = Digest(id="dig-1", org_id="acme", channel="console", address="ops", cron="0 9 * * *",
                    created_by="test", next_fire_at=now, reported_until=now - timedelta(hours=1))
    async with core.db.read() as session:
        snap = await gather(session, digest, now)
    shown = " ".join(item.line for _, items in snap.sections() for item in items)
    assert "loose-work" in shown and "secret-work" not in shown and world.code not in shown


async def test_the_coder_list_hides_it_on_both_stores(db_url: str, tmp_path: Path) -> None:
    """The list's prebuilt statement, with its extra predicate, on SQLite and PostgreSQL."""
    async with served(db_url, tmp_path, runner=False) as rig:
        world = await _world(rig)
        ada_id = world.people["ada"].identity
        # the plain page, one status's branches merged (Ada's private task is awaiting: Coder's active), an owner
        for q, bob, ada in (("", 2, 3), ("?q=status:active", 0, 1), (f"?q=owner:{ada_id}%20status:active", 0, 1)):
            for who, expected in (("bob", bob), ("ada", ada)):
                status, body = await rig.call("GET", f"/api/v2/tasks{q}", token=world.tokens[who])
                assert status == 200 and body["count"] == expected, (who, q, body)
                assert ("secret-work" in {t["name"] for t in body["tasks"]}) is (who == "ada")


async def test_deleting_a_private_session_keeps_its_tasks_hidden_and_its_questions_stay_out_of_shared_channels(
    world: World,
) -> None:
    """Found by the review: the tasks of a deleted private session (kept as history) became the org's to read; and a
    private task's question went to its project's shared approval channel too."""
    rig, ada, bob = world.rig, world.people["ada"], world.people["bob"]
    core = rig.shepherd
    project = await core.projects.create(ada, name="infra", repo=None, default_branch="main")
    await core.subscriptions.subscribe(ada, Where("slack", "C-shared"), project.id)
    in_private = await core.sessions.create(ada, label="more secrets")
    asked = await core.tasks.create(ada, prompt="rotate the staging keys", runtime="demo", name="staging-keys",
                                    session_id=in_private.id, project=project.id, gate="task.start")
    assert asked.confirmation is not None and asked.confirmation.status == "pending"
    async with core.db.read() as session:
        where = {o.address for o in await session.exec(select(Outbox).where(
            Outbox.key == f"confirmation:{asked.confirmation.id}"))}
    assert "C-shared" not in where, "a private session's question is asked in its own threads only"

    deleted = await core.sessions.delete(ada, world.hidden.session_id)
    assert deleted.status == "deleted"
    with pytest.raises(NotFound):
        await core.tasks.get(bob, world.hidden.id)
    assert (await core.tasks.get(ada, world.hidden.id)).id == world.hidden.id, "its owner still has its history"
    with pytest.raises(NotFound):
        await core.sessions.get(ada, world.hidden.session_id)
    page = await core.sessions.list(ada, include_archived=True)
    assert world.hidden.session_id not in {row.id for row in page.rows}


async def test_the_orgs_agents_list_tells_nothing_of_a_private_sessions_prompt(world: World) -> None:
    """Found by the review: each task's agent carried the task's name (made from the prompt) and its prompt into the
    org's agents list, where a private session's task is not hidden."""
    status, body = await world.rig.call("GET", "/api/agents?limit=100", token=world.tokens["bob"])
    assert status == 200, body
    listed = str(body)
    assert "rotate" not in listed and world.hidden.name not in listed
    assert "fix the docs" in listed, "an organization session's task agent says what it does"
    async with world.rig.shepherd.db.read() as session:
        agent = await session.get(Agent, world.hidden.agent_id)
    assert agent is not None and agent.task == "a task of a private session"
