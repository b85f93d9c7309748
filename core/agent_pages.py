"""A page of agents as the REST list serves it: SQLAlchemy Core over the tables with bound parameters, no ORM
objects per row, each statement shape built once (lru_cache) so its compiled form is cached too; keyset pages
from the (org_id, created_at, id) index, offset pages that walk the index alone, totals kept by triggers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, Select, bindparam, case, func, or_, tuple_
from sqlmodel import select

from core.store.models import Agent, OrgCount, Project, table_of


class AgentRow(NamedTuple):
    """A listed agent: the columns of PAGE_COLUMNS, in their order (a tuple: reading its fields costs next to
    nothing, where a SQLAlchemy Row's attributes cost a microsecond or two each)."""

    id: str
    name: str
    type: str
    status: str
    autonomy_level: int
    project_id: str | None
    task: str | None
    started_at: datetime
    last_activity: datetime
    created_at: datetime
    channels: list[str] | None  # the project's, when the agent has one


@dataclass(frozen=True)
class AgentPage:
    """A page of agents, the total that match, and the cursor of the next page if there is one."""

    rows: Sequence[AgentRow]
    total: int
    next_cursor: str | None


# --- the page's statements ---------------------------------------------------------------------

_A = table_of(Agent)
_P = table_of(Project)
_COUNTS = table_of(OrgCount)
PAGE_COLUMNS = (_A.c.id, _A.c.name, _A.c.type, _A.c.status, _A.c.autonomy_level, _A.c.project_id, _A.c.task,
                _A.c.started_at, _A.c.last_activity, _A.c.created_at, _P.c.channels)
_ORG: BindParameter[str] = bindparam("org", type_=_A.c.org_id.type)
# a project by id, else by name (core.projects.find_project), inside the statement: no round trip of its own
_PROJECT_REF = (
    select(_P.c.id)
    .where(_P.c.org_id == _ORG, or_(_P.c.id == bindparam("project"), _P.c.name == bindparam("project")))
    .order_by(case((_P.c.id == bindparam("project"), 0), else_=1))
    .limit(1)
    .scalar_subquery()
)


@lru_cache(maxsize=64)
def page_statement(by_type: bool, by_status: bool, by_project: bool, keyset: bool, with_total: bool,
                   skipping: bool = True) -> Select[Any]:
    """The statement of one page's shape: after a cursor (`keyset`), else at an offset. `skipping`: the offset
    may be more than 0; the first page is read straight from the index in order, as a keyset page from the start
    (the offset form's join back to the table is for walking past many rows, and costs the first page more)."""
    where: list[Any] = [_A.c.org_id == _ORG]
    if by_type:
        where.append(_A.c.type == bindparam("type"))
    if by_status:
        where.append(_A.c.status == bindparam("status"))
    if by_project:
        where.append(_A.c.project_id == _PROJECT_REF)
    columns: list[Any] = list(PAGE_COLUMNS)
    if with_total:
        if by_type or by_status or by_project:
            total = select(func.count()).select_from(_A).where(*where).scalar_subquery()
        else:  # the org's count, kept by triggers (core.store.models.OrgCount): no scan
            total = (select(func.coalesce(func.sum(_COUNTS.c.agents), 0)).where(_COUNTS.c.org_id == _ORG)
                     .scalar_subquery())
        columns.append(total.label("total"))
    limit = bindparam("limit", type_=_A.c.autonomy_level.type)
    if keyset or not skipping:  # the first page, or the rows after the cursor's: straight from the index
        if keyset:  # (after the total's subquery took `where`: the total counts every match, not those after)
            where.append(tuple_(_A.c.created_at, _A.c.id) > tuple_(
                bindparam("after_at", type_=_A.c.created_at.type), bindparam("after_id", type_=_A.c.id.type)))
        keyset_page: Select[Any] = (select(*columns).select_from(_A.outerjoin(_P, _P.c.id == _A.c.project_id))
                                    .where(*where).order_by(_A.c.created_at, _A.c.id).limit(limit))
        return keyset_page
    # An offset walks past the rows it skips: it walks the index alone (it holds every column the skip needs),
    # and only the page's rows are read from the table.
    ids = (select(_A.c.id, _A.c.created_at).where(*where).order_by(_A.c.created_at, _A.c.id)
           .limit(limit).offset(bindparam("offset", type_=_A.c.autonomy_level.type)).subquery("page"))
    offset_page: Select[Any] = (
        select(*columns).select_from(ids.join(_A, _A.c.id == ids.c.id).outerjoin(_P, _P.c.id == _A.c.project_id))
        .order_by(ids.c.created_at, ids.c.id))
    return offset_page


@lru_cache(maxsize=16)
def total_statement(by_type: bool, by_status: bool, by_project: bool) -> Select[Any]:
    statement = page_statement(by_type, by_status, by_project, False, True, skipping=False)
    return select(statement.selected_columns.total)
