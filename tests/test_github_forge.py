"""The GitHub Forge: the real gidgethub client against the loopback fake GitHub API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

import adapters.github.forge
from adapters.github.auth import GitHubAuth
from adapters.github.forge import GitHubForge
from core.autonomy.forge import ForgeError
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
    forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
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
    forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
    pr = await forge.open_pull_request("acme/api", head="b", base="main", title="t", body="")
    url = await forge.comment("acme/api", pr.number, "looks good")
    assert url.endswith("#issuecomment-1") and github.comments[0]["body"] == "looks good"
    head = github.pulls[("acme/api", 1)]["head"]["sha"]
    with pytest.raises(ForgeError) as moved:
        await forge.merge("acme/api", 1, sha="0" * 40)
    assert moved.value.host_status == 409
    sha = await forge.merge("acme/api", 1, sha=head)
    assert sha and await forge.merge("acme/api", 1, sha=head) == sha


async def test_failures_carry_githubs_status_and_words_but_never_the_token(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    bad = GitHubForge(GitHubAuth(http, token="wrong-token", base_url=github.base_url))
    with pytest.raises(ForgeError) as denied:
        await bad.comment("acme/api", 1, "x")
    assert denied.value.host_status == 401 and "Bad credentials" in denied.value.message
    assert "wrong-token" not in denied.value.message and not denied.value.transient

    forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
    github.fail_next(502)
    with pytest.raises(ForgeError) as broken:
        await forge.comment("acme/api", 1, "x")
    assert broken.value.host_status == 502 and broken.value.transient
    github.rate_limit_next()
    with pytest.raises(ForgeError) as limited:
        await forge.comment("acme/api", 1, "x")
    assert limited.value.host_status == 429 and limited.value.transient and "rate limit" in limited.value.message
    with pytest.raises(ForgeError) as missing:
        await forge.merge("acme/api", 99)
    assert missing.value.host_status == 404

    gone = GitHubForge(GitHubAuth(http, token=TOKEN, base_url="http://127.0.0.1:9"))
    with pytest.raises(ForgeError) as unreachable:
        await gone.comment("acme/api", 1, "x")
    assert unreachable.value.host_status == 0 and unreachable.value.transient


async def test_a_pull_request_opened_by_a_racing_retry_is_found_after_githubs_422(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
    first = await forge.open_pull_request("acme/api", head="b", base="main", title="t", body="")
    github.answer_next(200, [], method="GET")  # the lookup misses it: another process opened it a moment ago
    again = await forge.open_pull_request("acme/api", head="b", base="main", title="t", body="")
    assert (again.number, again.created) == (first.number, False)
    assert [(r.method, r.path) for r in github.requests[-3:]] == [
        ("GET", "/repos/acme/api/pulls"), ("POST", "/repos/acme/api/pulls"), ("GET", "/repos/acme/api/pulls")]
    assert len(github.pulls) == 1


@pytest.mark.parametrize("status", [403, 429])
async def test_a_secondary_rate_limit_is_retryable_and_says_when(
    github: FakeGitHub, http: aiohttp.ClientSession, status: int
) -> None:
    forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
    github.secondary_rate_limit_next(status=status, retry_after=60)
    with pytest.raises(ForgeError) as limited:
        await forge.comment("acme/api", 1, "x")
    assert limited.value.host_status == 429 and limited.value.transient
    assert "retry after 60 s" in limited.value.message and "secondary rate limit" in limited.value.message
    assert limited.value.retry_after == 60.0  # the executor waits that long before its next attempt
    assert TOKEN not in limited.value.message


async def test_a_github_that_does_not_answer_in_time_is_unreachable(
    github: FakeGitHub, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapters.github.forge, "TIMEOUT_S", 0.1)
    forge = GitHubForge(GitHubAuth(http, token=TOKEN, base_url=github.base_url))
    github.stall_next(0.5)
    with pytest.raises(ForgeError) as slow:
        await forge.comment("acme/api", 1, "x")
    assert slow.value.host_status == 0 and slow.value.transient and "did not answer" in slow.value.message


async def test_the_fake_refuses_what_github_refuses(github: FakeGitHub, http: aiohttp.ClientSession) -> None:
    url = f"{github.base_url}/repos/acme/api/pulls"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(url, headers=auth, skip_auto_headers=["User-Agent"]) as anonymous:
        assert anonymous.status == 403 and "User-Agent" in (await anonymous.json())["message"]
    async with http.get(url, headers={"User-Agent": "t"}) as unsigned:
        assert (unsigned.status, await unsigned.json()) == (
            401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
    async with http.get(url, headers={"User-Agent": "t", **auth}) as listed:
        assert (listed.status, await listed.json()) == (200, [])
    async with http.get(f"{url}/7", headers={"User-Agent": "t", **auth}) as missing:
        assert missing.status == 404 and (await missing.json())["message"] == "Not Found"
