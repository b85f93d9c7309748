"""API tokens: a random secret shown once, stored as its SHA-256, bound to one org."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import select

from core.access import Principal, Scope, format_scopes, parse_scopes
from core.clock import utcnow
from core.db import Database
from core.errors import Unauthorized, ValidationFailed
from core.ids import new_id
from core.models import ApiToken
from core.orgs import ensure_org
from core.textcheck import name_text

SECRET_PREFIX = "shp_"


def hash_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: no dictionary to resist.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


# A valid token is remembered this long per process, sparing a database round-trip per request. Revoking
# in this process takes effect at once; in other replicas, within this many seconds.
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_ENTRIES = 10_000


class Tokens:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def create(self, *, org_id: str, name: str, scopes: frozenset[Scope] | str) -> IssuedToken:
        scope_set = parse_scopes(scopes) if isinstance(scopes, str) else scopes
        name = name_text(name.strip(), "the token name")
        if not name or len(name) > 200:
            raise ValidationFailed("a token name is 1-200 characters", code="INVALID_TOKEN_NAME")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        async with self.db.write() as session:
            await ensure_org(session, org_id)
            token = ApiToken(
                id=new_id("tok"),
                org_id=org_id,
                name=name,
                prefix=secret[:8],
                secret_hash=hash_secret(secret),
                scopes=format_scopes(scope_set),
            )
            session.add(token)
        return IssuedToken(token=token, secret=secret)

    async def authenticate(self, secret: str) -> Principal:
        if not secret:
            raise Unauthorized("missing API token: send Authorization: Bearer <token> or x-api-key")
        digest = hash_secret(secret)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.db.read() as session:
            token = (await session.exec(select(ApiToken).where(ApiToken.secret_hash == digest))).first()
        if token is None or token.revoked_at is not None:
            self._cache.pop(digest, None)
            raise Unauthorized("invalid or revoked API token", code="INVALID_TOKEN")
        principal = Principal(
            org_id=token.org_id,
            name=token.name,
            scopes=parse_scopes(token.scopes),
            channel="token",
            user_id=token.user_id,
        )
        if len(self._cache) >= AUTH_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[digest] = (now + AUTH_CACHE_SECONDS, principal)
        return principal

    async def revoke(self, token_id: str) -> bool:
        async with self.db.write() as session:
            token = await session.get(ApiToken, token_id)
            if token is None or token.revoked_at is not None:
                return False
            token.revoked_at = utcnow()
            session.add(token)
            self._cache.pop(token.secret_hash, None)
            return True

    async def count_active(self) -> int:
        async with self.db.read() as session:
            result = await session.exec(
                select(func.count()).select_from(ApiToken).where(ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
            )
            return int(result.one())
