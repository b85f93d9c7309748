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
from tests.engines import real_docker_host, real_engine  # noqa: F401 (fixtures for every test module)
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
    if _EMPTIED:
        name = _EMPTIED.pop()
    else:
        name = f"t_{uuid.uuid4().hex[:12]}"
        asyncio.run(_create_database(cluster, name, template=PG_TEMPLATE))
    request.addfinalizer(lambda: _empty_for_reuse(cluster, name))
    return cluster.url(name)


# PostgreSQL databases a finished test left, emptied for the next: CREATE DATABASE from the template costs
# 0.1-0.35 s (a copy of the template's files and a checkpoint), emptying its few rows about 5 ms.
_EMPTIED: list[str] = []


def _empty_for_reuse(cluster: Cluster, name: str) -> None:
    try:
        asyncio.run(_empty(cluster, name))
    except Exception:  # a test changed more than rows (a migration test's downgrade): the database is not reused
        return
    _EMPTIED.append(name)


async def _empty(cluster: Cluster, name: str) -> None:
    admin = await asyncpg.connect(cluster.admin_url)
    try:  # whatever the test left connected (a server it started, a stopped process) lets go: locks, sessions
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await admin.close()
    conn = await asyncpg.connect(cluster.url(name))
    try:
        head = await conn.fetchval("SELECT version_num FROM alembic_version")
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                  "AND tablename <> 'alembic_version' ORDER BY tablename")
        sequences = await conn.fetch("SELECT sequencename, min_value FROM pg_sequences WHERE schemaname = 'public'")
        shape = (head, tuple(r[0] for r in tables))
        if _TEMPLATE_SHAPE and shape != _TEMPLATE_SHAPE[0]:
            raise RuntimeError(f"{name} is not at the template's schema")
        async with conn.transaction():
            # replica: no trigger runs (the count triggers, the foreign keys' checks), so the order is free
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("".join(f'DELETE FROM "{r[0]}";' for r in tables))
            for r in sequences:
                await conn.execute("SELECT setval($1::regclass, $2, false)", f'"{r[0]}"', r[1])
        if not _TEMPLATE_SHAPE:
            _TEMPLATE_SHAPE.append(await _template_shape(cluster))
            if shape != _TEMPLATE_SHAPE[0]:
                raise RuntimeError(f"{name} is not at the template's schema")
    finally:
        await conn.close()


_TEMPLATE_SHAPE: list[tuple[str, tuple[str, ...]]] = []


async def _template_shape(cluster: Cluster) -> tuple[str, tuple[str, ...]]:
    conn = await asyncpg.connect(cluster.url(PG_TEMPLATE))
    try:
        head = await conn.fetchval("SELECT version_num FROM alembic_version")
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                  "AND tablename <> 'alembic_version' ORDER BY tablename")
        return head, tuple(r[0] for r in tables)
    finally:
        await conn.close()


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


# last: the rig imports tests that import this module's helpers
from tests.browser import chromium, ui  # noqa: E402, F401 (the dashboard rig, for every test module)
