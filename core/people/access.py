"""Who may do what: roles for people, scopes for tokens, one Principal for both.

A role implies scopes (viewer: read; operator: +write; approver: +approve; admin: all), so every check
in core asks one question: does this principal hold scope S?

Identities, users and tokens: a User is a person in an org, with a role. Channels know a person through an
Identity (a Slack member ID, …); the console acts as a user it names; an API token acts for the user it is
bound to, with at most its own scopes and at most that user's role. Whichever way a person comes, they are
one principal identity (their user id): one owner of their tasks, one requester, one voter. A token bound to
no user is nobody but itself (its own id, shared with no other token): it may do what its scopes allow, but it
is not a person, so it never approves or rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from core.errors import Forbidden, ValidationFailed


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    APPROVE = "approve"
    ADMIN = "admin"


class Role(IntEnum):
    VIEWER = 10
    OPERATOR = 20
    APPROVER = 30
    ADMIN = 40

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def scope(self) -> Scope:
        """The scope a role adds to the ones below it."""
        return _ROLE_SCOPE[self]

    @property
    def scopes(self) -> frozenset[Scope]:
        return frozenset(role.scope for role in Role if role <= self)

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            choices = ", ".join(r.label for r in cls)
            raise ValidationFailed(f"unknown role {value!r}: one of {choices}", code="INVALID_ROLE") from None


_ROLE_SCOPE = {
    Role.VIEWER: Scope.READ,
    Role.OPERATOR: Scope.WRITE,
    Role.APPROVER: Scope.APPROVE,
    Role.ADMIN: Scope.ADMIN,
}
_SCOPE_ROLE = {scope: role for role, scope in _ROLE_SCOPE.items()}


def parse_scopes(value: str | list[str] | tuple[str, ...]) -> frozenset[Scope]:
    words = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    scopes: set[Scope] = set()
    for word in words:
        try:
            scopes.add(Scope(word.strip().lower()))
        except ValueError:
            choices = ", ".join(s.value for s in Scope)
            raise ValidationFailed(f"unknown scope {word!r}: use {choices}", code="INVALID_SCOPE") from None
    if not scopes:
        raise ValidationFailed("a token needs at least one scope", code="INVALID_SCOPE")
    return frozenset(scopes)


def format_scopes(scopes: frozenset[Scope]) -> str:
    return ",".join(s.value for s in Scope if s in scopes)


def role_for_scopes(scopes: frozenset[Scope]) -> Role:
    """The lowest role that holds every one of `scopes` (a user made for a token gets it)."""
    return max((_SCOPE_ROLE[s] for s in scopes), default=Role.VIEWER)


@dataclass(frozen=True)
class Principal:
    """Whoever is acting: a person through a channel, or an API token. Always inside one org."""

    org_id: str
    name: str
    scopes: frozenset[Scope]
    channel: str
    user_id: str | None = None
    token_id: str | None = None  # the API token it came with

    @property
    def identity(self) -> str:
        """Who this is when owning a task, requesting or voting: the person's user id; a token bound to no
        user is itself, never shared with another token; otherwise (tests, Shepherd itself) the actor."""
        if self.user_id:
            return self.user_id
        if self.token_id:
            return f"token:{self.token_id}"
        return self.actor

    @property
    def is_person(self) -> bool:
        """False only for an API token bound to no user."""
        return self.user_id is not None or self.token_id is None

    @classmethod
    def for_role(cls, org_id: str, name: str, role: Role, channel: str, user_id: str | None = None) -> Principal:
        return cls(org_id=org_id, name=name, scopes=role.scopes, channel=channel, user_id=user_id)

    @classmethod
    def system(cls, org_id: str, name: str = "runner") -> Principal:
        """Shepherd acting on its own (a runner ending a turn, the policy deciding): every scope, no person."""
        return cls(org_id=org_id, name=name, scopes=frozenset(Scope), channel="shepherd")

    @property
    def actor(self) -> str:
        """How events and messages name this principal: `console:admin`, `token:ci-bot`."""
        return f"{self.channel}:{self.name}"

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    def require_person(self, doing: str) -> None:
        if not self.is_person:
            raise Forbidden(
                f"{doing} needs a person, and this API token is bound to no user: create one that acts for you "
                "with `shepherd token create --user NAME`", code="NOT_A_PERSON",
            )

    def require(self, scope: Scope, doing: str) -> None:
        if scope not in self.scopes:
            role = _SCOPE_ROLE[scope].label
            raise Forbidden(
                f"{doing} needs the {scope.value} scope (role {role} or above)", code="INSUFFICIENT_SCOPE"
            )
