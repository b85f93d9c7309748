"""Schema migrations (alembic). `shepherd migrate` runs them; `serve` does too on the embedded SQLite.

alembic is imported only to migrate: a server whose schema is current never loads it (11 MB of its memory). The
schema's revision is read from alembic's own table, and the newest one from the migrations' files."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from core.store.db import ensure_sqlite_dir, normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPTS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"^revision(?:\s*:[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    # Passed as an attribute, not an option: URLs with '%' in a password break ini interpolation.
    cfg.attributes["url"] = normalize_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Blocking: call it before the event loop, or in a thread."""
    from alembic import command

    cfg = alembic_config(url)
    ensure_sqlite_dir(cfg.attributes["url"])
    command.upgrade(cfg, revision)


def head_revision() -> str:
    """The newest migration's revision: the one no other migration follows (the history is one line)."""
    revisions: dict[str, str | None] = {}
    for script in (SCRIPTS / "versions").glob("*.py"):
        source = script.read_text()
        found = _REVISION.search(source)
        if found is not None:
            down = _DOWN.search(source)
            revisions[found.group(1)] = down.group(1) if down else None
    heads = set(revisions) - set(revisions.values())
    if len(heads) != 1:
        raise RuntimeError(f"the migrations in {SCRIPTS / 'versions'} have {len(heads)} heads, not one: "
                           f"{sorted(heads)}")
    return heads.pop()


async def current_revision(url: str) -> str | None:
    """The revision the database's schema is at (alembic's table), None for a database never migrated."""
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: inspect(c).has_table("alembic_version")):
                return None
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()


def current_revision_sync(url: str) -> str | None:
    return asyncio.run(current_revision(url))
