"""The floor for bench/run.py's API targets: the same work as Shepherd, done by hand.

    .venv/bin/python bench/floor.py PORT DATABASE_URL      # sqlite:///path/shepherd.db or postgresql://...

A bare aiohttp app over Shepherd's own database (the one bench/run.py seeded), with the plain driver:
sqlite3 on SQLite (WAL, synchronous=FULL, as core.store.db sets it; one connection, every statement
inline on the event loop), asyncpg on PostgreSQL (a pool of 10, as Shepherd's; the cluster keeps
synchronous_commit on). No ORM, no framework, no models; per request exactly what Shepherd has to do:

GET /api/agents?limit=N&offset=M
    the bearer token's SHA-256 looked up (the query core.people.tokens runs: the token joined to its user),
    refused if unknown or revoked; COUNT(*) of the org's agents; the page of agents joined to their
    projects, oldest first; the JSON Shepherd answers (adapters/rest/codespar.py summary(): camelCase,
    nulls left out, uptime and ISO timestamps) and X-Total-Count.
POST /api/agents/{id}/action   {"action": "set_autonomy", "params": {"level": L}}
    the token looked up; the body checked; in one transaction: the agent read (its level before, for the
    answer, the event and the `approve` check; FOR UPDATE on PostgreSQL), one UPDATE of the agent, one
    INSERT of its event, COMMIT (fsync'd); the answer Shepherd gives (ActionDone).

Shepherd remembers a valid token for 5 s (core.people.tokens.AUTH_CACHE_SECONDS); the floor looks it up on
every request, as the issue's floor does: Shepherd may beat it by doing less. Other actions, filters and
tokens that act for a person (their role bounding the scopes) are left out: the benchmark sends none.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

MAX_PAGE = 500
TOKEN_SQL = (
    'SELECT apitoken.id, apitoken.org_id, apitoken.scopes, apitoken.user_id, apitoken.revoked_at, "user".id '
    'FROM apitoken LEFT OUTER JOIN "user" ON "user".id = apitoken.user_id WHERE apitoken.secret_hash = {p1}'
)
COUNT_SQL = "SELECT count(*) FROM agent WHERE agent.org_id = {p1}"
PAGE_SQL = (
    "SELECT agent.id, agent.name, agent.type, agent.status, agent.autonomy_level, agent.project_id, agent.task, "
    "agent.started_at, agent.last_activity, project.channels "
    "FROM agent LEFT OUTER JOIN project ON agent.project_id = project.id "
    "WHERE agent.org_id = {p1} ORDER BY agent.created_at, agent.id LIMIT {p2} OFFSET {p3}"
)
READ_SQL = "SELECT autonomy_level, status FROM agent WHERE id = {p1} AND org_id = {p2}"
UPDATE_SQL = "UPDATE agent SET autonomy_level = {p1}, last_activity = {p2} WHERE id = {p3}"
EVENT_SQL = (
    "INSERT INTO event (org_id, agent_id, task_id, category, name, actor, payload, occurred_at) "
    "VALUES ({p1}, {p2}, NULL, 'agent', 'agent.set_autonomy', {p3}, {p4}, {p5})"
)


def sql(template: str, pg: bool) -> str:
    return template.format(**{f"p{i}": f"${i}" if pg else "?" for i in range(1, 6)})


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite keeps SQLAlchemy's text form: 2026-11-22 21:33:00.000000
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def agent_json(row: Any, now: datetime) -> dict[str, Any]:
    """AgentSummary as Shepherd answers it: camelCase, None left out."""
    agent_id, name, kind, status, level, project_id, task, started, last, channels = row
    out: dict[str, Any] = {"id": agent_id, "name": name, "type": kind, "status": status, "autonomyLevel": level}
    if project_id is not None:
        out["projectId"] = project_id
    out["uptime"] = max(0, int((now - as_utc(started)).total_seconds()))
    out["lastActivity"] = iso(as_utc(last))
    if kind == "project":
        out["channels"] = json.loads(channels) if channels else []
    if kind == "task" and task is not None:
        out["task"] = task
    return out


def check_token(row: Any) -> tuple[str, frozenset[str], str]:
    """(org, scopes, actor) of a looked-up token row, or Refused."""
    if row is None or row[4] is not None or (row[3] and row[5] is None):
        raise Refused(401, "INVALID_TOKEN", "invalid or revoked API token")
    token_id, org_id, scopes = row[0], row[1], row[2]
    return org_id, frozenset(s.strip().lower() for s in scopes.replace(",", " ").split()), f"token:{token_id}"


def digest(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    secret = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    if not secret:
        raise Refused(401, "UNAUTHORIZED", "missing API token")
    return hashlib.sha256(secret.encode()).hexdigest()


class SqliteStore:
    """One sqlite3 connection, used inline on the event loop: nothing waits for a thread."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL", "busy_timeout=30000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.token_sql, self.count_sql, self.page_sql = (sql(s, False) for s in (TOKEN_SQL, COUNT_SQL, PAGE_SQL))
        self.read_sql, self.update_sql, self.event_sql = (sql(s, False) for s in (READ_SQL, UPDATE_SQL, EVENT_SQL))

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        return cls(url.split(":///", 1)[1])  # sqlite:///, sqlite+shepherd:///, ...

    async def principal(self, hashed: str) -> tuple[str, frozenset[str], str]:
        return check_token(self.conn.execute(self.token_sql, (hashed,)).fetchone())

    async def page(self, org: str, limit: int, offset: int) -> tuple[int, list[Any]]:
        total = self.conn.execute(self.count_sql, (org,)).fetchone()[0]
        return total, self.conn.execute(self.page_sql, (org, limit, offset)).fetchall()

    async def set_level(self, org: str, agent_id: str, level: int, scopes: frozenset[str],
                        actor: str) -> tuple[int, datetime]:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's text form, as Shepherd writes it
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(self.read_sql, (agent_id, org)).fetchone()
            before = check_agent(row, level, scopes)
            c.execute(self.update_sql, (level, stamp, agent_id))
            c.execute(self.event_sql, (org, agent_id, actor, event_payload(row, before, level), stamp))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return before, now

    async def close(self) -> None:
        self.conn.close()


