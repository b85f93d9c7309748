"""Schema migrations (alembic). `shepherd migrate` runs them; `serve` does too on the embedded SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from core.store.db import ensure_sqlite_dir, normalize_url

SCRIPTS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    # Passed as an attribute, not an option: URLs with '%' in a password break ini interpolation.
    cfg.attributes["url"] = normalize_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Blocking: call it before the event loop, or in a thread."""
    cfg = alembic_config(url)
    ensure_sqlite_dir(cfg.attributes["url"])
    command.upgrade(cfg, revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def current_revision(url: str) -> str | None:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()


def current_revision_sync(url: str) -> str | None:
    return asyncio.run(current_revision(url))
