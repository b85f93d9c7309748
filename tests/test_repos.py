"""Repository sources cannot make Shepherd a confused deputy: a task's repository comes from the configured code
host or a host an admin allowed, never from a private address reached by a pattern, and git reaches it with
nothing of the server user's (no HOME config, credential helper, .netrc or SSH agent). Real git throughout."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.presets import agent_catalog
from core.autonomy.actions import ActionError, ActionsConfig, Executor
from core.autonomy.policy import Policy
from core.errors import ValidationFailed
from core.people.access import Role
from core.runners.repos import RepoRefused, RepoRules, not_public, parse_hosts, parse_remote
from core.runners.workspace import WorkspaceError, prepare
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Confirmation, Task
from core.tasks.supervisor import RunnerConfig
from tests.conftest import person
from tests.fakes.git_http import GitHttp
from tests.gitrepos import git, github_host, seed_repo
from tests.procs import Home
from tests.test_tasks import supervisor as make_supervisor

LOOPBACKS = ("http://127.0.0.1:{port}/acme/api.git", "git@127.0.0.1:/etc", "ssh://git@127.0.0.1/etc",
             "git://127.0.0.1/acme/api.git", "http://[::1]:{port}/x.git", "http://[::ffff:127.0.0.1]/x.git",
             "https://0.0.0.0/x.git", "http://169.254.169.254/latest/meta-data", "http://localhost:{port}/x.git")
PUBLIC = "93.184.216.34"


async def public_dns(host: str, port: int) -> list[str]:
    """DNS as it answered when the task was created: a public address (the host later rebinds)."""
    return [PUBLIC]


# --- what counts as private ------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.1", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "100.127.255.254", "224.0.0.1", "255.255.255.255", "240.0.0.1", "198.18.0.1", "::", "::1", "fe80::1", "fd00::1",
    "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1",
    "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fec0::1",
])
def test_private_loopback_link_local_and_embedded_addresses_are_not_public(address: str) -> None:
    assert not_public(ipaddress.ip_address(address)) is not None, address


@pytest.mark.parametrize("address", ["93.184.216.34", "140.82.112.3", "2606:4700:4700::1111", "2a00:1450:4001::1"])
def test_public_addresses_are_public(address: str) -> None:
    assert not_public(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("url", [
    "http://2130706433/x.git", "http://0x7f.1/x.git", "http://127.1/x.git", "http://a@b@127.0.0.1/x.git",
    "ssh://-oProxyCommand=touch%20x/y", "http://host name/x", "http://ex\\ample.com/x", "ftp://example.com/x",
    "https://example.com:99999/x", "https:///x.git", "https://ghp_secret@github.com/a/b.git",
    "https://me:hunter2@git.example.com/a.git", "http://[::1/x.git", "git@[::1]:x.git", "http://\u0661\u0662\u0663.example/x",
])
def test_urls_that_resolvers_and_git_might_read_differently_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse_remote(url)
    assert err.value.code == "INVALID_REPO"


def test_the_setting_takes_names_addresses_and_patterns_only() -> None:
    assert parse_hosts("git.example.com, *.corp.example, [::1],10.0.0.5,*") == \
        ("git.example.com", "*.corp.example", "::1", "10.0.0.5", "*")
    for bad in ("https://git.example.com", "git.example.com:22", "*example.com", "a/b"):
        with pytest.raises(ValidationFailed):
            parse_hosts(bad)


# --- at task creation -----------------------------------------------------------------------------------

async def test_loopback_repositories_are_refused_whatever_the_allowlist_says_by_pattern(shepherd: Shepherd) -> None:
    for hosts in ((), ("*",)):
        shepherd.tasks.repos = RepoRules(hosts=hosts)
        for url in LOOPBACKS:
            with pytest.raises(RepoRefused) as err:
                await shepherd.tasks.create(person(Role.ADMIN), prompt="x", runtime="claude",
                                            repo=url.format(port=8080))
            assert (err.value.code, err.value.status) == ("REPO_HOST_NOT_ALLOWED", 400), url
            assert "SHEPHERD_REPO_HOSTS" in err.value.message, url
    shepherd.tasks.repos = RepoRules(hosts=("*",))
    with pytest.raises(RepoRefused, match="localhost resolves to .*loopback"):
        await shepherd.tasks.create(person(Role.ADMIN), prompt="x", runtime="claude", repo="http://localhost/x.git")


async def test_the_code_host_and_hosts_named_exactly_are_accepted(shepherd: Shepherd) -> None:
    shepherd.tasks.repos = RepoRules(hosts=("127.0.0.1", "git.internal.test"))
    operator = person(Role.OPERATOR)
    for repo in ("acme/api", "https://github.com/acme/api.git", "http://127.0.0.1:3000/acme/api.git",
                 "git@git.internal.test:acme/api.git", "ssh://git@git.internal.test:2222/acme/api.git"):
        view = await shepherd.tasks.create(operator, prompt="x", runtime="claude", repo=repo)
        assert view.task.repo == repo
    for elsewhere in ("https://github.com:8443/acme/api.git", "git@github.com:acme/api.git",
                      "https://gitlab.com/acme/api.git"):
        with pytest.raises(RepoRefused):
            await shepherd.tasks.create(operator, prompt="x", runtime="claude", repo=elsewhere)


async def test_a_refused_repository_is_a_400_naming_the_setting_over_rest(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", repos=RepoRules(hosts=("*",)))
    await shepherd.orgs.ensure("acme")
    token = (await shepherd.tokens.create(org_id="acme", name="ops", scopes="read,write")).secret
    client = TestClient(TestServer(create_app(db_url, shepherd=shepherd)))
    await client.start_server()
    try:
        for repo, code in (("git@127.0.0.1:/etc", "REPO_HOST_NOT_ALLOWED"),
                           ("http://localhost:8080/x.git", "REPO_HOST_NOT_ALLOWED"),
                           ("http://2130706433/x.git", "INVALID_REPO"), ("/etc", "INSUFFICIENT_SCOPE")):
            resp = await client.post("/api/v2/tasks/me", json={"input": "x", "repo": repo},
                                     headers={"Authorization": f"Bearer {token}"})
            body = await resp.json()
            assert (resp.status, body["code"]) == (403 if code == "INSUFFICIENT_SCOPE" else 400, code), body
            if code == "REPO_HOST_NOT_ALLOWED":
                assert "SHEPHERD_REPO_HOSTS" in body["error"]
    finally:
        await client.close()
        await db.dispose()


# --- right before git connects --------------------------------------------------------------------------

async def test_a_host_that_rebinds_to_loopback_after_creation_is_refused_before_the_clone(
    db: Database, tmp_path: Path
) -> None:
    shepherd = Shepherd(db, catalog=agent_catalog(), repos=RepoRules(hosts=("*",), resolve=public_dns))
    await shepherd.orgs.ensure("acme")
    with GitHttp(tmp_path / "served") as server:
        created = await shepherd.tasks.create(person(Role.OPERATOR), prompt="x", runtime="demo",
                                              repo=server.url("app.git", host="localhost"))
        config = RunnerConfig(workspace_root=tmp_path / "ws", repo_hosts=("*",), poll_s=0.05, flush_s=0.05)
        supervisor = make_supervisor(shepherd, config)
        await supervisor.start()
        try:
            task = await _finished(shepherd, created.task.id)
        finally:
            await supervisor.stop()
        assert server.requests == [], "git never connected"
    assert task.outcome == "failed" and "localhost resolves to" in task.evidence["reason"]
    assert "loopback" in task.evidence["reason"]


async def test_a_pattern_pins_git_to_the_checked_addresses() -> None:
    rules = RepoRules(hosts=("*.example.test",), resolve=public_dns)
    http = await rules.reach("https://git.example.test/acme/api.git")
    assert http.config["http.curloptResolve"] == f"git.example.test:443:{PUBLIC}"
    assert http.config["http.followRedirects"] == "false"
    ssh = await rules.reach("git@git.example.test:acme/api.git")
    assert ("-o", f"HostName={PUBLIC}") == ssh.ssh_options[:2] and "HostKeyAlias=git.example.test" in ssh.ssh_options
    # git:// cannot be pinned: git would look the name up again, so only a host named exactly is reached by it
    with pytest.raises(RepoRefused, match="named exactly"):
        await rules.reach("git://git.example.test/acme/api.git")
    assert (await RepoRules(hosts=("git.example.test",), resolve=public_dns)
            .reach("git://git.example.test/acme/api.git")).url == "git://git.example.test/acme/api.git"


async def test_a_push_checks_the_host_again(tmp_path: Path) -> None:
    upstream = seed_repo(tmp_path / "upstream")
    ws = tmp_path / "ws"
    _, sha = await prepare(ws, source=str(upstream), base_branch=None, work_branch="shepherd/t")
    task = Task(id="task-1", org_id="acme", name="t", display_name="t", owner_id="u", owner_name="u",
                runtime="demo", prompt="x", repo="http://localhost:9/x.git", status="awaiting", state="idle",
                workspace=str(ws))
    conf = Confirmation(id="conf-1", org_id="acme", code="ABCD", task_id=task.id, action="branch.push", risk="medium",
                        level=1, origin="policy", summary="push", plan_hash="x", requester_id="u",
                        requester_name="u", status="approved", expires_at=task.created_at,
                        target={"repo": task.repo, "branch": "shepherd/t", "head": sha})
    executor = Executor(ActionsConfig())
    with pytest.raises(ActionError, match="refused: localhost resolves to"):
        await executor.execute(conf, task, Policy(), repos=RepoRules(hosts=("*",)))


# --- nothing of the server user's ------------------------------------------------------------------------

@pytest.fixture
def users_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server user's home as a developer's machine has it: a credential helper, a header git would add,
    a .netrc with a password for every host, and an SSH agent."""
    home = tmp_path / "home"
    home.mkdir()
    helper = home / "helper.sh"
    helper.write_text(f"#!/bin/sh\ntouch {tmp_path / 'helper-ran'}\necho username=me\necho password=hunter2\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    (home / ".gitconfig").write_text(f"[credential]\n\thelper = {helper}\n[http]\n\textraHeader = X-Leak: from-home\n")
    (home / ".netrc").write_text("default login me password hunter2\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'http.extraheader=X-Leak: from-env'")
    return home


async def test_a_clone_offers_none_of_the_users_credentials(users_home: Path, tmp_path: Path) -> None:
    with GitHttp(tmp_path / "served") as server:
        url = server.url("private/app.git")
        # the same clone with the user's environment would hand over their credentials: the set-up is live
        subprocess.run(["git", "clone", "-q", url, str(tmp_path / "leaky")], env={**os.environ,
                       "GIT_TERMINAL_PROMPT": "0"}, capture_output=True, check=False)
        assert (tmp_path / "helper-ran").exists()
        assert any("authorization" in r or "x-leak" in r for r in server.requests)
        (tmp_path / "helper-ran").unlink()
        server.requests.clear()

        reach = await RepoRules(hosts=("127.0.0.1",)).reach(url)
        with pytest.raises(WorkspaceError):
            await prepare(tmp_path / "ws", source=reach.url, base_branch=None, work_branch="shepherd/t",
                          env=reach.env())
        assert server.requests, "git did ask the server"
    assert not (tmp_path / "helper-ran").exists(), "the user's credential helper ran"
    assert all("authorization" not in r and "x-leak" not in r for r in server.requests), server.requests


async def test_ssh_runs_in_batch_mode_without_the_users_agent_config_or_keys(
    users_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "ssh.json"
    fake = bin_dir / "ssh"  # stands for the network: records how git called it, then fails as a refused login
    fake.write_text(f"#!/usr/bin/env python3\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
                    f"sys.exit(255)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    reach = await RepoRules(hosts=("*.example.test",), resolve=public_dns).reach("git@git.example.test:acme/api.git")
    with pytest.raises(WorkspaceError):
        await prepare(tmp_path / "ws", source=reach.url, base_branch=None, work_branch="shepherd/t", env=reach.env())
    called = json.loads(record.read_text())
    assert "SSH_AUTH_SOCK" not in called["env"] and called["env"]["HOME"] != str(users_home)
    args = " ".join(called["argv"])
    for wanted in ("-F /dev/null", "BatchMode=yes", "IdentityAgent=none", "IdentityFile=/dev/null",
                   f"HostName={PUBLIC}", "HostKeyAlias=git.example.test"):
        assert wanted in args, args
    assert called["argv"][-2:] == ["git@git.example.test", "git-upload-pack 'acme/api.git'"]


# --- as a user meets it ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_allowlisted_git_server_is_cloned_and_others_are_refused_with_the_setting_named(tmp_path: Path) -> None:
    served = tmp_path / "served"
    hosts = github_host(tmp_path)
    git("clone", "-q", "--bare", str(hosts / "acme" / "api.git"), str(served / "app.git"), cwd=tmp_path)
    with GitHttp(served) as server:
        server.publish(served / "app.git")
        url = server.url("app.git")
        home = Home(tmp_path, SHEPHERD_DEFAULT_AGENT="demo", SHEPHERD_ORG="acme")
        refused = home.run("console", "-c", f'run "add a greeting" --repo {url}', check=False)
        assert refused.returncode == 1 and "SHEPHERD_REPO_HOSTS" in refused.stderr
        home.env["SHEPHERD_REPO_HOSTS"] = "127.0.0.1"
        out = home.run("console", "-c", f'run "look [see README.md] [noedit]" --repo {url}').stdout
        assert "see README.md: exists" in out and "succeeded" in out.splitlines()[-1]


async def _finished(shepherd: Shepherd, task_id: str) -> Task:
    for _ in range(400):
        task = await shepherd.tasks.get(person(Role.ADMIN), task_id)
        if task.outcome is not None:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError("the task did not finish")

