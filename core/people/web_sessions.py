"""The dashboard's sign-ins: an API token exchanged for a session of its own that expires.

The browser holds a random secret (in an HttpOnly cookie); Shepherd keeps only its SHA-256, the token it acts as
and when it ends. Every request reads the token and its user again, so a revoked token or a lowered role reaches
the browser at once, and the session never does more than the token would.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from core.clock import as_utc, utcnow
from core.errors import Unauthorized, ValidationFailed
from core.people.access import Principal
from core.people.tokens import Tokens, hash_secret, principal_of
from core.store.db import Database
from core.store.models import ApiToken, User, WebSession

SESSION_PREFIX = "shs_"
DEFAULT_TTL_S = 12 * 3600.0


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
        assert principal.token_id is not None
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl_s)
        async with self.db.write() as session:
            # sign-ins that ended are forgotten here, so the table holds only live ones and a few hours' worth
            await session.exec(delete(WebSession).where(col(WebSession.expires_at) <= now))
            session.add(WebSession(id=hash_secret(secret), org_id=principal.org_id, token_id=principal.token_id,
                                   created_at=now, expires_at=expires))
        return SignedIn(secret=secret, principal=principal, expires_at=expires)

    async def principal(self, secret: str) -> Principal:
        """Who the session with this secret acts as; Unauthorized when it is unknown, ended, or its token is."""
        if not secret.startswith(SESSION_PREFIX) or len(secret) > 100:
            raise Unauthorized("not signed in", code="NOT_SIGNED_IN")
        async with self.db.read() as session:
            found = (await session.exec(
                select(WebSession, ApiToken, User)
                .join(ApiToken, col(ApiToken.id) == col(WebSession.token_id))
                .outerjoin(User, col(User.id) == col(ApiToken.user_id))
                .where(WebSession.id == hash_secret(secret)))).first()
        if found is None:
            raise Unauthorized("not signed in", code="NOT_SIGNED_IN")
        web, token, person = found
        if as_utc(web.expires_at) <= utcnow():
            raise Unauthorized("your sign-in has expired: sign in again", code="SESSION_EXPIRED")
        if token.revoked_at is not None or (token.user_id and person is None):
            raise Unauthorized("the token this sign-in used was revoked: sign in with another", code="INVALID_TOKEN")
        return principal_of(token, person, channel="web")

    async def close(self, secret: str) -> None:
        async with self.db.write() as session:
            await session.exec(delete(WebSession).where(col(WebSession.id) == hash_secret(secret)))
