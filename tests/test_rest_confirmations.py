"""Confirmations over real HTTP: the codespar-style list and decision, explain, Eliza's pending and
confirm, and the task callback that only that task's token opens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from core.autonomy.plans import Origin, Plan, Target
from core.autonomy.questions import new_task_token
from core.people.access import Principal, Role
from core.store.models import Task, Vote
from tests.test_confirmations import gate, pr_plan, started_task
from tests.test_rest_coder import Rig, served

CONF_FIELDS = {"id", "code", "taskId", "agentId", "action", "risk", "level", "origin", "summary", "target", "params",
               "planHash", "requestedBy", "quorum", "approvals", "status", "createdAt", "expiresAt"}
ALICE = Principal.for_role("acme", "alice", Role.ADMIN, "console", user_id="user-alice")


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def test_list_decide_and_read_back_with_the_envelope_for_every_refusal(rig: Rig) -> None:
    task = await started_task(rig.shepherd, ALICE)
    conf = await gate(rig.shepherd, task, pr_plan())
    status, body = await rig.call("GET", "/api/confirmations")
    assert status == 200 and [c["code"] for c in body] == [conf.code]
    assert set(body[0]) >= CONF_FIELDS and body[0]["status"] == "pending" and body[0]["origin"] == "policy"
    assert body[0]["target"]["branch"] == "shepherd/x" and body[0]["requestedBy"] == "alice"

    viewer = await rig.token_for("acme", "read")
    status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision", {"decision": "approve"},
                                  token=viewer)
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")
    for bad, code in (({"decision": "maybe"}, "INVALID_DECISION"), ({}, "INVALID_DECISION"),
                      ({"decision": "approve", "comment": 3}, "VALIDATION_ERROR")):
        status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision", bad)
        assert (status, body["code"]) == (400, code), body
    status, body = await rig.call("POST", "/api/confirmations/ZZZZ/decision", {"decision": "approve"})
    assert (status, body["code"]) == (404, "CONFIRMATION_NOT_FOUND")
    status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision", raw=b"{nope")
    assert (status, body["code"]) == (400, "INVALID_JSON")

    status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision",
                                  {"decision": "approve", "comment": "ship it"})
    assert status == 200 and body["counted"] and body["confirmation"]["status"] == "approved"
    assert body["confirmation"]["decidedVia"] == "api" and "approved by" in body["message"]
    status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision", {"decision": "approve"})
    assert status == 200 and not body["counted"]
    status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision", {"decision": "reject"})
    assert (status, body["code"]) == (409, "CONFIRMATION_DECIDED")
    status, body = await rig.call("GET", f"/api/confirmations/{conf.code.lower()}")
    assert status == 200 and body["status"] == "approved" and body["decidedAt"].endswith("Z")
    status, body = await rig.call("GET", "/api/confirmations?status=approved")
    assert [c["code"] for c in body] == [conf.code]
    status, body = await rig.call("GET", "/api/confirmations?status=sideways")
    assert status == 400

    other = await rig.token_for("globex")
    await rig.shepherd.orgs.ensure("globex")
    status, body = await rig.call("GET", f"/api/confirmations/{conf.code}", token=other)
    assert (status, body["code"]) == (404, "CONFIRMATION_NOT_FOUND")


async def test_quorum_two_over_rest_refuses_the_requester(rig: Rig) -> None:
    owner = await rig.shepherd.tokens.authenticate(rig.token)  # the person the rig's token acts for
    task = await started_task(rig.shepherd, owner)
    assert task.owner_id == owner.user_id and task.owner_name == "acme-read,write,approve,admin"
    plan = Plan(action="deploy.production", summary="ship", target=Target(repo="acme/api"))
    conf = await gate(rig.shepherd, task, plan, level=5, origin=Origin.PERSON)
    status, body = await rig.call("POST", f"/api/confirmations/{conf.code}/decision", {"decision": "approve"})
    assert (status, body["code"]) == (403, "SELF_APPROVAL")
    assert "2 approvals from people other than the requester" in body["error"]


async def test_explain_says_run_ask_or_refuse_and_why(rig: Rig) -> None:
    status, body = await rig.call("GET", "/api/policy/explain?action=pr.open&level=1")
    assert status == 200 and body["verdict"] == "ask" and body["risk"] == "medium" and body["quorum"] == 1
    assert "L1 Suggest" in body["reason"] and body["policy"] == "built-in"
    status, body = await rig.call("GET", "/api/policy/explain?action=deploy.production&level=5")
    assert (body["verdict"], body["quorum"], body["alwaysAsk"]) == ("ask", 2, True)
    status, body = await rig.call("POST", "/api/agents", {"name": "api", "type": "coordinator", "autonomyLevel": 0})
    status, body = await rig.call("GET", f"/api/policy/explain?action=pr.comment&agentId={body['id']}")
    assert body["verdict"] == "refuse" and "only observes" in body["reason"]
    for query, code in (("action=pr%20open", "INVALID_ACTION"), ("action=pr.open&level=9", "VALIDATION_ERROR"),
                        ("", "VALIDATION_ERROR")):
        status, body = await rig.call("GET", f"/api/policy/explain?{query}")
        assert (status, body["code"]) == (400, code), body
    status, body = await rig.call("GET", "/api/policy/explain?action=pr.open&agentId=agent-nope")
    assert (status, body["code"]) == (404, "AGENT_NOT_FOUND")


@pytest.mark.parametrize("prefix", ["/api/coding-agents", "/api/coding-agents/coordinator"])
async def test_eliza_pending_and_confirm(rig: Rig, prefix: str) -> None:
    task = await started_task(rig.shepherd, ALICE)
    conf = await gate(rig.shepherd, task, pr_plan())
    status, body = await rig.call("GET", f"{prefix}/pending")
    assert status == 200 and len(body) == 1
    item = body[0]
    assert {"sessionId", "promptText", "suggestedAction", "reasoning", "agentType", "label", "createdAt"} <= set(item)
    assert (item["sessionId"], item["code"], item["action"], item["suggestedAction"]) == (
        task.id, conf.code, "pr.open", "escalate")
    assert (item["agentType"], item["label"]) == ("demo", task.display_name)
    assert isinstance(item["createdAt"], int) and item["expiresAt"] - item["createdAt"] == 30 * 60 * 1000
    status, body = await rig.call("GET", "/api/coding-agents/coordinator/status")
    assert body["pendingConfirmations"] == 1

    status, body = await rig.call("POST", f"{prefix}/confirm/{task.id}", {"approved": "yes"})
    assert (status, body["code"]) == (400, "INVALID_DECISION")
    status, body = await rig.call("POST", f"{prefix}/confirm/{task.id}",
                                  {"approved": False, "override": {"response": "use the other branch"}})
    assert (status, body) == (200, {"success": True, "sessionId": task.id, "approved": False, "code": conf.code,
                                    "status": "rejected", "counted": True})
    rejected = await rig.shepherd.confirmations.get(ALICE, conf.code)
    assert rejected.reason == "use the other branch"
    status, body = await rig.call("POST", f"{prefix}/confirm/{task.id}", {})
    assert (status, body["code"]) == (404, "NO_PENDING_CONFIRMATION")
    assert body["error"] == f"No pending decision for session {task.id}"
    status, body = await rig.call("POST", f"{prefix}/confirm/task-nope", {"approved": True})
    assert (status, body["code"]) == (404, "TASK_NOT_FOUND")
    assert (await rig.call("GET", f"{prefix}/pending"))[1] == []

    other = await started_task(rig.shepherd, ALICE)
    conf2 = await gate(rig.shepherd, other, pr_plan("e" * 40))
    status, body = await rig.call("POST", f"{prefix}/confirm/{other.id}", {})  # approved defaults to true
    assert (status, body["status"]) == (200, "approved")
    assert (await rig.shepherd.confirmations.get(ALICE, conf2.code)).status == "approved"


async def test_the_task_callback_opens_only_with_that_tasks_token(rig: Rig) -> None:
    task = await started_task(rig.shepherd, ALICE, status="running")
    token, digest = new_task_token()
    async with rig.shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == task.id).values(callback_hash=digest))
    path = f"/api/tasks/{task.id}/confirmations"
    auth = {"Authorization": f"Bearer {token}"}

    status, body = await rig.call("POST", path, {"action": "db.migrate", "summary": "migrate"})  # an API token
    assert (status, body["code"]) == (401, "INVALID_TASK_TOKEN")
    status, body = await rig.call("POST", path, {"action": "db.migrate", "summary": "migrate"}, headers={})
    assert status == 401
    status, body = await rig.call("POST", path, {"action": "db migrate", "summary": "x"}, headers=dict(auth))
    assert (status, body["code"]) == (400, "INVALID_ACTION")
    status, body = await rig.call("POST", path, {"action": "x", "summary": "x", "risk": "huge"}, headers=dict(auth))
    assert (status, body["code"]) == (400, "INVALID_RISK")

    status, body = await rig.call("POST", path, {"action": "db.migrate", "summary": "migrate the users table",
                                                 "params": {"table": "users"}}, headers=dict(auth))
    assert status == 201 and body["status"] == "pending" and body["risk"] == "high" and not body["held"]
    code = body["code"]
    status, body = await rig.call("GET", f"{path}/{code}?wait=0", headers=dict(auth))
    assert status == 200 and body["status"] == "pending"
    status, body = await rig.call("GET", f"{path}/{code}?wait=100", headers=dict(auth))
    assert status == 400
    await rig.shepherd.confirmations.vote(ALICE, code, approve=True)
    status, body = await rig.call("GET", f"{path}/{code}?wait=5", headers=dict(auth))
    assert (status, body["status"], body["decidedBy"]) == (200, "approved", "alice")

    status, body = await rig.call("POST", path, {"action": "status", "summary": "look"}, headers=dict(auth))
    assert status == 200 and body["status"] == "approved" and body["decidedVia"] == "policy"

    other = await started_task(rig.shepherd, ALICE, status="running")
    status, body = await rig.call("POST", f"/api/tasks/{other.id}/confirmations",
                                  {"action": "db.migrate", "summary": "x"}, headers=dict(auth))
    assert (status, body["code"]) == (401, "INVALID_TASK_TOKEN")


async def test_codespar_approval_vote(rig: Rig) -> None:
    task = await started_task(rig.shepherd, ALICE)
    plan = Plan(action="deploy.production", summary="ship", target=Target(repo="acme/api"))
    conf = await gate(rig.shepherd, task, plan, level=5, origin=Origin.PERSON)
    second = await rig.token_for("acme", "read,approve")
    status, body = await rig.call("POST", "/api/approval/vote", {"token": conf.code, "vote": "approve", "userId": "U1",
                                                                  "channelType": "slack\x1b[2J"})
    assert (status, body) == (200, {"success": True, "result": {"status": "pending", "votesReceived": 1,
                                                                "votesRequired": 2}})
    async with rig.shepherd.db.read() as session:  # a client does not get to say the vote came from Slack
        assert {v.via for v in await session.exec(select(Vote))} == {"api"}
    status, body = await rig.call("POST", "/api/approval/vote", {"token": conf.code, "vote": "approve"})
    assert (status, body["code"]) == (404, "VOTE_REJECTED") and "already counted" in body["error"]
    status, body = await rig.call("POST", "/api/approval/vote", {"token": conf.code, "vote": "deny"}, token=second)
    assert (status, body["result"]["status"]) == (200, "denied")
    status, body = await rig.call("POST", "/api/approval/vote", {"token": conf.code, "vote": "approve"}, token=second)
    assert (status, body["code"]) == (404, "VOTE_REJECTED")
    assert body["error"].startswith("Token not found, already resolved, or vote rejected")
    for bad, code in (({"token": conf.code, "vote": "yes"}, "INVALID_VOTE"), ({"vote": "deny"}, "INVALID_TOKEN")):
        status, body = await rig.call("POST", "/api/approval/vote", bad)
        assert (status, body["code"]) == (400, code), body
    viewer = await rig.token_for("acme", "read")
    status, body = await rig.call("POST", "/api/approval/vote", {"token": "ZZZZ", "vote": "deny"}, token=viewer)
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")


async def test_eliza_confirm_never_decides_what_the_client_did_not_name(rig: Rig) -> None:
    task = await started_task(rig.shepherd, ALICE, status="running")
    first = await gate(rig.shepherd, task, Plan(action="db.migrate", summary="a"), origin=Origin.AGENT)
    second = await gate(rig.shepherd, task, Plan(action="db.drop", summary="b"), origin=Origin.AGENT)
    status, body = await rig.call("POST", f"/api/coding-agents/confirm/{task.id}", {"approved": True})
    assert (status, body["code"]) == (409, "AMBIGUOUS_CONFIRMATION") and second.code in body["error"]
    status, body = await rig.call("POST", f"/api/coding-agents/confirm/{task.id}",
                                  {"approved": True, "code": second.code.lower()})
    assert (status, body["code"], body["status"]) == (200, second.code, "approved")
    assert (await rig.shepherd.confirmations.get(ALICE, first.code)).status == "pending"
