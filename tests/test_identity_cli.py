"""Identities as a new user meets them: `token create --user` (or `--name`) makes a token act for a person, the
console acts as the person SHEPHERD_CONSOLE_USER (or --user) names, and all of them are one voter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.presets import agent_catalog
from core.autonomy.plans import Origin, Plan, Target
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from tests.conftest import person
from tests.procs import Home, stop
from tests.test_confirmations import gate, started_task

pytestmark = pytest.mark.slow


async def _pending_production_deploy(url: str) -> str:
    """A critical confirmation (quorum 2) that otto asked for."""
    db = Database(url)
    try:
        shepherd = Shepherd(db, catalog=agent_catalog())
        task = await started_task(shepherd, person(Role.OPERATOR, name="otto"))
        plan = Plan(action="deploy.production", summary="deploy to production", target=Target(repo="acme/api"))
        return (await gate(shepherd, task, plan, level=5, origin=Origin.PERSON)).code
    finally:
        await db.dispose()


def test_a_persons_tokens_and_console_are_one_voter_and_a_token_of_nobody_never_decides(tmp_path: Path) -> None:
    home = Home(tmp_path, SHEPHERD_ORG="acme", SHEPHERD_CONSOLE_USER="ana")
    made = home.run("token", "create", "--name", "ana", "--scopes", "read", "write", "approve", "admin").stdout
    assert "acting for ana, a new user with role admin" in made
    again = home.run("token", "create", "--user", "ana", "--scopes", "read", "approve").stdout
    assert "acting for ana (role admin)" in again
    ana_token = again.strip().splitlines()[-1]
    nobody = home.run("token", "create", "--label", "ci", "--scopes", "read", "approve").stdout
    assert "'ci'" in nobody and "acts for no person" in nobody and "--user NAME" in nobody
    nobody_token = nobody.strip().splitlines()[-1]
    limited = home.run("token", "create", "--user", "vic", "--scopes", "read").stdout
    assert "a new user with role viewer" in limited
    raised = home.run("token", "create", "--user", "vic", "--scopes", "read", "approve").stdout
    assert "vic's role viewer limits it to read" in raised

    users = home.run("console", "-c", "users").stdout
    assert sum(line.split()[0] == "ana" for line in users.splitlines()[1:]) == 1, users

    code = asyncio.run(_pending_production_deploy(f"sqlite:///{home.root / '.shepherd' / 'shepherd.db'}"))
    first = home.run("console", "-c", f"approve {code}")
    assert f"{code}: your approval is counted, 1/2" in first.stdout
    server = home.start("web")
    try:
        status, body = home.http("POST", f"/api/confirmations/{code}/decision", {"decision": "approve"}, ana_token)
        assert status == 200 and not body["counted"], "ana voted already, from the console"
        status, body = home.http("POST", f"/api/confirmations/{code}/decision", {"decision": "reject"}, nobody_token)
        assert (status, body["code"]) == (403, "NOT_A_PERSON") and "token create --user" in body["error"]
    finally:
        stop(server)
    ben = home.run("console", "--user", "ben", "-c", f"approve {code}")
    assert f"{code} approved by ben from console" in ben.stdout
    assert "acting as ben, a new admin user of org acme" in ben.stderr

    doctor = home.run("doctor", check=False).stdout
    assert "console: acts as ana (SHEPHERD_CONSOLE_USER) with admin rights in org acme" in doctor
