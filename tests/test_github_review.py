"""Findings of the independent review of issue 14 (GitHub channel): each test is a way an outsider, a bot or bad
luck could make Shepherd do what it must not, against the real app, the loopback fake GitHub and both stores."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import select

from core.store.models import Confirmation, Delivery
from tests.test_github_inbound import CONFIG, World, _world, comment, failed_check, payload


@pytest.fixture
async def github(tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    async for made in _world(tmp_path, db_url, config=CONFIG):
        yield made


async def _confirmation(gh: World) -> Confirmation:
    async with gh.shepherd.db.read() as session:
        return (await session.exec(select(Confirmation))).one()


@pytest.mark.parametrize("odd", [5, {"a": 1}, True])
async def test_a_check_runs_pull_requests_of_a_wrong_type_is_not_a_5xx(github: World, odd: object) -> None:
    data = failed_check("e" * 40)
    data["check_run"]["pull_requests"] = odd
    status, _ = await github.deliver("check_run", data)
    assert status < 500


async def test_a_nul_character_in_a_payload_is_not_a_5xx(github: World) -> None:
    data = comment("hello \u0000 world")
    status, _ = await github.deliver("issue_comment", data)
    assert status < 500
    data = comment("/shepherd fix \u0000 it", comment_id=3201)
    status, _ = await github.deliver("issue_comment", data)
    assert status < 500
    await github.idle()
    async with github.shepherd.db.read() as session:
        failed = [(d.key, d.error) for d in await session.exec(select(Delivery)) if d.status != "done"]
    assert failed == []


async def test_deeply_nested_json_is_a_4xx(github: World) -> None:
    status, _ = await github.deliver("issue_comment", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert 400 <= status < 500


async def test_nan_in_a_payload_is_not_a_5xx(github: World) -> None:
    raw = json.dumps(comment("hello")).encode()
    raw = raw[:-1] + b', "x": NaN}'
    status, _ = await github.deliver("issue_comment", raw)
    assert status < 500


async def test_every_delivery_answers_never_5xx_for_odd_shapes(github: World) -> None:
    shapes = []
    base = comment("/shepherd fix it")
    for field in ("issue", "comment", "repository"):
        for value in (None, 1, "x", [], {"number": "7"}):
            data = copy.deepcopy(base)
            data[field] = value
            shapes.append(("issue_comment", data))
    pr = copy.deepcopy(payload("pull_request", "opened.payload.json"))
    for value in (None, 1, "x", []):
        data = copy.deepcopy(pr)
        data["pull_request"]["head"] = value
        shapes.append(("pull_request", data))
        data = copy.deepcopy(pr)
        data["pull_request"]["user"] = value
        shapes.append(("pull_request", data))
    for event, data in shapes:
        status, _ = await github.deliver(event, data)
        assert status < 500, (event, data)
    await github.idle()
    async with github.shepherd.db.read() as session:
        failed = [d for d in await session.exec(select(Delivery)) if d.status == "failed"]
    assert failed == []



async def test_an_outsiders_held_approve_is_not_released_with_a_maintainers_rights(github: World) -> None:
    await github.deliver("check_run", failed_check("d" * 40))  # level 1: the incident's start waits for approval
    await github.idle()
    conf = await _confirmation(github)
    assert conf.status == "pending"
    # the code is public (the progress comment shows it): an outsider says it, and is held
    await github.deliver("issue_comment", comment(f"/shepherd approve {conf.code}", login="drive-by",
                                                  association="NONE", number=2, comment_id=3001))
    await github.idle()
    # an admin releases what is held there, meaning to let the outsider's words count
    await github.deliver("issue_comment", comment("/shepherd ok-to-run", login="octo-admin", number=2,
                                                  comment_id=3002))
    await github.idle()
    assert (await _confirmation(github)).status == "pending", "the outsider's approve ran with the admin's role"
    said = await github.said("acme/api#2")
    assert any("approver" in text for text in said), said  # the outsider's approve refused, as theirs
    # the admin's own approve still decides
    await github.deliver("issue_comment", comment(f"/shepherd approve {conf.code}", login="octo-admin", number=2,
                                                  comment_id=3003))
    await github.idle()
    assert (await _confirmation(github)).status == "approved"


async def test_an_outsiders_held_ok_to_run_released_starts_nothing(github: World) -> None:
    await github.deliver("issue_comment", comment("/shepherd ok-to-run", login="drive-by",
                                                  association="CONTRIBUTOR", comment_id=3401))
    await github.idle()
    await github.deliver("issue_comment", comment("/shepherd ok-to-run", comment_id=3402))
    await github.idle()
    assert await github.tasks() == []
    assert any("nothing is held" in text for text in await github.said("acme/api#7"))


async def test_two_ok_to_runs_at_once_start_one_task(github: World) -> None:
    await github.deliver("issue_comment", comment("/shepherd fix the docs", login="drive-by",
                                                  association="CONTRIBUTOR", comment_id=3301))
    await github.idle()
    await asyncio.gather(*(github.deliver("issue_comment", comment("/shepherd ok-to-run", comment_id=3302 + i))
                           for i in range(3)))
    await github.idle()
    assert len(await github.tasks()) == 1


async def test_shepherds_own_comment_is_not_a_command_when_its_login_cannot_be_read(github: World) -> None:
    # Shepherd's token belongs to a member of the repository; a comment of its own holds a command line (an
    # agent's output it shows, an answer quoting one), and GET /user fails just then
    github.fake.fail_next(502, method="GET")
    key = "f00d0000-0000-0000-0000-000000000001"
    await github.deliver("issue_comment", comment("/shepherd fix it", login=github.fake.token_login,
                                                  association="OWNER", comment_id=3101), delivery=key)
    await github.idle()
    assert await github.tasks() == []
    async with github.shepherd.db.read() as session:
        [row] = [d for d in await session.exec(select(Delivery)) if d.key == key]
    assert row.status == "failed"  # processed again later, when Shepherd knows who it is
    # then a redelivery (or the sweep) finds it is Shepherd's own, and does nothing
    await github.deliver("issue_comment", comment("/shepherd fix it", login=github.fake.token_login,
                                                  association="OWNER", comment_id=3101), delivery=key)
    await github.idle()
    assert await github.tasks() == []
    # a member's own command still runs
    await github.deliver("issue_comment", comment("/shepherd fix it", comment_id=3102))
    await github.idle()
    assert len(await github.tasks()) == 1
