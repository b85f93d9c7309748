"""API tokens: a random secret shown once, stored as its SHA-256, bound to one org and, to act for a person,
to one user of that org (core.people.access says how tokens, users and identities relate)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select

from core.clock import utcnow
from core.errors import Unauthorized, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Role, Scope, format_scopes, parse_scopes, role_for_scopes
from core.people.orgs import ensure_org
from core.people.users import Users
from core.store.db import Database
from core.store.models import ApiToken, User
from core.textcheck import name_text

SECRET_PREFIX = "shp_"


def hash_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: no dictionary to resist.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str
    user: User | None = None  # the person it acts for
    user_created: bool = False

    @property
    def effective_scopes(self) -> frozenset[Scope]:
        """What it may do: its scopes, within its user's role."""
        scopes = parse_scopes(self.token.scopes)
        return scopes & Role.parse(self.user.role).scopes if self.user is not None else scopes


# A valid token is remembered this long per process, sparing a database round-trip per request. Revoking
# in this process takes effect at once; in other replicas, within this many seconds.
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_ENTRIES = 10_000


def principal_of(token: ApiToken, person: User | None, channel: str = "token") -> Principal:
    """Who a live token acts as: its user, never with more than their role allows; or, bound to nobody, a principal
    of its own named by its id so that no other token is it."""
    scopes = parse_scopes(token.scopes)
    if person is not None:
        return Principal(org_id=token.org_id, name=person.name, scopes=scopes & Role.parse(person.role).scopes,
                         channel=channel, user_id=person.id, token_id=token.id)
    return Principal(org_id=token.org_id, name=token.id, scopes=scopes, channel=channel, token_id=token.id)


class Tokens:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def create(
        self, *, org_id: str, scopes: frozenset[Scope] | str, user: str | None = None, name: str | None = None
    ) -> IssuedToken:
        """A new token of `org_id`. With `user`, it acts for that person (created, with the role its scopes
        need, if the org has no user of that name; an existing user keeps their role, which bounds the token).
        Without, it is a principal of its own that is not a person. `name` labels it (default: the user's
        name, or "api")."""
        scope_set = parse_scopes(scopes) if isinstance(scopes, str) else scopes
        label = name_text((name if name is not None else user or "api").strip(), "the token name")
        if not label or len(label) > 200:
            raise ValidationFailed("a token name is 1-200 characters", code="INVALID_TOKEN_NAME")
        person: User | None = None
        created = False
        if user is not None:
            person, created = await Users(self.db).ensure(org_id, user, role=role_for_scopes(scope_set))
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        async with self.db.write() as session:
            await ensure_org(session, org_id)
            token = ApiToken(
                id=new_id("tok"),
                org_id=org_id,
                name=label,
                prefix=secret[:8],
                secret_hash=hash_secret(secret),
                scopes=format_scopes(scope_set),
                user_id=person.id if person else None,
            )
            session.add(token)
        return IssuedToken(token=token, secret=secret, user=person, user_created=created)

    async def authenticate(self, secret: str) -> Principal:
        if not secret:
            raise Unauthorized("missing API token: send Authorization: Bearer <token> or x-api-key")
        digest = hash_secret(secret)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.db.read() as session:
            found = (await session.exec(
                select(ApiToken, User).outerjoin(User, col(User.id) == col(ApiToken.user_id))
                .where(ApiToken.secret_hash == digest))).first()
        token, person = found if found is not None else (None, None)
        if token is None or token.revoked_at is not None or (token.user_id and person is None):
            self._cache.pop(digest, None)
            raise Unauthorized("invalid or revoked API token", code="INVALID_TOKEN")
        principal = principal_of(token, person)
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
