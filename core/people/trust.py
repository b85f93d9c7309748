"""Whose word counts on a code host: the trust gate every GitHub comment command and trigger passes.

A person on GitHub is trusted in a repository when GitHub says they belong to it (author_association OWNER,
MEMBER or COLLABORATOR), or when the repository's collaborator permission says write or admin (an outside
collaborator on a fork pull request is often only CONTRIBUTOR), or when the deployment names them
(SHEPHERD_GITHUB_TRUSTED). Bots never are, unless named: a bot that can comment must not steer agents.
Labels need triage rights, so adding one is already a trusted act; that trigger is not asked here.

The permission look-up is a port (`Permissions`): core asks, an adapter (adapters/github/permissions.py) calls
the host. An untrusted request is held (a row, core.channels.conversations.Conversations.hold) until a trusted
person says `ok-to-run` in the same thread (Prow's `/ok-to-test`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from core.people.access import Principal, Role

log = logging.getLogger(__name__)

# GitHub's author_association values that mean "of this repository" (OpenHands' resolver's set, and Prow's).
MEMBERS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
# Collaborator permissions that may push: GitHub's REST API says admin, maintain, write, triage, read or none.
WRITERS = frozenset({"admin", "maintain", "write"})
OK_TO_RUN = "ok-to-run"


class Permissions(Protocol):
    """The code host's answer to "what may `login` do in `repo`?": admin, maintain, write, triage, read, none, or
    None when it cannot say (no credentials, the host is down): then only the other rules decide."""

    async def permission(self, repo: str, login: str) -> str | None: ...


@dataclass(frozen=True)
class Author:
    """Who wrote a comment or caused an event, as the webhook describes them."""

    login: str
    association: str = ""  # author_association; "" when the event carries none (labels, check runs)
    bot: bool = False  # the account's type is Bot

    @property
    def is_bot(self) -> bool:
        return self.bot or self.login.lower().endswith("[bot]")


@dataclass(frozen=True)
class TrustRules:
    """The deployment's own allowlist (SHEPHERD_GITHUB_TRUSTED), compared without case as GitHub does."""

    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, logins: Iterable[str]) -> TrustRules:
        return cls(frozenset(login.strip().lower() for login in logins if login.strip()))


async def trusted(author: Author, repo: str, rules: TrustRules, permissions: Permissions | None) -> bool:
    """Whether `author`'s command or trigger counts in `repo` (the rules in the module's docstring)."""
    login = author.login.strip()
    if not login:
        return False
    if login.lower() in rules.allowed:
        return True
    if author.is_bot:
        return False
    if author.association.upper() in MEMBERS:
        return True
    if permissions is None:
        return False
    try:
        level = await permissions.permission(repo, login)
    except Exception as exc:  # the host's hiccup must not trust anyone: the request is held instead
        log.warning("trust: the permission of %s on %s could not be read (%s)", login, repo, type(exc).__name__)
        return False
    return level in WRITERS


def vouched(principal: Principal) -> Principal:
    """A trusted author acting in the repository that trusts them: their own command starts work there as an
    operator's would (a slash command in Slack by an operator), whatever role Shepherd gave them at first contact.
    Approving still needs the approver role Shepherd gives people."""
    if principal.can(Role.OPERATOR.scope):
        return principal
    return Principal(org_id=principal.org_id, name=principal.name, scopes=principal.scopes | Role.OPERATOR.scopes,
                     channel=principal.channel, user_id=principal.user_id, token_id=principal.token_id)
