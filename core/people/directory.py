"""The org's people as a directory to search (the Agentuity hub's `GET /hub/users`): who they are, where Shepherd
first met them, and when they were last active."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select

from core.clock import as_utc
from core.people.access import Principal, Scope
from core.store.db import Database
from core.store.models import Identity, Task, User, Vote, table_of
from core.store.search import contains

MAX_PAGE = 200
SHEPHERD = "shepherd"  # the provider of a person no channel knows: made by `shepherd token create` or the console

_U, _I, _T, _V = table_of(User), table_of(Identity), table_of(Task), table_of(Vote)


@dataclass(frozen=True)
class Person:
    user_id: str
    name: str
    provider: str  # the channel of their first identity, or `shepherd`
    created_at: datetime
    last_active_at: datetime | None  # the newest task they own or vote they cast; None if neither


class Directory:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def search(
        self, principal: Principal, *, search: str = "", limit: int = 50, offset: int = 0,
    ) -> tuple[list[Person], int]:
        """The org's people whose name or one of whose identities (a Slack id, a GitHub login, ...) contains
        `search`, by name; a page of them and how many match."""
        principal.require(Scope.READ, "listing users")
        limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
        where: list[ColumnElement[bool]] = [_U.c.org_id == principal.org_id]
        if search.strip():
            text = search.strip()
            known_as = select(_I.c.user_id).where(_I.c.org_id == principal.org_id, contains(_I.c.external_id, text))
            where.append(or_(contains(_U.c.name, text), _U.c.id.in_(known_as)))
        async with self.db.read() as session:
            conn = await session.connection()
            total = (await conn.execute(select(func.count()).select_from(_U).where(*where))).scalar() or 0
            users = (await conn.execute(select(_U.c.id, _U.c.name, _U.c.created_at).where(*where)
                                        .order_by(_U.c.name, _U.c.id).limit(limit).offset(offset))).all()
            ids = [u.id for u in users]
            first: dict[str, str] = {}
            if ids:
                identities = await conn.execute(select(_I.c.user_id, _I.c.channel).where(
                    _I.c.org_id == principal.org_id, _I.c.user_id.in_(ids)).order_by(_I.c.created_at, _I.c.id))
                for ident in identities:
                    first.setdefault(ident.user_id, ident.channel)
            last: dict[str, datetime] = {}
            if ids:  # ix_task_org_owner and ix_vote_voter: one index probe per person of the page
                owned = await conn.execute(select(_T.c.owner_id, func.max(_T.c.created_at)).where(
                    _T.c.org_id == principal.org_id, _T.c.owner_id.in_(ids)).group_by(_T.c.owner_id))
                voted = await conn.execute(select(_V.c.voter_id, func.max(_V.c.at)).where(
                    _V.c.voter_id.in_(ids)).group_by(_V.c.voter_id))
                for who, at in [*owned.all(), *voted.all()]:
                    if at is not None:
                        at = as_utc(at)
                        last[who] = max(last.get(who, at), at)
        people = [Person(u.id, u.name, first.get(u.id, SHEPHERD), as_utc(u.created_at), last.get(u.id))
                  for u in users]
        return people, total
