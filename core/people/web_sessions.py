"""The dashboard's sign-ins: an API token, or a one-time link from chat, exchanged for a session that expires.

The browser holds a random secret (in an HttpOnly cookie); Shepherd keeps only its SHA-256, what it acts as and
when it ends. Every request reads the token (or the user) again, so a revoked token or a lowered role reaches the
browser at once, and the session never does more than the token would.

A link (`dashboard` in chat) is for the person who asked: good once, for 10 minutes, only its hash kept. Opening
it shows a button; only pressing it (a POST) spends the code, so a chat's link preview, which fetches every link
it sees, spends nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, update
from sqlmodel import col, select

from core.clock import as_utc, utcnow
from core.errors import Unauthorized, ValidationFailed
from core.people.access import Principal, Role
from core.people.tokens import Tokens, hash_secret, principal_of
from core.store.db import Database
from core.store.events import record
from core.store.models import ApiToken, SignInLink, User, WebSession

SESSION_PREFIX = "shs_"
LINK_PREFIX = "shl_"
DEFAULT_TTL_S = 12 * 3600.0
LINK_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class IssuedLink:
    code: str  # for the link; never stored
    expires_at: datetime


@dataclass(frozen=True)
class SignedIn:
    secret: str  # for the cookie; never stored
    principal: Principal
    expires_at: datetime


class WebSessions:
    def __init__(self, db: Database, tokens: Tokens, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.db = db
        self.tokens = tokens
        self.ttl_s = ttl_s

    async def open(self, token_secret: str) -> SignedIn:
        """A session for whoever `token_secret` is (Unauthorized when it is no live token)."""
        token_secret = token_secret.strip()
        if not token_secret:
            raise ValidationFailed("paste an API token to sign in", code="TOKEN_REQUIRED")
        if len(token_secret) > 200:
            raise Unauthorized("that is not a Shepherd API token", code="INVALID_TOKEN")
        principal = await self.tokens.authenticate(token_secret)
        return await self._open(principal, token_id=principal.token_id)

    async def _open(self, principal: Principal, *, token_id: str | None = None, user_id: str | None = None,
                    link: str | None = None) -> SignedIn:
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl_s)
        async with self.db.write() as session:
            if link is not None:  # spent here, in the same commit as the session it opens: once, however raced
                spent = await session.exec(update(SignInLink).where(
                    col(SignInLink.id) == link, col(SignInLink.used_at).is_(None),
                    col(SignInLink.expires_at) > now).values(used_at=now))
                if spent.rowcount != 1:
                    raise Unauthorized("this sign-in link was used already or has expired: say `dashboard` in chat "
                                       "for a new one", code="LINK_SPENT")
            # sign-ins that ended are forgotten here, so the table holds only live ones and a few hours' worth
            await session.exec(delete(WebSession).where(col(WebSession.expires_at) <= now))
            await session.exec(delete(SignInLink).where(col(SignInLink.expires_at) <= now - LINK_TTL))
            session.add(WebSession(id=hash_secret(secret), org_id=principal.org_id, token_id=token_id,
                                   user_id=user_id, created_at=now, expires_at=expires))
        return SignedIn(secret=secret, principal=principal, expires_at=expires)

    async def issue_link(self, principal: Principal) -> IssuedLink:
        """A one-time sign-in link's code for the person `principal` is (never for a token of nobody)."""
        principal.require_person("a dashboard sign-in link")
        if principal.user_id is None:
            raise ValidationFailed("only a person Shepherd knows as a user can have a sign-in link",
                                   code="NOT_A_USER")
        code = LINK_PREFIX + secrets.token_urlsafe(24)
        now = utcnow()
        async with self.db.write() as session:
            session.add(SignInLink(id=hash_secret(code), org_id=principal.org_id, user_id=principal.user_id,
                                   created_at=now, expires_at=now + LINK_TTL))
            await record(session, principal, "user", "dashboard.link", payload={"user": principal.name})
        return IssuedLink(code=code, expires_at=now + LINK_TTL)

    async def link_holder(self, code: str) -> str:
        """Whose link this is (their name), without spending it; Unauthorized when it is no live link."""
        person = await self._link_user(code)
        return person.name

    async def redeem_link(self, code: str) -> SignedIn:
        """A session for the person a live link is for; the link is spent."""
        person = await self._link_user(code)
        principal = Principal.for_role(person.org_id, person.name, Role.parse(person.role), "web", person.id)
        return await self._open(principal, user_id=person.id, link=hash_secret(code))

    async def _link_user(self, code: str) -> User:
        if not code.startswith(LINK_PREFIX) or len(code) > 100:
            raise Unauthorized("that is not a Shepherd sign-in link", code="INVALID_LINK")
        async with self.db.read() as session:
            found = (await session.exec(
                select(SignInLink, User).join(User, col(User.id) == col(SignInLink.user_id))
                .where(SignInLink.id == hash_secret(code)))).first()
        if found is None or found[0].used_at is not None or as_utc(found[0].expires_at) <= utcnow():
            raise Unauthorized("this sign-in link was used already or has expired: say `dashboard` in chat for a "
                               "new one", code="LINK_SPENT")
        return found[1]

    async def principal(self, secret: str) -> Principal:
        """Who the session with this secret acts as; Unauthorized when it is unknown, ended, or its token is."""
        if not secret.startswith(SESSION_PREFIX) or len(secret) > 100:
            raise Unauthorized("not signed in", code="NOT_SIGNED_IN")
        async with self.db.read() as session:
            found = (await session.exec(
                select(WebSession, ApiToken, User)
                .outerjoin(ApiToken, col(ApiToken.id) == col(WebSession.token_id))
                .outerjoin(User, col(User.id) == func.coalesce(col(ApiToken.user_id), col(WebSession.user_id)))
                .where(WebSession.id == hash_secret(secret)))).first()
        if found is None:
            raise Unauthorized("not signed in", code="NOT_SIGNED_IN")
        web, token, person = found
        if as_utc(web.expires_at) <= utcnow():
            raise Unauthorized("your sign-in has expired: sign in again", code="SESSION_EXPIRED")
        if token is None:  # signed in by a link: the person, with the role they have now
            if person is None or web.token_id is not None:
                raise Unauthorized("the token or person this sign-in was for is gone: sign in again",
                                   code="INVALID_TOKEN")
            return Principal.for_role(person.org_id, person.name, Role.parse(person.role), "web", person.id)
        if token.revoked_at is not None or (token.user_id and person is None):
            raise Unauthorized("the token this sign-in used was revoked: sign in with another", code="INVALID_TOKEN")
        return principal_of(token, person, channel="web")

    async def close(self, secret: str) -> None:
        async with self.db.write() as session:
            await session.exec(delete(WebSession).where(col(WebSession.id) == hash_secret(secret)))
