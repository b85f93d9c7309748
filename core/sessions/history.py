"""A session's history: its replay (core.sessions.replay's entries, from its tasks' logs and its events) a page
at a time or followed live, and its event log, newest first.

A session's tasks are those with `task.session_id = S`; its events are its own (`event.session_id = S`) and its
tasks' (`event.task_id IN its tasks`). Every read is bounded: a page of rows per source, never the whole log.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlmodel import col
from sqlmodel import select as orm_select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.people.access import Principal, Scope
from core.sessions.replay import SILENT, Entry, Mark, Source, entries_source, event_entries, log_entry
from core.sessions.rows import ARCHIVED, DELETED, readable_session
from core.store.db import Database
from core.store.models import Event, Session, Task, TaskLog, table_of
from core.tasks.loglines import split

REPLAY_PAGE = 1000  # entries per page of a replay (and per read of a followed one)
MAX_REPLAY_PAGE = 5000
EVENTS_PAGE = 50
MAX_EVENTS_PAGE = 500
FOLLOW_POLL_S = 0.5  # a followed replay asks for new rows this often: two indexed reads
# A row's id is taken when it is inserted, and on PostgreSQL a transaction that began earlier may commit after a
# later one: a followed replay reads again the ids of the last few seconds, so that a row committed late is not
# skipped, and remembers what it sent meanwhile so that nothing is sent twice.
SETTLE_S = 5.0

_T, _L, _E = table_of(Task), table_of(TaskLog), table_of(Event)


@dataclass(frozen=True)
class ReplayPage:
    session_id: str
    entries: list[Entry]
    counts: dict[Source, int]
    next_after: str | None  # the last entry's id when more follow

    @property
    def source(self) -> str:
        return entries_source(self.counts)


@dataclass(frozen=True)
class Ended:
    """The end of a followed replay: the session was archived or deleted."""

    reason: str


_LOG_ROW = (_L.c.id, _L.c.task_id, _L.c.time, _L.c.type, _L.c.content, _L.c.lines)


def _log_entries(rows: Sequence[Any], mark: Mark | None = None, limit: int | None = None) -> list[Entry]:
    """Log rows (_LOG_ROW, in replay order) as an entry per line they hold (core.tasks.loglines): the first `limit`
    after `mark` (a row's first lines may be before it; a row may hold a thousand: only those asked for are made)."""
    entries: list[Entry] = []
    for r in rows:
        for line_id, line in split(r.id, r.lines, r.content):
            entry = log_entry(line_id, r.task_id, r.time, r.type, line)
            if mark is not None and entry.mark <= mark:
                continue
            if limit is not None and len(entries) >= limit:
                return entries
            entries.append(entry)
    return entries


def _whole_rows(rows: Sequence[Any], lines: int) -> Sequence[Any]:
    """The first rows holding `lines` lines or fewer between them (at least one row): what a followed replay sends
    in one read, the rest read next."""
    total = 0
    for at, r in enumerate(rows):
        total += r.lines
        if total > lines and at:
            return rows[:at]
    return rows


def _tasks_of(session_id: str) -> Any:
    return select(_T.c.id).where(_T.c.session_id == session_id)


def _events_of(org_id: str, session_id: str) -> ColumnElement[bool]:
    return and_(_E.c.org_id == org_id, or_(_E.c.session_id == session_id, _E.c.task_id.in_(_tasks_of(session_id))))


def _after(at: Any, row_id: Any, kind: str, mark: Mark) -> ColumnElement[bool]:
    """Rows of one source (`kind`) whose entries may come after `mark`. Exact for log rows; an event at the mark
    itself is read again (its later entries may not have been sent) and its entries are filtered by mark."""
    t = mark.time
    if kind > mark.kind:  # at the same microsecond this source's entries come after the mark's
        return at >= t  # type: ignore[no-any-return]
    if kind < mark.kind:
        return at > t  # type: ignore[no-any-return]
    same = row_id > mark.row if kind == "l" else row_id >= mark.row
    return or_(at > t, and_(at == t, same))


class SessionHistory:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def session(self, principal: Principal, session_id: str) -> Session:
        """A session the principal may read (404 otherwise): checked before a stream begins."""
        principal.require(Scope.READ, "reading a session")
        async with self.db.read() as session:
            return await readable_session(session, principal, session_id)

    async def replay(
        self, principal: Principal, session_id: str, *, after: str | None = None, limit: int = REPLAY_PAGE,
    ) -> ReplayPage:
        """The session's entries in time order: the first `limit` (at most 5000) after the entry `after`."""
        principal.require(Scope.READ, "reading a session")
        mark = Mark.parse(after) if after else None
        async with self.db.read() as session:
            await readable_session(session, principal, session_id)
            return await self._page(session, principal.org_id, session_id, mark, max(1, min(limit, MAX_REPLAY_PAGE)))

    async def _page(
        self, session: AsyncSession, org_id: str, session_id: str, mark: Mark | None, limit: int,
        upto: tuple[int, int] | None = None,
    ) -> ReplayPage:
        # limit+1 rows of each source: their smallest `limit` entries are the page's (a row not read comes after
        # every row read of its source, and those give at least `limit` entries: each row gives one or more, but
        # the one at the mark, which may have given its entries already; events that give none are not read)
        logs = select(*_LOG_ROW).where(_L.c.task_id.in_(_tasks_of(session_id)))
        events = select(_E.c.id, _E.c.name, _E.c.category, _E.c.task_id, _E.c.occurred_at, _E.c.payload).where(
            _events_of(org_id, session_id), _E.c.name.not_in(SILENT))
        if mark is not None:
            logs = logs.where(_after(_L.c.time, _L.c.id, "l", mark))
            events = events.where(_after(_E.c.occurred_at, _E.c.id, "e", mark))
        if upto is not None:
            logs, events = logs.where(_L.c.id <= upto[0]), events.where(_E.c.id <= upto[1])
        conn = await session.connection()
        # A row holds the lines of one read (a thousand, or one): the rows' line counts first, to read only the rows
        # that hold limit + 1 entries (the first counted as none: the mark may be inside it), not limit + 1 rows
        order = (_L.c.time, _L.c.id)
        span = (await conn.execute(logs.with_only_columns(_L.c.lines).order_by(*order).limit(limit + 1))).all()
        needed, held = len(span), 0
        for at, (count,) in enumerate(span[1:], start=1):
            held += count
            if held >= limit + 1:
                needed = at + 1
                break
        log_rows = (await conn.execute(logs.order_by(*order).limit(needed))).all() if span else []
        event_rows = (await conn.execute(events.order_by(_E.c.occurred_at, _E.c.id).limit(limit + 1))).all()
        entries = _log_entries(log_rows, mark, limit + 1)
        for r in event_rows:
            entries.extend(event_entries(r.id, r.name, r.category, r.task_id, r.occurred_at, r.payload or {}))
        if mark is not None:
            entries = [e for e in entries if e.mark > mark]
        entries.sort(key=lambda e: e.mark)
        more = len(entries) > limit or len(span) > limit or len(event_rows) > limit
        entries = entries[:limit]
        counts = {s: 0 for s in Source}
        for e in entries:
            counts[e.source] += 1
        return ReplayPage(session_id, entries, counts, entries[-1].mark.id if more and entries else None)

    async def follow(
        self, principal: Principal, session_id: str, *, after: str | None = None, poll_s: float = FOLLOW_POLL_S,
    ) -> AsyncIterator[Entry | Ended]:
        """The entries so far (after `after`), a page at a time, then each new one as it comes, until the session
        is archived or deleted (then an `Ended`). New entries come in the order they were read, each read's in
        time order."""
        principal.require(Scope.READ, "reading a session")
        mark = Mark.parse(after) if after else None
        org = principal.org_id
        async with self.db.read() as session:
            await readable_session(session, principal, session_id)
            conn = await session.connection()
            top_log = (await conn.execute(select(func.max(_L.c.id)).where(
                _L.c.task_id.in_(_tasks_of(session_id))))).scalar() or 0
            top_event = (await conn.execute(select(func.max(_E.c.id)).where(_events_of(org, session_id)))).scalar() or 0
        while True:  # what there is: a page per read transaction
            async with self.db.read() as session:
                page = await self._page(session, org, session_id, mark, REPLAY_PAGE, upto=(top_log, top_event))
            for entry in page.entries:
                yield entry
            if page.next_after is None:
                break
            mark = page.entries[-1].mark
        logs, events = _Tail(top_log), _Tail(top_event)
        while True:  # what comes
            await asyncio.sleep(poll_s)
            async with self.db.read() as session:
                row = await session.get(Session, session_id)
                conn = await session.connection()
                log_rows = (await conn.execute(
                    select(*_LOG_ROW).where(_L.c.task_id.in_(_tasks_of(session_id)), _L.c.id > logs.floor)
                    .order_by(_L.c.id).limit(REPLAY_PAGE))).all()
                event_rows = (await conn.execute(
                    select(_E.c.id, _E.c.name, _E.c.category, _E.c.task_id, _E.c.occurred_at, _E.c.payload).where(
                        _events_of(org, session_id), _E.c.id > events.floor)
                    .order_by(_E.c.id).limit(REPLAY_PAGE))).all()
            fresh = _log_entries([r for r in _whole_rows(log_rows, REPLAY_PAGE) if logs.new(r.id)])
            for r in event_rows:
                if events.new(r.id):
                    fresh.extend(event_entries(r.id, r.name, r.category, r.task_id, r.occurred_at, r.payload or {}))
            for entry in sorted(fresh, key=lambda e: e.mark):
                yield entry
            logs.settle()
            events.settle()
            if row is None or row.status in (ARCHIVED, DELETED):
                yield Ended("deleted" if row is None else "archived")
                return

    async def events(
        self, principal: Principal, session_id: str, *, limit: int = EVENTS_PAGE, before_id: int | None = None,
    ) -> tuple[list[Event], bool]:
        """The session's events, newest first: `limit` (at most 500) before the event `before_id`; and whether
        older ones follow."""
        principal.require(Scope.READ, "reading a session")
        limit = max(1, min(limit, MAX_EVENTS_PAGE))
        async with self.db.read() as session:
            row = await readable_session(session, principal, session_id)
            # two indexed reads (ix_event_session, ix_event_task) rather than one OR the planner may walk the
            # whole log backwards for; each gives at most `limit` + 1, and the newest `limit` of both are the page
            found: dict[int, Event] = {}
            for where in (col(Event.session_id) == session_id, col(Event.task_id).in_(_tasks_of(session_id))):
                query = orm_select(Event).where(Event.org_id == row.org_id, where)
                if before_id is not None:
                    query = query.where(col(Event.id) < before_id)
                for event in await session.exec(query.order_by(col(Event.id).desc()).limit(limit + 1)):
                    assert event.id is not None
                    found[event.id] = event
        newest = sorted(found, reverse=True)
        return [found[i] for i in newest[:limit]], len(newest) > limit


class _Tail:
    """One source of a followed replay: the ids read since `floor` (the highest id read SETTLE_S ago), so that a
    row is sent once, and one committed a little late below the highest id read is still found."""

    def __init__(self, top: int) -> None:
        self.floor = top
        self.sent: set[int] = set()
        self.high = top
        self.marks: deque[tuple[float, int]] = deque()

    def new(self, row_id: int) -> bool:
        if row_id in self.sent:
            return False
        self.sent.add(row_id)
        self.high = max(self.high, row_id)
        return True

    def settle(self) -> None:
        now = time.monotonic()
        self.marks.append((now, self.high))
        while self.marks and self.marks[0][0] <= now - SETTLE_S:
            self.floor = max(self.floor, self.marks.popleft()[1])
        self.sent = {i for i in self.sent if i > self.floor}
