"""One person, one voter: a token acts for the user it is bound to, all of a person's tokens (and their console)
are one owner, requester and voter, and a token bound to no user is nobody but itself and never decides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import select

from adapters.console.repl import console_principal
from core.autonomy.plans import Origin, Plan, Target
from core.errors import Forbidden
from core.people.access import Principal, Role, Scope
from core.people.tokens import Tokens
from core.shepherd import Shepherd
from core.store.models import ApiToken, User
from tests.conftest import person
from tests.test_confirmations import gate, started_task
from tests.test_rest_coder import Rig, served

PRODUCTION = Plan(action="deploy.production", summary="deploy to production", target=Target(repo="acme/api"))


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def nobodys(shepherd: Shepherd, scopes: str = "read,write,approve,admin") -> str:
    return (await shepherd.tokens.create(org_id="acme", scopes=scopes)).secret


async def test_two_tokens_of_nobody_are_two_principals_and_neither_decides(rig: Rig) -> None:
    first, second = await nobodys(rig.shepherd), await nobodys(rig.shepherd)
    one, two = await rig.shepherd.tokens.authenticate(first), await rig.shepherd.tokens.authenticate(second)
    assert one.identity != two.identity and one.name != two.name and not one.is_person

    status, task = await rig.call("POST", "/api/v2/tasks/me", {"input": "x", "agent": "demo"}, token=first)
    assert status == 201 and task["owner_name"] == one.name
    status, body = await rig.call("GET", f"/api/v2/tasks/me/{task['id']}", token=second)
    assert status == 404, "the other token's task is not `me`"
    status, body = await rig.call("GET", "/api/v2/tasks?q=owner:me", token=second)
    assert body["count"] == 0

    owned = await rig.shepherd.tasks.get(one, task["id"])
    conf = await gate(rig.shepherd, owned, PRODUCTION, level=5, origin=Origin.PERSON)
    for path, body in ((f"/api/confirmations/{conf.code}/decision", {"decision": "approve"}),
                       ("/api/approval/vote", {"token": conf.code, "vote": "approve"}),
                       (f"/api/coding-agents/confirm/{task['id']}", {"approved": False})):
        status, answer = await rig.call("POST", path, body, token=second)
        assert (status, answer["code"]) == (403, "NOT_A_PERSON"), (path, answer)
        assert "shepherd token create --user" in answer["error"]
    assert (await rig.shepherd.confirmations.get(one, conf.code)).approvals == 0


async def test_all_of_one_persons_tokens_are_one_voter_and_one_requester(rig: Rig) -> None:
    ana_ci = (await rig.shepherd.tokens.create(org_id="acme", user="ana", scopes="read,write,approve")).secret
    ana_laptop = (await rig.shepherd.tokens.create(org_id="acme", user="ana", scopes="read,approve")).secret
    ben = (await rig.shepherd.tokens.create(org_id="acme", user="ben", scopes="read,approve")).secret

    status, task = await rig.call("POST", "/api/v2/tasks/me", {"input": "x", "agent": "demo"}, token=ana_ci)
    assert task["owner_name"] == "ana"
    status, mine = await rig.call("GET", "/api/v2/tasks?q=owner:me", token=ana_laptop)
    assert [t["id"] for t in mine["tasks"]] == [task["id"]], "ana's other token is ana too"

    owned = await rig.shepherd.tasks.get(await rig.shepherd.tokens.authenticate(ana_ci), task["id"])
    conf = await gate(rig.shepherd, owned, PRODUCTION, level=5, origin=Origin.PERSON)
    decide = f"/api/confirmations/{conf.code}/decision"
    status, body = await rig.call("POST", decide, {"decision": "approve"}, token=ana_laptop)
    assert (status, body["code"]) == (403, "SELF_APPROVAL"), "ana asked for it, whichever token she holds"
    status, body = await rig.call("POST", decide, {"decision": "approve"}, token=ben)
    assert status == 200 and body["counted"] and body["confirmation"]["approvals"] == 1
    status, body = await rig.call("POST", decide, {"decision": "approve"}, token=ben)
    assert status == 200 and not body["counted"], "ben's second vote is ignored"


async def test_the_console_and_the_persons_tokens_are_one_voter(shepherd: Shepherd) -> None:
    ana, created = await console_principal(shepherd, "acme", "ana")
    assert created and ana.user_id and ana.can(Scope.ADMIN)
    again, created = await console_principal(shepherd, "acme", "ana")
    assert again.user_id == ana.user_id and not created
    token = await shepherd.tokens.create(org_id="acme", user="ana", scopes="read,approve")
    assert token.user is not None and token.user.id == ana.user_id and token.user.role == "admin"

    task = await started_task(shepherd, person(Role.OPERATOR, name="otto"))
    conf = await gate(shepherd, task, PRODUCTION, level=5, origin=Origin.PERSON)
    first = await shepherd.confirmations.vote(ana, conf.code, approve=True)
    assert first.counted and "1/2" in first.text
    second = await shepherd.confirmations.vote(await shepherd.tokens.authenticate(token.secret), conf.code,
                                               approve=True)
    assert not second.counted and "already counted" in second.text


async def test_a_token_never_does_more_than_its_users_role(shepherd: Shepherd) -> None:
    viewer = await shepherd.users.principal_for("acme", "slack", "U1", display_name="dave", default_role=Role.VIEWER)
    issued = await shepherd.tokens.create(org_id="acme", user="dave", scopes="read,write,approve,admin")
    assert issued.user is not None and issued.user.id == viewer.user_id and not issued.user_created
    assert issued.effective_scopes == {Scope.READ}
    dave = await shepherd.tokens.authenticate(issued.secret)
    assert dave.scopes == {Scope.READ} and dave.name == "dave" and dave.identity == viewer.user_id

    await shepherd.users.set_role(person(Role.ADMIN), "dave", Role.APPROVER)
    raised = await Tokens(shepherd.db).authenticate(issued.secret)  # another process: no cached answer
    assert raised.scopes == {Scope.READ, Scope.WRITE, Scope.APPROVE}, "the token's admin scope stays out of reach"


async def test_a_user_made_for_a_token_gets_the_role_its_scopes_need(shepherd: Shepherd) -> None:
    for name, scopes, role in (("reader", "read", "viewer"), ("ops", "read,write", "operator"),
                               ("lead", "read,approve", "approver"), ("root", "admin", "admin")):
        issued = await shepherd.tokens.create(org_id="acme", user=name, scopes=scopes)
        assert issued.user_created and issued.user is not None and issued.user.role == role, name
        assert {s.value for s in issued.effective_scopes} == set(scopes.split(",")), "its role takes nothing away"
    async with shepherd.db.read() as session:
        users = {u.name for u in await session.exec(select(User).where(User.org_id == "acme"))}
        bound = [t.user_id for t in await session.exec(select(ApiToken))]
    assert {"reader", "ops", "lead", "root"} <= users and None not in bound


async def test_a_token_of_nobody_may_still_do_what_its_scopes_allow(shepherd: Shepherd) -> None:
    issued = await shepherd.tokens.create(org_id="acme", scopes="read,write,approve")
    bot = await shepherd.tokens.authenticate(issued.secret)
    assert issued.user is None and bot.name == issued.token.id and bot.identity == f"token:{issued.token.id}"
    view = await shepherd.tasks.create(bot, prompt="x", runtime="demo")
    assert view.task.owner_id == bot.identity
    gated = await shepherd.confirmations.request(bot, Plan(action="pr.comment", summary="comment"), task=None,
                                                 agent=None, project_id=None)
    assert gated.confirmation.status == "pending", "its own request is not its own approval: it is no one"
    with pytest.raises(Forbidden) as err:
        await shepherd.confirmations.vote(bot, gated.confirmation.code, approve=False)
    assert err.value.code == "NOT_A_PERSON"


def test_identity_of_principals() -> None:
    token_of_nobody = Principal("acme", "tok-1", frozenset(Scope), "token", token_id="tok-1")
    ana_by_token = Principal("acme", "ana", frozenset(Scope), "token", user_id="user-ana", token_id="tok-2")
    ana_in_slack = Principal.for_role("acme", "ana", Role.ADMIN, "slack", user_id="user-ana")
    assert ana_by_token.identity == ana_in_slack.identity == "user-ana"
    assert token_of_nobody.identity == "token:tok-1" and not token_of_nobody.is_person
    assert ana_by_token.is_person and ana_in_slack.is_person
