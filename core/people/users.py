"""People: a user per org with a role, reachable through one identity per channel."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy import select as core_select
from sqlmodel import col, select

from core.errors import Conflict, NotFound, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Role, Scope
from core.people.orgs import ensure_org
from core.store.db import Database
from core.store.events import record
from core.store.models import Identity, User, table_of
from core.textcheck import clean_name, name_text

MAX_NAME = 200


def check_user_name(name: str) -> str:
    name = name_text((name or "").strip(), "the user name")  # no control character, C1 included
    if not name or len(name) > MAX_NAME:
        raise ValidationFailed(f"a user name is 1-{MAX_NAME} characters", code="INVALID_USER_NAME")
    return name


_U, _I = table_of(User), table_of(Identity)
# Who a channel's user is, built once: every inbound item asks it (building the statement cost more than running it)
_KNOWN = core_select(_U.c.id, _U.c.name, _U.c.role).join(_I, _I.c.user_id == _U.c.id).where(
    _I.c.org_id == bindparam("org"), _I.c.channel == bindparam("channel"), _I.c.external_id == bindparam("external"))


class Users:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(self, org_id: str, name: str, *, role: Role) -> tuple[User, bool]:
        """The org's user named `name`, created with `role` if there is none (an existing one keeps theirs).
        Returns the user and whether it was created. For the deployment's own tools (token create, the
        console): whoever runs them holds the database already."""
        name = check_user_name(name)
        for attempt in range(2):
            try:
                async with self.db.write() as session:
                    await ensure_org(session, org_id)
                    user = (await session.exec(select(User).where(User.org_id == org_id, User.name == name))).first()
                    if user is not None:
                        return user, False
                    user = User(id=new_id("user"), org_id=org_id, name=name, role=role.label)
                    session.add(user)
                    system = Principal(org_id=org_id, name="shepherd", scopes=frozenset(), channel="cli")
                    await record(session, system, "user", "user.created", payload={"user": name, "role": role.label})
                    return user, True
            except Conflict:  # made at the same moment by another process: read theirs
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def principal_for(
        self, org_id: str, channel: str, external_id: str, *, display_name: str, default_role: Role,
        admin: bool = False,
    ) -> Principal:
        """Who a channel's user is in Shepherd; first contact creates the user with `default_role`.
        `admin`: the deployment names them an admin (SHEPHERD_ADMINS), whatever their role was."""
        display_name = clean_name(display_name).strip() or external_id  # the platform's, never retyped
        # the common case, someone seen before: one read statement, no write
        rows = await self.db.rows(_KNOWN, {"org": org_id, "channel": channel, "external": external_id})
        if rows and (not admin or rows[0].role == Role.ADMIN.label):
            known = rows[0]
            return Principal.for_role(org_id, known.name, Role.parse(known.role), channel, user_id=known.id)
        async with self.db.write() as session:
            await ensure_org(session, org_id)
            identity = (
                await session.exec(
                    select(Identity).where(
                        Identity.org_id == org_id, Identity.channel == channel, Identity.external_id == external_id
                    )
                )
            ).first()
            if identity is not None:
                user = await session.get(User, identity.user_id)
                assert user is not None
            else:
                user = User(id=new_id("user"), org_id=org_id, name=display_name, role=default_role.label)
                clash = (
                    await session.exec(select(User.id).where(User.org_id == org_id, User.name == display_name))
                ).first()
                if clash:
                    user.name = f"{display_name}@{channel}:{external_id}"
                session.add(user)
                await session.flush()
                session.add(Identity(org_id=org_id, user_id=user.id, channel=channel, external_id=external_id))
            if admin and user.role != Role.ADMIN.label:
                user.role = Role.ADMIN.label
                session.add(user)
        return Principal.for_role(org_id, user.name, Role.parse(user.role), channel, user_id=user.id)

    async def list(self, principal: Principal) -> list[tuple[User, list[str]]]:
        """The org's people, each with the channels that know them."""
        principal.require(Scope.READ, "listing users")
        async with self.db.read() as session:
            users = list(await session.exec(select(User).where(User.org_id == principal.org_id).order_by(User.name)))
            seen: dict[str, list[str]] = {}
            for ident in await session.exec(select(Identity).where(Identity.org_id == principal.org_id)):
                seen.setdefault(ident.user_id, []).append(ident.channel)
        return [(u, sorted(set(seen.get(u.id, [])))) for u in users]

    async def name_of(self, org_id: str, channel: str, external_id: str) -> str | None:
        """The Shepherd name of a channel's user, if they have been seen."""
        async with self.db.read() as session:
            found = (await session.exec(
                select(User.name).join(Identity, col(Identity.user_id) == col(User.id)).where(
                    Identity.org_id == org_id, Identity.channel == channel, Identity.external_id == external_id)
            )).first()
        return found

    async def set_role(self, principal: Principal, name: str, role: Role) -> User:
        principal.require(Scope.ADMIN, "setting a role")
        async with self.db.write() as session:
            user = (
                await session.exec(select(User).where(User.org_id == principal.org_id, User.name == name))
            ).first()
            if user is None:
                raise NotFound(f"user {name!r} not found", code="USER_NOT_FOUND")
            before = user.role
            user.role = role.label
            session.add(user)
            await record(
                session, principal, "user", "user.role_changed",
                payload={"user": user.name, "from": before, "to": role.label},
            )
            return user
