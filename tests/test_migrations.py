"""Migrations: they build exactly the schema the models describe, and walk down and up again."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import core.models  # noqa: F401
from bot.migrate import alembic_config, current_revision, head_revision, upgrade
from core.db import normalize_url


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
    upgrade(db_url)
    assert asyncio.run(current_revision(db_url)) == head_revision()
    upgrade(db_url)  # idempotent
    assert asyncio.run(_diff(db_url)) == []
