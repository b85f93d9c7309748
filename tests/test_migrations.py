"""Migrations: they build exactly the schema the models describe, and walk down and up again."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import core.store.models  # noqa: F401
from bot.migrate import alembic_config, current_revision, head_revision, upgrade
from core.store.db import normalize_url


async def _diff(url: str) -> list[object]:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}),
                                           SQLModel.metadata)
            )
    finally:
        await engine.dispose()


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    assert asyncio.run(_diff(db_url)) == [], "a model changed without a migration: run alembic revision"


def test_downgrade_to_nothing_and_up_again(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "base")
    assert asyncio.run(current_revision(db_url)) is None
    command.upgrade(alembic_config(db_url), "0020")
    assert asyncio.run(current_revision(db_url)) == "0020" != head_revision()  # read without alembic, as serve does
    upgrade(db_url)
    # the newest revision as alembic itself finds it
    assert asyncio.run(current_revision(db_url)) == head_revision() == \
        ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    upgrade(db_url)  # idempotent
    assert asyncio.run(_diff(db_url)) == []


def test_tokens_named_before_people_existed_keep_acting_for_that_person(db_url: str) -> None:
    """An upgrade locks nobody out: a token made with `--name me` under 0004 acts for the person `me` after
    it (so `me` still approves), while tokens left with the default name `api` stay tokens of nobody."""
    from core.people.access import Scope
    from core.people.tokens import hash_secret
    from core.shepherd import Shepherd
    from core.store.db import Database

    command.downgrade(alembic_config(db_url), "0004")

    async def old_tokens() -> None:
        engine = create_async_engine(normalize_url(db_url))
        async with engine.begin() as conn:
            await conn.exec_driver_sql("INSERT INTO org (id, name, created_at) VALUES ('acme', 'acme', "
                                       "CURRENT_TIMESTAMP)")
            for tid, name, scopes in (("tok-1", "me", "read,write,approve"), ("tok-2", "me", "read"),
                                      ("tok-3", "api", "read,write,approve")):
                await conn.exec_driver_sql(
                    "INSERT INTO apitoken (id, org_id, name, prefix, secret_hash, scopes, created_at) VALUES "
                    f"('{tid}', 'acme', '{name}', 'shp_', '{hash_secret(tid)}', '{scopes}', CURRENT_TIMESTAMP)")
        await engine.dispose()

    asyncio.run(old_tokens())
    upgrade(db_url)

    async def after() -> None:
        db = Database(db_url)
        try:
            tokens = Shepherd(db).tokens
            me, me_too, api = [await tokens.authenticate(t) for t in ("tok-1", "tok-2", "tok-3")]
            assert me.is_person and me.name == "me" and me.can(Scope.APPROVE)
            assert me_too.identity == me.identity, "one person's tokens are one voter"
            assert not me_too.can(Scope.APPROVE), "a token keeps its own scopes"
            assert not api.is_person
        finally:
            await db.dispose()

    asyncio.run(after())


def test_the_scheduler_revisions_walk_down_and_up_over_rows_that_use_them(db_url: str) -> None:
    """0011-0013 (digests, reminders and the stall watchdog, pruned workspaces) go down to 0009 and up again with
    rows in the tables they change: a digest, a task with its output time and its workspace pruned, a pending
    confirmation with a reminder due. The task and the confirmation survive both ways."""
    from datetime import timedelta

    from sqlalchemy import update
    from sqlmodel import col

    from bot.presets import agent_catalog
    from core.channels.conversations import Where
    from core.clock import utcnow
    from core.people.access import Principal, Role
    from core.shepherd import Shepherd
    from core.store.db import Database
    from core.store.models import Task
    from tests.test_confirmations import gate, pr_plan

    ops = Principal.for_role("acme", "ops", Role.ADMIN, "test")

    async def rows() -> str:
        db = Database(db_url)
        try:
            shepherd = Shepherd(db, catalog=agent_catalog())
            await shepherd.orgs.ensure("acme")
            view = await shepherd.tasks.create(ops, prompt="work", runtime="demo", name="fix-auth")
            async with db.write() as session:
                await session.exec(update(Task).where(col(Task.id) == view.task.id).values(
                    status="running", state="working", output_at=utcnow(), stall_warned_since=utcnow(),
                    waiting_noted_at=utcnow(), workspace_pruned_at=utcnow()))
            conf = await gate(shepherd, await shepherd.tasks.get(ops, view.task.id), pr_plan())
            assert conf.remind_at is not None
            await shepherd.digests.set(ops, Where("slack", "C1"), "*/5 * * * *")
            return conf.id
        finally:
            await db.dispose()

    conf_id = asyncio.run(rows())
    command.downgrade(alembic_config(db_url), "0009")
    upgrade(db_url)

    async def after() -> None:
        db = Database(db_url)
        try:
            shepherd = Shepherd(db, catalog=agent_catalog())
            task = await shepherd.tasks.get(ops, "fix-auth")
            assert task.name == "fix-auth" and task.output_at is None and task.workspace_pruned_at is None
            conf = await shepherd.confirmations.get(ops, conf_id)
            assert conf.status == "pending" and conf.remind_at is None and conf.reminders == 0
            assert await shepherd.digests.list(ops) == []
            assert await shepherd.reminders.remind_due(utcnow() + timedelta(hours=1)) == "nothing due"
        finally:
            await db.dispose()

    asyncio.run(after())
    assert asyncio.run(_diff(db_url)) == []


def test_a_tasks_log_rows_keep_their_order_down_to_0022_and_up_again(db_url: str) -> None:
    """0023 drops the log rows' foreign key (SQLite rebuilds the table): a task's input and output rows keep their ids,
    times and text both ways; going down, rows whose task is gone are removed (the key would refuse them) and the key
    is back: a row for no task is refused again."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from core.store.db import Database

    async def write(sql: str) -> None:
        engine = create_async_engine(normalize_url(db_url))
        try:
            async with engine.begin() as conn:
                if engine.dialect.name == "sqlite":
                    await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.exec_driver_sql(sql)
        finally:
            await engine.dispose()

    async def logged() -> list[tuple[object, ...]]:
        db = Database(db_url)
        try:
            return [tuple(r) for r in await db.rows(text("SELECT id, task_id, type, content FROM tasklog ORDER BY id"))]
        finally:
            await db.dispose()

    async def a_task() -> str:
        from bot.presets import agent_catalog
        from core.people.access import Principal, Role
        from core.shepherd import Shepherd

        db = Database(db_url)
        try:
            shepherd = Shepherd(db, catalog=agent_catalog())
            await shepherd.orgs.ensure("acme")
            ops = Principal.for_role("acme", "ops", Role.ADMIN, "test")
            return (await shepherd.tasks.create(ops, prompt="fix it", runtime="demo")).task.id
        finally:
            await db.dispose()

    task_id = asyncio.run(a_task())
    asyncio.run(write("INSERT INTO tasklog (id, task_id, time, type, content) VALUES "
                      f"(7, '{task_id}', CURRENT_TIMESTAMP, 'input', 'fix it'), "
                      f"(9, '{task_id}', CURRENT_TIMESTAMP, 'output', 'done'), "
                      "(12, 'task-gone', CURRENT_TIMESTAMP, 'output', 'of a task deleted meanwhile')"))
    kept = [(7, task_id, "input", "fix it"), (9, task_id, "output", "done")]
    assert asyncio.run(logged()) == [*kept, (12, "task-gone", "output", "of a task deleted meanwhile")]
    command.downgrade(alembic_config(db_url), "0022")
    assert asyncio.run(logged()) == kept
    with pytest.raises(IntegrityError):
        asyncio.run(write("INSERT INTO tasklog (task_id, time, type, content) VALUES "
                          "('task-gone', CURRENT_TIMESTAMP, 'output', 'x')"))
    upgrade(db_url)
    assert asyncio.run(logged()) == kept
    assert asyncio.run(_diff(db_url)) == []


