"""Sessions in core and in chat: threads that run tasks are sessions, the session commands, archive and delete."""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from bot.presets import agent_catalog
from core.channels.conversations import Conversations, Where
from core.commands.registry import build_registry
from core.errors import Conflict, ValidationFailed
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.models import Event, Thread
from tests.conftest import person

ADA = person(Role.OPERATOR, name="ada")
BOB = person(Role.OPERATOR, name="bob")


@pytest.fixture
async def chat(shepherd: Shepherd) -> Conversations:
    return Conversations(Shepherd(shepherd.db, catalog=agent_catalog(), default_agent="demo"), build_registry())


async def _run(chat: Conversations, said: str, where: Where, who: object = ADA) -> str:
    reply = await chat.command(who, said, where=where)  # type: ignore[arg-type]
    assert reply.ok, reply.text
    return str(reply.data["id"])


async def test_a_thread_that_runs_tasks_is_one_session(chat: Conversations) -> None:
    core = chat.shepherd
    thread = Where("slack", "C1/1700000000.0001")
    first = await _run(chat, 'run "fix the login page" --agent demo', thread)
    second = await _run(chat, 'run "and its tests" --agent demo', thread, who=BOB)
    elsewhere = await _run(chat, 'run "another thing" --agent demo', Where("slack", "C1/1700000000.0002"))
    t1, t2, t3 = [await core.tasks.get(ADA, t) for t in (first, second, elsewhere)]
    assert t1.session_id and t1.session_id == t2.session_id, "later tasks in the thread join its session"
    assert t3.session_id not in (None, t1.session_id), "another thread is another session"
    sess = await core.sessions.get(ADA, t1.session_id)
    assert sess.label == "fix the login page" and sess.origin == {"channel": "slack", "address": "C1/1700000000.0001"}
    assert sess.visibility == "collaborate", "whoever speaks in the thread runs tasks there"
    assert [t.id for t in await core.sessions.tasks_of(ADA, sess.id)] == [first, second]
    async with core.db.read() as session:
        bound = list(await session.exec(select(Thread.session_id).where(Thread.address == "C1/1700000000.0001")))
    assert bound == [sess.id, sess.id]

    other = await core.sessions.create(ADA, label="elsewhere")
    joined = await _run(chat, f'run "over there" --agent demo --session {other.id}', thread)
    assert (await core.tasks.get(ADA, joined)).session_id == other.id, "--session names another"
    again = await _run(chat, 'run "back here" --agent demo', thread)
    assert (await core.tasks.get(ADA, again)).session_id == sess.id, "the thread stays bound to its session"

    await core.sessions.archive(ADA, sess.id)
    fresh = await _run(chat, 'run "a new start" --agent demo', thread)
    new_session = (await core.tasks.get(ADA, fresh)).session_id
    assert new_session not in (None, sess.id), "an archived session is not joined again: the thread begins anew"
    reply = await chat.command(ADA, f'run "into the archive" --agent demo --session {sess.id}', where=thread)
    assert not reply.ok and "archived" in reply.text


async def test_the_session_commands(chat: Conversations) -> None:
    console = Where("console", "ada")
    task = await _run(chat, 'run "tidy the docs [long 30]" --agent demo', console)
    sid = (await chat.shepherd.tasks.get(ADA, task)).session_id
    assert sid is not None
    mine = await chat.command(ADA, "sessions", where=console)
    assert sid in mine.text and "tidy the docs" in mine.text and mine.data == [sid]
    assert (await chat.command(BOB, "sessions", where=Where("console", "bob"))).data == []
    assert (await chat.command(BOB, "sessions all", where=Where("console", "bob"))).data == [sid]
    shown = await chat.command(ADA, f"session {sid}", where=console)
    assert shown.ok and "standard" in shown.text and "budget: none" in shown.text and task in shown.text
    assert (await chat.command(BOB, f"session archive {sid}", where=console)).ok is False, "not bob's to archive"
    archived = await chat.command(ADA, f"session archive {sid}", where=console)
    assert archived.ok and archived.data["status"] == "archived"
    assert (await chat.shepherd.tasks.get(ADA, task)).status == "cancelled", "nothing runs in an archived session"
    assert (await chat.command(ADA, f"session resume {sid}", where=console)).data["status"] == "active"
    deleted = await chat.command(ADA, f"session delete {sid}", where=console)
    assert deleted.ok and deleted.data == {"id": sid, "status": "deleted"}
    assert not (await chat.command(ADA, f"session {sid}", where=console)).ok
    assert (await chat.shepherd.tasks.get(ADA, task)).session_id == sid, "its tasks stay as history"
    async with chat.db.read() as session:
        unbound = list(await session.exec(select(Thread).where(col(Thread.session_id) == sid)))
        events = list(await session.exec(select(Event.name).where(Event.session_id == sid).order_by(col(Event.id))))
    assert unbound == [], "its threads are bound to nothing: the next task there begins a new session"
    assert events == ["session.created", "session.archived", "session.resumed", "session.deleted"]


async def test_a_standard_session_starts_its_task_and_a_loop_session_its_first_iteration(shepherd: Shepherd) -> None:
    core = Shepherd(shepherd.db, catalog=agent_catalog(), default_agent="demo")
    sess = await core.sessions.create(ADA, task="write the changelog", repo={"fullName": "acme/api", "branch": "dev"})
    [task] = await core.sessions.tasks_of(ADA, sess.id)
    assert (task.prompt, task.repo, task.base_branch, task.runtime) == ("write the changelog", "acme/api", "dev",
                                                                        "demo")
    loop = await core.sessions.create(ADA, task="make the tests pass", workflow_mode="loop",
                                      loop={"maxIterations": 3})
    [first] = await core.sessions.tasks_of(ADA, loop.id)
    assert "make the tests pass" in first.prompt and first.session_id == loop.id
    again = await core.sessions.get(ADA, loop.id)
    assert (again.loop_status, again.loop_iteration) == ("starting", 1)
    assert again.loop == {"goal": "", "maxIterations": 3, "autoContinue": False, "allowDetached": False}
    with pytest.raises(ValidationFailed, match="unknown agent"):
        await core.sessions.create(ADA, task="x", agent="nobody")
    await core.sessions.archive(ADA, sess.id)
    with pytest.raises(Conflict, match="archived"):
        await core.tasks.send(ADA, task.id, "more")
    page = await core.sessions.list(ADA, include_archived=True)
    assert page.total == 2, "a task that could not start left no session behind"


async def test_env_takes_the_operators_agent_names_and_never_a_secret(shepherd: Shepherd) -> None:
    core = Shepherd(shepherd.db, catalog=agent_catalog(), agent_env=("GIT_AUTHOR_NAME", "OPENAI_API_KEY"))
    sess = await core.sessions.create(ADA, label="env", env={"GIT_AUTHOR_NAME": "Ada Bot", "TZ": "UTC"})
    assert sess.env == {"GIT_AUTHOR_NAME": "Ada Bot", "TZ": "UTC"}
    with pytest.raises(ValidationFailed) as refused:
        await core.sessions.create(ADA, label="env", env={"OPENAI_API_KEY": "sk-proj-abcdefghijklmnopqrstuv"})
    assert refused.value.code == "ENV_SECRET" and "sk-proj" not in refused.value.message
    with pytest.raises(ValidationFailed) as refused:
        await core.sessions.create(ADA, label="env", env={"GIT_AUTHOR_NAME": "https://u:hunter2@example.com"})
    assert refused.value.code == "ENV_SECRET"
