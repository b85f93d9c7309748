"""The GitHub Forge: the real gidgethub client against the loopback fake GitHub API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.github.forge import GitHubForge
from core.forge import ForgeError
from tests.fakes.github_api import FakeGitHub

TOKEN = "ghp_secret_value_123"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(TOKEN) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_pull_request_is_opened_once_per_branch_and_found_again(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    forge = GitHubForge(http, token=TOKEN, base_url=github.base_url)
    pr = await forge.open_pull_request("acme/api", head="shepherd/fix", base="main", title="Fix", body="why")
    assert (pr.number, pr.head, pr.base, pr.state, pr.created) == (1, "shepherd/fix", "main", "open", True)
    assert pr.url == "https://github.com/acme/api/pull/1"
    again = await forge.open_pull_request("acme/api", head="shepherd/fix", base="main", title="Fix", body="why")
    assert (again.number, again.created) == (1, False)
    posts = [r for r in github.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].body == {"title": "Fix", "head": "shepherd/fix", "base": "main", "body": "why"}
    assert github.requests[0].query == {"head": "acme:shepherd/fix", "state": "open"}
    assert github.requests[0].headers["Authorization"] == f"token {TOKEN}"


async def test_comment_and_merge_and_a_second_merge_returns_the_same_commit(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    forge = GitHubForge(http, token=TOKEN, base_url=github.base_url)
    pr = await forge.open_pull_request("acme/api", head="b", base="main", title="t", body="")
    url = await forge.comment("acme/api", pr.number, "looks good")
    assert url.endswith("#issuecomment-1") and github.comments[0]["body"] == "looks good"
    head = github.pulls[("acme/api", 1)]["head"]["sha"]
    with pytest.raises(ForgeError) as moved:
        await forge.merge("acme/api", 1, sha="0" * 40)
    assert moved.value.status == 409
    sha = await forge.merge("acme/api", 1, sha=head)
    assert sha and await forge.merge("acme/api", 1, sha=head) == sha


async def test_failures_carry_githubs_status_and_words_but_never_the_token(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    bad = GitHubForge(http, token="wrong-token", base_url=github.base_url)
    with pytest.raises(ForgeError) as denied:
        await bad.comment("acme/api", 1, "x")
    assert denied.value.status == 401 and "Bad credentials" in denied.value.message
    assert "wrong-token" not in denied.value.message and not denied.value.retryable

    forge = GitHubForge(http, token=TOKEN, base_url=github.base_url)
    github.fail_next(502)
    with pytest.raises(ForgeError) as broken:
        await forge.comment("acme/api", 1, "x")
    assert broken.value.status == 502 and broken.value.retryable
    github.rate_limit_next()
    with pytest.raises(ForgeError) as limited:
        await forge.comment("acme/api", 1, "x")
    assert limited.value.status == 429 and limited.value.retryable and "rate limit" in limited.value.message
    with pytest.raises(ForgeError) as missing:
        await forge.merge("acme/api", 99)
    assert missing.value.status == 404

    gone = GitHubForge(http, token=TOKEN, base_url="http://127.0.0.1:9")
    with pytest.raises(ForgeError) as unreachable:
        await gone.comment("acme/api", 1, "x")
    assert unreachable.value.status == 0 and unreachable.value.retryable
