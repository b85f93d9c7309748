"""SQLite for an asyncio server without a thread hop per statement: the `sqlite+shepherd://` dialect.

aiosqlite runs every cursor call (cursor, execute, fetch, close) on its own thread and wakes the event loop for
each answer: a one-row SELECT cost 1.6 ms of loop CPU against 0.002 ms done by hand. A statement on a local
SQLite file in WAL mode takes microseconds and never waits for a writer, so this driver runs statements on the
event loop itself and hands to a thread only what can block:

- COMMIT of a transaction that wrote (the fsync that makes it durable: synchronous=FULL), and
- BEGIN IMMEDIATE when another process holds the write lock (tried first without waiting; then waited for on a
  thread, up to busy_timeout).

So a read costs no hand-off, and a write transaction one. Statements run through SQLAlchemy's async layer as
before (the dialect is "async": its blocking points are awaited), so `Database` and every caller are unchanged.
A statement that scans a big table blocks the loop while it runs: hot paths keep to indexed, bounded queries.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import AdaptedConnection
from sqlalchemy.engine.url import URL
from sqlalchemy.util.concurrency import await_only, in_greenlet

# Commits of one database are taken in turn (Database's write turn); two threads serve a process's databases.
# Waits for another process's write lock have threads of their own: a commit that would release the lock must
# never queue behind them.
_COMMITS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shepherd-sqlite-commit")
_LOCK_WAITS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="shepherd-sqlite-lock")


async def _settled(future: asyncio.Future[Any]) -> Any:
    """The result of work handed to the thread, waiting for it to end even when the awaiting task is cancelled:
    the connection is not touched again (a rollback on close) while the thread still commits on it, and whether
    the commit happened is known before the cancellation goes on."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


async def _nothing() -> None:
    return None


async def _handed_off(pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
    return await _settled(asyncio.get_running_loop().run_in_executor(pool, fn, *args))


class InlineCursor(sqlite3.Cursor):
    """sqlite3's cursor; its rows are fetched inline when asked for, so there is nothing to close early."""

    async def _async_soft_close(self) -> None:
        return None


class InlineConnection(AdaptedConnection):
    """A sqlite3 connection as SQLAlchemy's async engine wants one: cursors are sqlite3's own (run inline)."""

    __slots__ = ("dbapi", "_raw", "_changes")

    def __init__(self, dbapi: Any, connection: sqlite3.Connection) -> None:
        self.dbapi = dbapi
        self._connection = connection  # type: ignore[assignment]  # SQLAlchemy's slot, typed for async drivers
        self._raw = connection
        self._changes = connection.total_changes

    @property
    def driver(self) -> sqlite3.Connection:
        """The sqlite3 connection itself (core.store.db.Direct runs hot statements on it)."""
        return self._raw

    @property
    def isolation_level(self) -> str | None:
        return self._raw.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._raw.isolation_level = value  # type: ignore[assignment]  # None, as _sqlite_pragmas sets it

    def cursor(self, server_side: bool = False) -> sqlite3.Cursor:
        # SQLAlchemy's AsyncConnection.execute insists that a statement awaited something (to catch sync drivers
        # used by mistake): one greenlet switch to the loop's side and back, a microsecond, no loop iteration.
        if in_greenlet():
            await_only(_nothing())
        return self._raw.cursor(InlineCursor)

    def execute(self, *args: Any, **kw: Any) -> sqlite3.Cursor:
        return self._raw.execute(*args, **kw)

    def create_function(self, *args: Any, **kw: Any) -> None:
        self._raw.create_function(*args, **kw)

    def begin_immediate(self, busy_timeout_ms: int) -> None:
        """Take the write lock now; wait for another process's writer on the thread, not on the loop."""
        raw = self._raw
        raw.execute("PRAGMA busy_timeout=0")
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raw.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            try:
                await_only(_handed_off(_LOCK_WAITS, raw.execute, "BEGIN IMMEDIATE"))
            except BaseException:
                # cancelled while the thread waited, the lock may have come anyway: it must not stay taken
                if raw.in_transaction:
                    raw.rollback()
                raise
        finally:
            raw.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")

    def commit(self) -> None:
        raw = self._raw
        if raw.in_transaction and raw.total_changes != self._changes:
            await_only(_handed_off(_COMMITS, raw.commit))  # it wrote: the fsync waits on the thread
        else:
            raw.commit()  # a reader's snapshot ends without touching the disk
        self._changes = raw.total_changes

    @property
    def in_transaction(self) -> bool:
        return self._raw.in_transaction

    def rollback(self) -> None:
        self._raw.rollback()  # WAL: nothing to write back
        self._changes = self._raw.total_changes

    def close(self) -> None:
        self._raw.close()


class _InlineDBAPI:
    """The DB-API module face SQLAlchemy's SQLite dialect reads (errors, paramstyle, version, connect)."""

    paramstyle = "qmark"

    def __init__(self) -> None:
        for name in ("DatabaseError", "Error", "IntegrityError", "NotSupportedError", "OperationalError",
                     "ProgrammingError", "InterfaceError", "InternalError", "DataError", "Warning",
                     "sqlite_version", "sqlite_version_info", "PARSE_COLNAMES", "PARSE_DECLTYPES", "Binary"):
            setattr(self, name, getattr(sqlite3, name))

    def connect(self, *args: Any, **kw: Any) -> InlineConnection:
        kw.pop("async_fallback", None)
        kw["check_same_thread"] = False  # commits run on the hand-off thread; one user at a time (the pool)
        return InlineConnection(self, sqlite3.connect(*args, **kw))


class SQLiteDialect_inline(SQLiteDialect_pysqlite):
    driver = "shepherd"
    supports_statement_cache = True
    is_async = True
    has_terminate = False

    @classmethod
    def import_dbapi(cls) -> Any:
        return _InlineDBAPI()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool if cls._is_url_file_db(url) else pool.StaticPool

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._raw

    # Savepoints straight to the driver: SQLAlchemy compiles each SAVEPOINT anew (every name is new, so its
    # statement cache never hits), ~0.15 ms each, and every grouped write takes two.
    def do_savepoint(self, connection: Any, name: str) -> None:
        connection.connection.dbapi_connection.execute(f'SAVEPOINT "{name}"')

    def do_release_savepoint(self, connection: Any, name: str) -> None:
        connection.connection.dbapi_connection.execute(f'RELEASE SAVEPOINT "{name}"')

    def do_rollback_to_savepoint(self, connection: Any, name: str) -> None:
        raw = connection.connection.dbapi_connection
        if raw.in_transaction:  # else SQLite ended it all: the writers' Database learns it (and the error stands)
            raw.execute(f'ROLLBACK TO SAVEPOINT "{name}"')


registry.register("sqlite.shepherd", __name__, "SQLiteDialect_inline")

