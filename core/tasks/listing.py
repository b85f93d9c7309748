"""Reading tasks for the REST lists: plain rows of the columns a listing shows, in statements whose cost grows
with the page and not with the table (no COUNT, no offset, each status walked on its own index)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, Select, bindparam, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from core.sessions.rows import shown_session
from core.store.models import Task, TaskLog, table_of
from core.tasks.loglines import enough, split

_T = table_of(Task)
_L = table_of(TaskLog)
# What a listed task shows (Coder's task); not its evidence, pending inputs or log snapshot (up to 64 KB).
LISTING_COLUMNS = (_T.c.id, _T.c.name, _T.c.display_name, _T.c.prompt, _T.c.org_id, _T.c.owner_id, _T.c.owner_name,
                   _T.c.agent_id, _T.c.runtime, _T.c.status, _T.c.state, _T.c.state_message, _T.c.state_at,
                   _T.c.control, _T.c.turns, _T.c.created_at, _T.c.updated_at, _T.c.max_turns, _T.c.max_minutes,
                   _T.c.max_cost, _T.c.cost_usd, _T.c.run_seconds)


class TaskRow(NamedTuple):
    """A listed task: the columns of LISTING_COLUMNS, in their order (a tuple: its fields cost next to nothing to
    read, where a SQLAlchemy Row's attributes cost a microsecond or two each, twenty times per task)."""

    id: str
    name: str
    display_name: str
    prompt: str
    org_id: str
    owner_id: str
    owner_name: str
    agent_id: str | None
    runtime: str
    status: str
    state: str
    state_message: str
    state_at: datetime
    control: str | None
    turns: int
    created_at: datetime
    updated_at: datetime
    max_turns: int | None
    max_minutes: float | None
    max_cost: float | None
    cost_usd: float | None
    run_seconds: float


class LogRow(NamedTuple):
    """A log entry: one line (or one input) of a task's log, with its id (core.tasks.loglines)."""

    id: int
    time: datetime
    type: str
    content: str


LOG_COLUMNS = (_L.c.id, _L.c.time, _L.c.type, _L.c.content, _L.c.lines)


def log_entries(rows: Iterable[Sequence[Any]], after: int = 0, limit: int | None = None) -> list[LogRow]:
    """Log rows (LOG_COLUMNS, oldest first) as the entries they hold: the first `limit` after `after` (a row may
    hold a thousand lines: only those asked for are made)."""
    entries: list[LogRow] = []
    for row_id, at, kind, content, count in rows:
        for line_id, line in split(row_id, count, content):
            if line_id > after:
                if limit is not None and len(entries) >= limit:
                    return entries
                entries.append(LogRow(line_id, at, kind, line))
    return entries


def log_tail(rows: Iterable[Sequence[Any]], limit: int) -> list[LogRow]:
    """Log rows (LOG_COLUMNS, newest first) as their last `limit` entries, oldest first."""
    newest: list[LogRow] = []
    for row_id, at, kind, content, count in rows:
        for line_id, line in reversed(split(row_id, count, content)):
            if len(newest) >= limit:
                return newest[::-1]
            newest.append(LogRow(line_id, at, kind, line))
    return newest[::-1]
_ORG: BindParameter[str] = bindparam("org", type_=_T.c.org_id.type)
_LIMIT: BindParameter[int] = bindparam("limit", type_=_T.c.turns.type)


@lru_cache(maxsize=64)
def newest_statement(statuses: int, by_owner: bool, hide: bool) -> Select[Any]:
    """Newest first. With statuses (how many; bound as status0, status1, …), each status reads its own newest
    rows from ix_task_org_status and the few branches are merged: an IN list would make the store gather every
    matching row and sort them all, which is the whole table for `status:active`. `hide`: without the tasks of
    private sessions that are not the viewer's (bound as `me`), for whoever is not an admin."""
    where: list[Any] = [_T.c.org_id == _ORG]
    if hide:
        where.append(shown_session(_T.c.session_id, _ORG, bindparam("me", type_=_T.c.owner_id.type)))
    if by_owner:
        where.append(or_(_T.c.owner_id == bindparam("owner"), _T.c.owner_name == bindparam("owner")))
    newest = (_T.c.created_at.desc(), _T.c.id.desc())
    if statuses == 0:
        plain: Select[Any] = select(*LISTING_COLUMNS).where(*where).order_by(*newest).limit(_LIMIT)
        return plain
    branches = [select(*LISTING_COLUMNS).where(*where, _T.c.status == bindparam(f"status{i}"))
                .order_by(*newest).limit(_LIMIT).subquery(f"s{i}") for i in range(statuses)]
    if statuses == 1:
        one: Select[Any] = select(*branches[0].c)
        return one
    merged = union_all(*(select(*b.c) for b in branches)).subquery("merged")
    many: Select[Any] = select(*merged.c).order_by(merged.c.created_at.desc(), merged.c.id.desc()).limit(_LIMIT)
    return many


def newest_params(org_id: str, statuses: Sequence[str], owner: str | None, limit: int,
                  me: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"org": org_id, "limit": limit}
    if me is not None:
        params["me"] = me
    params.update({f"status{i}": s for i, s in enumerate(sorted(statuses))})
    if owner:
        params["owner"] = owner
    return params


# A page of a task's log is read in two statements from ix_tasklog_task. A row holds the lines of one read of the
# agent's output (a thousand, or one), so `limit` rows may hold a hundred times the page: first the rows' ids and
# line counts (no content), to see which rows hold the page's entries; then only those rows. A row's id is its
# last entry's; log_entries() and log_tail() give the entries.
_AFTER = (_L.c.task_id == bindparam("task"), _L.c.id > bindparam("after"))
LOG_SPAN = select(_L.c.id, _L.c.lines).where(*_AFTER).order_by(_L.c.id).limit(bindparam("limit"))
LOG_PAGE = select(*LOG_COLUMNS).where(*_AFTER, _L.c.id <= bindparam("upto")).order_by(_L.c.id)
# the last rows, newest first: their counts, then the rows from the first one the tail needs
LOG_TAIL_SPAN = (select(_L.c.id, _L.c.lines).where(_L.c.task_id == bindparam("task")).order_by(_L.c.id.desc())
                 .limit(bindparam("limit")))
LOG_TAIL = (select(*LOG_COLUMNS).where(_L.c.task_id == bindparam("task"), _L.c.id >= bindparam("since"))
            .order_by(_L.c.id.desc()))


async def read_log(conn: AsyncConnection, task_id: str, after: int, want: int) -> list[LogRow]:
    """The first `want` entries of a task's log after the entry `after`, oldest first (fewer at its end)."""
    span = (await conn.execute(LOG_SPAN, {"task": task_id, "after": after, "limit": want})).all()
    if not span:
        return []
    upto = enough(span, want, after)
    rows = (await conn.execute(LOG_PAGE, {"task": task_id, "after": after, "upto": upto})).all()
    return log_entries(rows, after, want)


async def read_log_tail(conn: AsyncConnection, task_id: str, want: int) -> list[LogRow]:
    """The last `want` entries of a task's log, oldest first."""
    span = (await conn.execute(LOG_TAIL_SPAN, {"task": task_id, "limit": want})).all()
    if not span:
        return []
    rows = (await conn.execute(LOG_TAIL, {"task": task_id, "since": enough(span, want, None)})).all()
    return log_tail(rows, want)

