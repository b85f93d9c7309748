"""Orgs (tenants) and the people in them."""

from __future__ import annotations

import re

from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import ValidationFailed
from core.store.db import Database
from core.store.models import Org

DEFAULT_ORG = "default"
_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_org_id(org_id: str) -> str:
    if not _ORG_ID.match(org_id):
        raise ValidationFailed(
            f"invalid org id {org_id!r}: 1-64 lower-case letters, digits, '-' or '_'", code="INVALID_ORG"
        )
    return org_id


async def ensure_org(session: AsyncSession, org_id: str) -> Org:
    """The org with this id, created on first use (an org is just a name space until it has settings)."""
    check_org_id(org_id)
    org = await session.get(Org, org_id)
    if org is None:
        org = Org(id=org_id, name=org_id)
        session.add(org)
        await session.flush()
    return org


class Orgs:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(self, org_id: str) -> Org:
        async with self.db.write() as session:
            return await ensure_org(session, org_id)
