"""Fixtures: a fresh, migrated store per test on SQLite and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from bot.migrate import upgrade
from bot.presets import agent_catalog
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from tests import watchdog
from tests.pgcluster import Cluster, ClusterUnavailable

watchdog.install()
pytest_runtest_protocol = watchdog.pytest_runtest_protocol  # a stuck test tells where it is stuck

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_TEMPLATE = "shepherd_template"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        cluster = Cluster.start()
    except (ClusterUnavailable, OSError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI (CI=true) and could not start: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        asyncio.run(_create_database(cluster, PG_TEMPLATE))
        upgrade(cluster.url(PG_TEMPLATE))
        yield cluster
    finally:
        cluster.stop()


async def _create_database(cluster: Cluster, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(cluster.admin_url)
    try:
        suffix = f" TEMPLATE {template}" if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "shepherd.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database at the current schema, once on each store."""
    return fresh_database(request, tmp_path, request.param)


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database(request, tmp_path, "sqlite")


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database(request, tmp_path, "postgres")


def fresh_database(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "sqlite":
        path = tmp_path / "shepherd.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(cluster, name, template=PG_TEMPLATE))
    return cluster.url(name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


@pytest.fixture
async def shepherd(db: Database) -> Shepherd:
    s = Shepherd(db, catalog=agent_catalog())
    await s.orgs.ensure("acme")
    await s.orgs.ensure("globex")
    return s


def person(role: Role, org: str = "acme", name: str | None = None) -> Principal:
    return Principal.for_role(org, name or role.label, role, "test")


@pytest.fixture
def admin() -> Principal:
    return person(Role.ADMIN)


@pytest.fixture
async def two_cores(db_url: str) -> AsyncIterator[tuple[Shepherd, Shepherd]]:
    """Two cores over two connection pools on one database: two server processes, as far as the store sees."""
    first, second = Database(db_url), Database(db_url)
    a, b = Shepherd(first, catalog=agent_catalog()), Shepherd(second, catalog=agent_catalog())
    await a.orgs.ensure("acme")
    yield a, b
    await first.dispose()
    await second.dispose()