class PgStore:
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.token_sql, self.count_sql, self.page_sql = (sql(s, True) for s in (TOKEN_SQL, COUNT_SQL, PAGE_SQL))
        self.read_sql = sql(READ_SQL, True) + " FOR UPDATE"
        self.update_sql, self.event_sql = sql(UPDATE_SQL, True), sql(EVENT_SQL, True)

    @classmethod
    async def open(cls, url: str) -> PgStore:
        import asyncpg

        return cls(await asyncpg.create_pool(url.replace("postgresql+asyncpg://", "postgresql://"), min_size=2,
                                             max_size=10))

    async def principal(self, hashed: str) -> tuple[str, frozenset[str], str]:
        async with self.pool.acquire() as conn:
            return check_token(await conn.fetchrow(self.token_sql, hashed))

    async def page(self, org: str, limit: int, offset: int) -> tuple[int, list[Any]]:
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(self.count_sql, org)
            return total, await conn.fetch(self.page_sql, org, limit, offset)

    async def set_level(self, org: str, agent_id: str, level: int, scopes: frozenset[str],
                        actor: str) -> tuple[int, datetime]:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self.read_sql, agent_id, org)
            before = check_agent(row, level, scopes)
            await conn.execute(self.update_sql, level, now, agent_id)
            await conn.execute(self.event_sql, org, agent_id, actor, event_payload(row, before, level), now)
        return before, now

    async def close(self) -> None:
        await self.pool.close()


def check_agent(row: Any, level: int, scopes: frozenset[str]) -> int:
    if row is None:
        raise Refused(404, "AGENT_NOT_FOUND", "Agent not found")
    before = int(row[0])
    if level > before and "approve" not in scopes:
        raise Refused(403, "FORBIDDEN", "raising an agent's autonomy needs the approve scope")
    return before


def event_payload(row: Any, before: int, level: int) -> str:
    return json.dumps({"previousStatus": row[1], "currentStatus": row[1], "previousLevel": before,
                       "currentLevel": level})


def parse_int(value: str | None, default: int, low: int, high: int, name: str) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise Refused(422, "VALIDATION_ERROR", f"{name} must be an integer") from None
    if not low <= n <= high:
        raise Refused(422, "VALIDATION_ERROR", f"{name} must be {low}-{high}")
    return n


def build(store: SqliteStore | PgStore) -> web.Application:
    def refused(exc: Refused) -> web.Response:
        return web.json_response({"error": exc.message, "code": exc.code, "status": exc.status}, status=exc.status)

    async def list_agents(request: web.Request) -> web.Response:
        try:
            org, scopes, _ = await store.principal(digest(request))
            if "read" not in scopes:
                raise Refused(403, "FORBIDDEN", "listing agents needs the read scope")
            limit = parse_int(request.query.get("limit"), 100, 1, MAX_PAGE, "limit")
            offset = parse_int(request.query.get("offset"), 0, 0, 10_000_000, "offset")
            total, rows = await store.page(org, limit, offset)
        except Refused as exc:
            return refused(exc)
        now = datetime.now(UTC)
        body = json.dumps([agent_json(r, now) for r in rows], separators=(",", ":"))
        return web.Response(text=body, content_type="application/json", headers={"X-Total-Count": str(total)})

    async def act(request: web.Request) -> web.Response:
        try:
            org, scopes, actor = await store.principal(digest(request))
            if "write" not in scopes:
                raise Refused(403, "FORBIDDEN", "set_autonomy of an agent needs the write scope")
            try:
                body = json.loads(await request.read())
            except ValueError:
                raise Refused(400, "INVALID_JSON", "the body is not JSON") from None
            params = body.get("params") if isinstance(body, dict) else None
            level = params.get("level") if isinstance(params, dict) else None
            if body.get("action") != "set_autonomy":
                raise Refused(422, "VALIDATION_ERROR", "the floor knows set_autonomy only")
            if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 5:
                raise Refused(422, "INVALID_AUTONOMY_LEVEL", "Autonomy level must be between 0 and 5")
            agent_id = request.match_info["id"]
            before, now = await store.set_level(org, agent_id, level, scopes, actor)
        except Refused as exc:
            return refused(exc)
        return web.Response(text=json.dumps({"id": agent_id, "action": "set_autonomy", "previousLevel": before,
                                             "currentLevel": level, "timestamp": iso(now)}, separators=(",", ":")),
                            content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def closed(_app: web.Application) -> None:
        await store.close()

    app = web.Application()
    app.router.add_get("/api/agents", list_agents)
    app.router.add_post("/api/agents/{id}/action", act)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.on_cleanup.append(closed)
    return app


async def make_app(url: str) -> web.Application:
    return build(await (SqliteStore if url.startswith("sqlite") else PgStore).open(url))


def main() -> None:
    port, url = int(sys.argv[1]), sys.argv[2]
    web.run_app(make_app(url), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
