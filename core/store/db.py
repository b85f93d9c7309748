"""The one SQL store: SQLite (WAL) embedded by default, PostgreSQL (asyncpg) to scale out.

SQLite runs through core.store.sqlite_inline: statements on the event loop, a write's commit on a thread.

Every write is a transaction of its own (`Database.write`), unless it runs inside a unit of work
(`Database.unit`): then it joins the unit's one transaction as a savepoint, and the unit commits once. A
channel's command is one unit: its effect, its answer in the outbox and its ledger item settled, one commit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Executable, Result, Row, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, ShepherdError, TryLater
from core.store import sqlite_inline  # registers sqlite+shepherd://
from core.store.direct import Direct, Statements
from core.store.unit import CURRENT_UNIT, Unit

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_POOL = 32  # connections kept open (and as many more at a peak)
# PostgreSQL: connections a process keeps open, and how many more it opens at a peak. None beyond the kept ones: a
# connection opened per request above them (and closed after) cost a third of the agent list's time at 32
# concurrent requests (py-spy: asyncpg's connect, its TLS attempt and the server's backend start); a request waits
# for one instead. Twelve, not more: asyncpg prepares each statement once per connection (a round trip of its own),
# so with 40 a burst of a hundred tasks prepared each hot statement up to 40 times (640 prepares a round), over 40
# backends on a machine with a few cores; and a process leaves room for others under PostgreSQL's max_connections.
# A unit of work holds two at once (its transaction and a read outside it): one per channel's worker.
PG_POOL, PG_PEAK = 12, 0
PG_POOL_WAIT_S = 30.0  # how long a request waits for one of them before it is told the store is busy


class _BusyPool(AsyncAdaptedQueuePool):
    """PostgreSQL's pool: a request that waited PG_POOL_WAIT_S for a connection, every one in use, is answered that
    the store is busy (TryLater: a 503, an item tried again), not with an internal error."""

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except PoolTimeout as exc:
            raise TryLater(f"the database is busy: all {self.size()} connections stayed in use for "
                           f"{self._timeout:.0f} s; try again shortly", code="DATABASE_BUSY") from exc


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `postgresql://`, `sqlite:///`) and pick async drivers."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite+aiosqlite://", "sqlite+shepherd://"),  # the driver of earlier versions
        ("sqlite://", "sqlite+shepherd://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+shepherd://")):
        return url
    raise ShepherdError(
        f"unsupported database URL scheme in {url.split('://')[0]!r}: use sqlite:///path or postgresql://…",
        code="BAD_DATABASE_URL",
    )


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver would open transactions only before INSERT/UPDATE/DELETE, leaving a read-then-write
    # unprotected against other processes; Shepherd begins them itself (_sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives power loss too
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """Writers take SQLite's write lock when they begin (BEGIN IMMEDIATE): what a write transaction read
    cannot be changed by another process before it commits. Readers begin a plain snapshot."""
    options = conn.get_execution_options()
    if options.get(_ALONE, False):
        return  # one statement on its own (Database.rows): its own snapshot, no transaction to begin or end
    if options.get(_IMMEDIATE, False):
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, sqlite_inline.InlineConnection)
        raw.begin_immediate(SQLITE_BUSY_TIMEOUT_MS)
    else:
        conn.exec_driver_sql("BEGIN")


_IMMEDIATE = "shepherd_sqlite_immediate"
_ALONE = "shepherd_statement_alone"


def _json_loads(text: str | bytes) -> Any:
    """JSON columns read back with orjson (a fifth of json.loads' time: lists decode one per row); what orjson
    refuses and the standard library reads (NaN, integers past 64 bits) still reads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _sqlite_checkin(dbapi_connection: Any, _record: Any) -> None:
    """A connection comes back outside any transaction (sessions end theirs; this catches what a cancellation
    left open, which would hold SQLite's write lock for as long as the connection idles in the pool)."""
    if dbapi_connection is not None and dbapi_connection.in_transaction:
        dbapi_connection.rollback()


class _Group:
    """SQLite writes that share one transaction and one commit: each writer's block is a savepoint of it, done
    in turn; the writers wait for the commit, which a flusher makes once the writers queued behind them are in."""

    def __init__(self, session: AsyncSession, raw: sqlite_inline.InlineConnection) -> None:
        self.session = session
        self.raw = raw
        self.members: list[asyncio.Future[None]] = []
        self.lost = False


class TransactionLost(TryLater):
    """SQLite ended the shared transaction itself (a statement that rolls back everything, a full disk, an I/O
    error): nothing of it was written."""

    code = "STORE_ROLLED_BACK"


class Database:
    """Sessions for reading and for writing. On SQLite, writers in one process take turns.

    SQLite allows one writer at a time; a transaction that reads and then writes can fail at once with
    "database is locked" when another connection writes first, busy_timeout notwithstanding. Taking
    writes in turn inside the process removes that failure; other processes still wait on busy_timeout.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite and self.url.split("://", 1)[1] in ("", "/", "/:memory:"):
            raise ShepherdError("SQLite in memory is not supported (every process and connection must see one store): "
                                "use a file, sqlite:///path/to/shepherd.db", code="BAD_DATABASE_URL")
        kwargs: dict[str, Any] = {"echo": echo, "json_deserializer": _json_loads}
        if self.is_sqlite:
            # Sessions end every transaction themselves (commit, or rollback on close); the pool's own
            # rollback on return would be a second statement on every request.
            # Connections stay open: a new one costs its PRAGMAs and a file open, and concurrent requests each
            # hold one for a moment (a session is handed back a loop turn after its block). With the default 5
            # kept, a burst opened and closed a connection for every other request.
            kwargs.update(pool_reset_on_return=None, pool_size=SQLITE_POOL, max_overflow=SQLITE_POOL)
        else:
            # No pre-ping: it costs three round trips per checkout (measured: 4.4 ms against 2.6 ms for a
            # SELECT 1); recycling connections bounds how stale one can get instead.
            kwargs.update(poolclass=_BusyPool, pool_size=PG_POOL, max_overflow=PG_PEAK, pool_timeout=PG_POOL_WAIT_S,
                          pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            ensure_sqlite_dir(self.url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
            event.listen(self.engine.sync_engine.pool, "checkin", _sqlite_checkin)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        # A reader on PostgreSQL gains nothing from a transaction (READ COMMITTED gives each statement its own
        # snapshot either way) and pays two round trips for it (BEGIN, ROLLBACK): its statements autocommit.
        # On SQLite a reader's transaction is one snapshot for all its statements, and costs no round trip.
        self._readers = self._sessions if self.is_sqlite else async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), class_=AsyncSession,
            expire_on_commit=False)
        # One read statement alone needs no transaction on either store: a single statement is its own snapshot.
        self._alone = self.engine.execution_options(
            **({_ALONE: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}))
        self._write_turn = asyncio.Lock() if self.is_sqlite else None
        self._writing: set[asyncio.Task[Any]] = set()  # tasks inside a write transaction now
        self._group: _Group | None = None  # SQLite: the open transaction the next writers join
        self._flusher: asyncio.Task[None] | None = None
        self._statements = Statements(self.engine.sync_engine.dialect)  # what Direct runs on SQLite's driver
        self._savepoints = itertools.count()

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def _joined(self) -> Unit | None:
        """The unit of work this task has open on this database, if any."""
        unit = CURRENT_UNIT.get()
        if unit is not None and unit.db is self and unit.owner is asyncio.current_task():
            return unit
        return None

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Unit]:
        """One transaction for every write inside the block: committed once when it ends, rolled back if it
        raises. Each `write()` inside joins it as a savepoint (a write that raises undoes only itself, as its
        own transaction would have). It begins at the first write, so what runs before (reading, asking a
        remote host) holds no lock; what runs after the first write should be quick, as it holds the store's
        write lock on SQLite. Inside a unit, nested units are part of it; other asyncio tasks never join it."""
        outer = self._joined()
        if outer is not None:
            yield outer
            return
        unit = Unit(self)
        token = CURRENT_UNIT.set(unit)
        try:
            yield unit
            if unit.session is not None:
                await unit.session.commit()
        except IntegrityError as exc:
            raise _conflict() from exc
        finally:
            CURRENT_UNIT.reset(token)
            await unit.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        unit = self._joined()
        if unit is not None and unit.session is not None:  # what this unit wrote so far is read too
            yield unit.session
            return
        async with self._readers() as session:
            yield session

    async def rows(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Row[Any]]:
        """The rows of one read statement (SQLAlchemy Core), for hot paths: no session, no ORM objects, no
        transaction begun or ended around it (one statement is consistent by itself). Inside a unit of work it
        reads through the unit, so it sees what the unit wrote."""
        unit = self._joined()
        reading = await unit.reading() if unit is not None else None
        if reading is not None:
            return (await reading.execute(statement, params)).all()
        async with self._alone.connect() as conn:
            return (await conn.execute(statement, params)).all()

    async def change(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Result[Any]:
        """One statement that writes, on its own (its rows buffered): atomic by itself, so on PostgreSQL it runs
        without a BEGIN and a COMMIT around it (one round trip); on SQLite it is a write like any other (it shares
        a commit). Inside a unit of work it is part of the unit. A unique or foreign-key violation is a 409."""
        unit = self._joined()
        try:
            if self.is_sqlite or unit is not None:
                async with self.write() as session:
                    return (await (await session.connection()).execute(statement, params)).freeze()()
            async with self._alone.connect() as conn:
                return (await conn.execute(statement, params)).freeze()()
        except IntegrityError as exc:
            raise _conflict() from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction committed on normal exit and rolled back on any exception (inside a unit of work: a
        savepoint of the unit's transaction).

        A unique or foreign-key violation (two requests racing to create the same name) is a 409, not a 500.

        On SQLite the writers that arrive together share one commit, so a block must be quick and must never wait
        for another task (least of all one that writes): the writers before it wait for its end to be told their
        own writes are on disk. Ask the network before the block, not inside it.
        """
        unit = self._joined()
        if unit is not None:
            session = await unit.begin()
            try:
                async with session.begin_nested():
                    yield session
            except IntegrityError as exc:
                raise _conflict() from exc
            return
        if self._write_turn is None:
            try:
                with self._one_write():
                    async with self._sessions() as session, session.begin():
                        yield session
            except IntegrityError as exc:
                raise _conflict() from exc
            return
        async with self._in_group() as group:
            try:
                async with group.session.begin_nested():
                    yield group.session
            finally:
                # what the block loaded is its own: the next writer starts from the store, not its objects
                group.session.expunge_all()

    @asynccontextmanager
    async def direct(self) -> AsyncIterator[Direct]:
        """A write like `write()` (on SQLite a savepoint of the shared group, committed with it), whose statements
        run through `Direct`: on SQLite straight on the driver's connection. For hot paths of a few Core
        statements; a unique or foreign-key violation is a 409."""
        if self._write_turn is None or self._joined() is not None:
            async with self.write() as session:
                yield Direct(self._statements, None, session)
            return
        async with self._in_group() as group:
            raw = group.raw.driver
            name = f"direct_{next(self._savepoints)}"
            raw.execute(f'SAVEPOINT "{name}"')
            try:
                yield Direct(self._statements, raw, None)
                raw.execute(f'RELEASE SAVEPOINT "{name}"')
            except BaseException:
                if raw.in_transaction:  # else SQLite ended it all: the group's writers learn it
                    raw.execute(f'ROLLBACK TO SAVEPOINT "{name}"')
                    raw.execute(f'RELEASE SAVEPOINT "{name}"')
                raise

    @contextmanager
    def _one_write(self) -> Iterator[None]:
        """A task's write transaction, refused inside another of the same task: SQLite's writers take turns on one
        lock, so a second write inside the first would wait for itself forever."""
        me = asyncio.current_task()
        if me is not None and me in self._writing:
            raise RuntimeError("a write transaction was opened inside another in the same task: pass the session")
        if me is not None:
            self._writing.add(me)
        try:
            yield
        finally:
            if me is not None:
                self._writing.discard(me)

    @asynccontextmanager
    async def _in_group(self) -> AsyncIterator[_Group]:
        """SQLite: the write turn, then the caller's block (its own savepoint) in the group's transaction; after the
        turn is given back, the wait for the group's commit. Writers that arrive together share one commit (one
        fsync, one hand-off to the commit thread) instead of taking one each in turn."""
        assert self._write_turn is not None
        try:
            with self._one_write():
                member: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                async with self._write_turn:
                    group = self._group or await self._open_group()
                    try:
                        yield group
                    finally:
                        if not group.raw.in_transaction:
                            await self._lost(group)  # SQLite ended the transaction: its writers learn it now
                        elif self._flusher is None or self._flusher.done():
                            self._flusher = asyncio.get_running_loop().create_task(self._flush())
                    group.members.append(member)
                    if group.lost:
                        raise TransactionLost("the store rolled back the writes made together with this one; "
                                              "nothing of it was written: try again")
                await member
        except (IntegrityError, sqlite3.IntegrityError) as exc:
            raise _conflict() from exc

    async def _begun(self) -> AsyncSession:
        """A new session with its write transaction begun: on SQLite with BEGIN IMMEDIATE, the write lock taken now
        rather than at the first write (where a reader's snapshot could make it fail at once)."""
        session = self._sessions()
        try:
            await session.begin()
            if self.is_sqlite:
                await session.connection(execution_options={_IMMEDIATE: True})
        except BaseException:
            await session.close()
            raise
        return session

    async def _open_group(self) -> _Group:
        session = await self._begun()
        try:
            raw = (await (await session.connection()).get_raw_connection()).dbapi_connection
            assert isinstance(raw, sqlite_inline.InlineConnection)
        except BaseException:
            await session.close()
            raise
        self._group = _Group(session, raw)
        return self._group

    async def _lost(self, group: _Group) -> None:
        """The group's transaction is gone: every writer in it so far learns that nothing was written."""
        group.lost = True
        if self._group is group:
            self._group = None
        error = TransactionLost("the store rolled back the writes made together with this one; nothing of it was "
                                "written: try again")
        for member in group.members:
            if not member.done():
                member.set_exception(error)
        await group.session.close()

    async def _flush(self) -> None:
        """Takes the turn after the writers already waiting for it (they join the group) and commits."""
        assert self._write_turn is not None
        async with self._write_turn:
            await self._commit_group()

    async def _commit_group(self) -> None:
        """Commits the open group (the caller holds the write turn) and tells its writers how it went. The commit
        is a task of its own: a caller cancelled meanwhile waits for it to end (the turn is not given back while
        the commit runs) and alone learns of its cancellation; the writers learn what really happened."""
        group, self._group = self._group, None
        if group is None:
            return
        finishing = asyncio.ensure_future(self._finish(group))
        cancelled = False
        while not finishing.done():
            try:
                await asyncio.shield(finishing)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    async def _finish(self, group: _Group) -> None:
        error: BaseException | None = None
        try:
            if group.members:
                await group.session.commit()
        except IntegrityError as exc:
            error = _conflict()
            error.__cause__ = exc
        except BaseException as exc:  # every writer of the group learns that nothing of it was written
            error = exc
        finally:
            await group.session.close()
        for member in group.members:
            if not member.done():
                if error is None:
                    member.set_result(None)
                else:
                    member.set_exception(error)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
        await self.engine.dispose()


def _conflict() -> Conflict:
    return Conflict("that conflicts with data written at the same moment; read it again and retry", code="CONFLICT")
