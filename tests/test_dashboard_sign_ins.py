"""The dashboard's sign-ins in core (core.people.web_sessions), on both stores: a one-time link is good once however
many browsers press it at the same moment, and not after it expires; a session follows its person or token as they
are now (a lowered role, a revoked token, an expired session)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col

from core.clock import utcnow
from core.errors import Unauthorized, ValidationFailed
from core.people.access import Principal, Role, Scope
from core.shepherd import Shepherd
from core.store.models import SignInLink, WebSession
from tests.conftest import person


async def _person(shepherd: Shepherd, role: str = "read,write,approve") -> tuple[str, Principal]:
    issued = await shepherd.tokens.create(org_id="acme", user="cy", scopes=role)
    return issued.secret, await shepherd.tokens.authenticate(issued.secret)


async def test_a_link_pressed_at_once_in_many_browsers_signs_in_one(shepherd: Shepherd) -> None:
    _, cy = await _person(shepherd)
    link = await shepherd.web_sessions.issue_link(cy)
    results = await asyncio.gather(*(shepherd.web_sessions.redeem_link(link.code) for _ in range(6)),
                                   return_exceptions=True)
    signed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Unauthorized)]
    assert len(signed) == 1 and len(refused) == 5, results
    assert signed[0].principal.name == "cy" and signed[0].principal.org_id == "acme"
    with pytest.raises(Unauthorized, match="used already"):
        await shepherd.web_sessions.link_holder(link.code)


async def test_an_expired_link_signs_nobody_in_and_a_token_of_nobody_gets_no_link(shepherd: Shepherd) -> None:
    _, cy = await _person(shepherd)
    link = await shepherd.web_sessions.issue_link(cy)
    assert await shepherd.web_sessions.link_holder(link.code) == "cy"
    async with shepherd.db.write() as session:
        await session.exec(update(SignInLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(Unauthorized, match="expired"):
        await shepherd.web_sessions.redeem_link(link.code)
    with pytest.raises((ValidationFailed, Unauthorized)):
        await shepherd.web_sessions.issue_link(person(Role.ADMIN))  # no user behind it


async def test_a_session_acts_as_its_person_and_token_are_now(shepherd: Shepherd) -> None:
    secret, cy = await _person(shepherd)
    by_token = await shepherd.web_sessions.open(secret)
    by_link = await shepherd.web_sessions.redeem_link(
        (await shepherd.web_sessions.issue_link(cy)).code)
    assert (await shepherd.web_sessions.principal(by_link.secret)).can(Scope.APPROVE)
    await shepherd.users.set_role(person(Role.ADMIN), "cy", Role.VIEWER)
    for signed in (by_token, by_link):  # the role lowered reaches both at their next request
        assert not (await shepherd.web_sessions.principal(signed.secret)).can(Scope.WRITE)
    assert cy.token_id is not None
    await shepherd.tokens.revoke(cy.token_id)
    with pytest.raises(Unauthorized, match="revoked"):
        await shepherd.web_sessions.principal(by_token.secret)
    async with shepherd.db.write() as session:
        await session.exec(update(WebSession).where(col(WebSession.user_id).is_not(None))
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(Unauthorized, match="expired"):
        await shepherd.web_sessions.principal(by_link.secret)
