"""Leader election: one process of a deployment runs the scheduler (and polls Telegram) at a time.

PostgreSQL: a session-level advisory lock (pg_try_advisory_lock) held on a connection of its own, opened with
asyncpg outside SQLAlchemy's pool (a pooled connection goes back to the pool, and a lock with it), named
`shepherd leader host:pid` (application_name) so that pg_locks joined with pg_stat_activity shows who leads. The
leader checks that connection every SHEPHERD_LEADER_TIMEOUT/3 and stops leading the moment it fails (asyncpg
reports a closed connection at once; a silent one fails the check). PostgreSQL drops a vanished leader's session,
and with it the lock, through TCP keepalives set to notice within the timeout, and (PostgreSQL 14 and later) a
session idle past the timeout, which is a leader alive but stuck (its kernel still answers keepalives); followers
try again every timeout/3, so one takes over within about the timeout. A session lock needs a session: through a
transaction pooler (pgbouncer in transaction mode) it would be released at once, so SHEPHERD_LEADER_DATABASE_URL can
point at a direct connection.

SQLite: the one serving process leads; should an operator start two on one database, an exclusive flock on
`<database file>.leader.lock` beside it (which holds `host:pid`) makes only one of them lead, and the other takes over
when it ends.

Bot-side because it opens its own connection and file; core sees it as a core.schedule.leader.Leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.schedule.leader import APP_PREFIX, LOCK_KEY, NAME_MAX, me, pg_leader
from core.store.db import Database

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
QUIET_S = 300.0  # a follower that cannot reach the lock's database says so once every five minutes


class Elector:
    """Campaigns in the background (start/stop, a Service); calls `on_elected` when this process becomes the leader
    and `on_deposed` when it stops being it (lost lock or connection, or stop)."""

    name = "leader"

    def __init__(self, *, timeout: float) -> None:
        self.me = me()
        self.timeout = timeout
        self.every = max(0.2, timeout / 3)  # check (leader) and retry (follower) period
        self.on_elected: Hook | None = None
        self.on_deposed: Hook | None = None
        self._leads = False
        self._campaign: asyncio.Task[None] | None = None

    @property
    def leads(self) -> bool:
        return self._leads

    async def start(self) -> None:
        self._campaign = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
            self._campaign = None
        await self._deposed()

    async def leader(self) -> str | None:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError

    async def _elected(self) -> None:
        self._leads = True
        log.info("leader: %s leads now (scheduler on)", self.me)
        if self.on_elected is not None:
            try:
                await self.on_elected()
            except Exception:
                log.exception("leader: starting what the leader runs failed; letting go of the lead")
                raise

    async def _deposed(self) -> None:
        if not self._leads:
            return
        self._leads = False
        log.warning("leader: %s no longer leads (scheduler off)", self.me)
        if self.on_deposed is not None:
            await self.on_deposed()


class PgElector(Elector):
    def __init__(self, url: str, db: Database, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.url = asyncpg_dsn(url)
        self.db = db
        self._quiet_until = 0.0  # a follower's next connection failure said before this (loop time) is not said

    async def leader(self) -> str | None:
        return await pg_leader(self.db)

    async def _connect(self) -> Any:
        import asyncpg

        idle = max(1, int(self.timeout / 3))
        conn = await asyncio.wait_for(asyncpg.connect(self.url, server_settings={
            "application_name": (APP_PREFIX + self.me)[:NAME_MAX],
            # The server's side of TCP keepalives: a leader's host that vanishes (no FIN, no RST) is noticed
            # within about the timeout, its session ended and the lock freed for a follower.
            "tcp_keepalives_idle": str(idle), "tcp_keepalives_interval": str(max(1, idle // 3)),
            "tcp_keepalives_count": "3",
        }), timeout=self.timeout)
        try:
            if conn.get_server_version() >= (14,):  # idle_session_timeout is PostgreSQL 14's (a startup setting
                # unknown to an older server would refuse the connection)
                # A leader alive but stuck (an event loop blocked, a process stopped, a proxy between that still
                # answers) checks nothing, and keepalives, answered by its kernel, keep its session: the session
                # idle past the timeout ends, the lock with it, and a follower takes over.
                await conn.execute(f"SET idle_session_timeout = {max(1000, int(self.timeout * 1000))}")
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _run(self) -> None:
        while True:
            conn: Any = None
            try:
                conn = await self._connect()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                # a follower asks again every `every` (a lock has no waiting list we could sit in without blocking)
                while True:
                    if await asyncio.wait_for(conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY),
                                              timeout=self.every):
                        break
                    await asyncio.sleep(self.every)
                await self._elected()
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=self.every)
                    if lost.is_set():
                        raise ConnectionError("the lock's connection closed")
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self.every)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A leader's loss is always said; a follower's failure once every QUIET_S: one that can never
                # connect (a wrong SHEPHERD_LEADER_DATABASE_URL, a refused password) never leads, and then no
                # process may run the jobs without a word.
                now = asyncio.get_running_loop().time()
                loud = self._leads or now >= self._quiet_until
                if not self._leads and loud:
                    self._quiet_until = now + QUIET_S
                log.log(logging.WARNING if loud else logging.DEBUG, "leader: %s: lock connection failed (%s: %s); "
                        "trying again every %gs", self.me, type(exc).__name__, exc, self.every)
            finally:
                await self._deposed()
                if conn is not None:
                    conn.terminate()  # never a polite close that could wait on a dead peer
            await asyncio.sleep(self.every)


class FileElector(Elector):
    def __init__(self, path: Path, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.path = path
        self._fd: int | None = None

    async def leader(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: the holder wrote its name
                return os.pread(fd, 300, 0).decode(errors="replace").strip() or "unknown"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.me.encode(), 0)
        self._fd = fd
        return True

    async def _run(self) -> None:
        while True:
            try:
                while True:  # flock has no asynchronous wait: ask again every `every`
                    if self._try():
                        break
                    await asyncio.sleep(self.every)
                await self._elected()
                await asyncio.Event().wait()  # a file lock is held until this process lets go of it or ends
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leader: %s: %s; trying again", type(exc).__name__, exc)
            finally:
                await self._deposed()
                self._release()
            await asyncio.sleep(self.every)

    def _release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy-style PostgreSQL URL as asyncpg takes it."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def lock_file(url: str, data_dir: Path) -> Path:
    """Where SQLite's processes meet: beside the database file (two processes given one database through different
    data directories, or relative paths from different folders, still find one lock), else in the data directory."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).resolve()
        return path.with_name(path.name + ".leader.lock")
    return data_dir / "leader.lock"


def elector(db: Database, *, url: str, data_dir: Path, timeout: float, leader_url: str | None = None) -> Elector:
    """The election this deployment's store allows."""
    if db.is_sqlite:
        return FileElector(lock_file(url, data_dir), timeout=timeout)
    return PgElector(leader_url or url, db, timeout=timeout)