def test_rows_of_several_lines_become_a_row_per_line_down_to_0023_with_the_lines_ids(db_url: str) -> None:
    """0024 lets a log row hold the lines of one read, its id its last line's. Going down, each such row becomes a
    row per line with the ids its lines had (no cursor moves, the order stays); the rows of one line are untouched.
    On PostgreSQL the sequence steps by 1024 at 0024 (a row's lines fit under its id) and by 1 below it."""
    from sqlalchemy import text

    from core.store.db import Database

    async def run(*sql: str) -> list[tuple[object, ...]]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                for statement in sql:
                    await session.exec(text(statement))  # type: ignore[call-overload]
            return [tuple(r) for r in await db.rows(text("SELECT id, task_id, type, content FROM tasklog ORDER BY id"))]
        finally:
            await db.dispose()

    rows = asyncio.run(run(
        "INSERT INTO tasklog (id, task_id, time, type, content, lines) VALUES "
        "(5, 't1', CURRENT_TIMESTAMP, 'input', 'fix it\nplease', 1), "
        "(3000, 't1', CURRENT_TIMESTAMP, 'output', 'a\nb\n\nd', 4), "
        "(3001, 't2', CURRENT_TIMESTAMP, 'output', 'alone', 1)"))
    assert len(rows) == 3
    command.downgrade(alembic_config(db_url), "0023")
    lines = [(5, "t1", "input", "fix it\nplease"), (2997, "t1", "output", "a"), (2998, "t1", "output", "b"),
             (2999, "t1", "output", ""), (3000, "t1", "output", "d"), (3001, "t2", "output", "alone")]
    assert asyncio.run(run()) == lines
    if db_url.startswith("postgresql"):
        asyncio.run(run("SELECT setval('tasklog_id_seq', 3001)"))
        after = asyncio.run(run("INSERT INTO tasklog (task_id, time, type, content) VALUES "
                                "('t2', CURRENT_TIMESTAMP, 'output', 'x'), ('t2', CURRENT_TIMESTAMP, 'output', 'y')"))
        assert [r[0] for r in after[-2:]] == [3002, 3003]
        asyncio.run(run("DELETE FROM tasklog WHERE id > 3001"))
    upgrade(db_url)
    assert asyncio.run(run()) == lines
    if db_url.startswith("postgresql"):
        after = asyncio.run(run("INSERT INTO tasklog (task_id, time, type, content) VALUES "
                                "('t2', CURRENT_TIMESTAMP, 'output', 'x'), ('t2', CURRENT_TIMESTAMP, 'output', 'y')"))
        assert after[-1][0] - after[-2][0] == 1024 and after[-2][0] > 3001
    assert asyncio.run(_diff(db_url)) == []
