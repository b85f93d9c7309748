"""GitHub credentials: a GitHub App's installation tokens (a real RS256 JWT, checked by the fake GitHub with the App's
public key) minted per installation, kept until shortly before they expire, shared by callers that ask together,
refused with a wrong key; the settings refuse a bad App at start; clones and pushes carry the repository's token
to the code host only."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from adapters.github.auth import GitHubApp, GitHubAuth
from adapters.github.calls import GitHubCallFailed
from adapters.github.forge import GitHubForge
from bot.settings import Settings
from core.autonomy.actions import ActionsConfig, Executor
from core.runners.credentials import git_auth
from tests.fakes.github_api import FakeGitHub

APP_ID = 4242
INSTALLATION = 77


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def github(app_key: rsa.RSAPrivateKey) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub("unused-token") as fake:
        public = app_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        fake.install_app(APP_ID, public, slug="shepherd-ci", installations={INSTALLATION: ["acme/api"]})
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _mints(github: FakeGitHub) -> int:
    return sum(1 for r in github.requests if r.path.endswith("/access_tokens"))


async def test_an_app_mints_one_token_per_installation_keeps_it_and_mints_again_before_it_expires(
    github: FakeGitHub, http: aiohttp.ClientSession, app_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    github.clock = clock
    auth = GitHubAuth(http, base_url=github.base_url, app=GitHubApp(str(APP_ID), _pem(app_key)), clock=clock)
    assert auth.configured and auth.mode == "app"

    # callers that ask at once share one mint, and the token acts on the repository
    tokens = await asyncio.gather(*(auth.token("acme/api") for _ in range(5)))
    assert len(set(tokens)) == 1 and tokens[0] is not None and tokens[0].startswith("ghs_")
    assert _mints(github) == 1
    assert sum(1 for r in github.requests if r.path == "/repos/acme/api/installation") == 1
    forge = GitHubForge(auth)
    assert (await forge.comment("acme/api", 3, "hello")).endswith("#issuecomment-1")
    assert github.comments[0]["user"]["login"] == "shepherd-ci[bot]"
    assert github.requests[-1].headers["Authorization"] == f"token {tokens[0]}"
    assert _mints(github) == 1  # kept: the comment used the same token

    clock.now += 3600 - 301  # still kept: more than five minutes left
    assert await auth.token("acme/api") == tokens[0] and _mints(github) == 1
    clock.now += 2  # less than five minutes left: a new one
    renewed = await auth.token("acme/api")
    assert renewed != tokens[0] and _mints(github) == 2
    clock.now += 3600  # the old one has expired at GitHub too: it would be refused, the kept one is not
    await forge.comment("acme/api", 3, "again")
    assert _mints(github) == 3 and len(github.comments) == 2
    assert await auth.login() == "shepherd-ci[bot]"


async def test_an_app_not_installed_on_a_repository_has_no_token_there_and_says_how_to_fix_it(
    github: FakeGitHub, http: aiohttp.ClientSession, app_key: rsa.RSAPrivateKey
) -> None:
    auth = GitHubAuth(http, base_url=github.base_url, app=GitHubApp(str(APP_ID), _pem(app_key)))
    assert await auth.token("acme/elsewhere") is None  # a public clone still works without one
    with pytest.raises(GitHubCallFailed) as missing:
        await auth.api("acme/elsewhere")
    assert missing.value.host_status == 404 and "not installed on acme/elsewhere" in missing.value.message
    assert _mints(github) == 0


async def test_a_wrong_key_is_refused_by_github_and_the_message_names_the_settings(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = GitHubAuth(http, base_url=github.base_url, app=GitHubApp(str(APP_ID), _pem(stranger)))
    with pytest.raises(GitHubCallFailed) as refused:
        await auth.token("acme/api")
    assert refused.value.host_status == 401 and not refused.value.transient
    assert "GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY" in refused.value.message
    assert github.app is not None and github.app.jwts_seen == 0 and _mints(github) == 0
    wrong_id = GitHubAuth(http, base_url=github.base_url, app=GitHubApp("999", _pem(stranger)))
    with pytest.raises(GitHubCallFailed):
        await wrong_id.login()


async def test_clones_and_pushes_carry_the_installation_token_to_the_code_host_only(
    github: FakeGitHub, http: aiohttp.ClientSession, app_key: rsa.RSAPrivateKey
) -> None:
    auth = GitHubAuth(http, base_url=github.base_url, app=GitHubApp(str(APP_ID), _pem(app_key)))
    settings = await git_auth(auth, "https://github.com/acme/api.git", "https://github.com")
    token = await auth.token("acme/api")
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert settings == {"http.extraHeader": f"Authorization: Basic {basic}"}
    for elsewhere in ("https://evil.example/acme/api.git", "http://github.com/acme/api.git",
                      "https://github.com/acme/elsewhere.git"):
        assert await git_auth(auth, elsewhere, "https://github.com") == {}, elsewhere
    executor = Executor(ActionsConfig(git_base_url="https://github.com"), credentials=auth)
    assert await executor._credentials("https://github.com/acme/api.git") == settings  # pushes: the same token
    token_auth = GitHubAuth(http, base_url=github.base_url, token="ghp_static")
    assert await git_auth(token_auth, "https://github.com/acme/other", "https://github.com")
    assert token not in repr(auth.app) and "PRIVATE" not in repr(auth.app)


def test_settings_take_the_key_as_text_or_a_file_and_refuse_a_bad_app_at_start(
    app_key: rsa.RSAPrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "SHEPHERD_GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    pem = _pem(app_key)
    key_file = tmp_path / "app.pem"
    key_file.write_text(pem)
    monkeypatch.setenv("GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", str(key_file))
    from_file = Settings().github_app()
    assert from_file is not None and from_file.app_id == str(APP_ID) and "BEGIN PRIVATE KEY" in from_file.private_key
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", pem.replace("\n", "\\n"))  # one line, as a .env holds it
    assert Settings().github_app() == from_file
    assert Settings().masked()["GITHUB_APP_PRIVATE_KEY"] == "********"

    def refused(**env: str) -> str:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError) as bad:
            Settings()
        return str(bad.value)

    assert "not a GitHub App id" in refused(GITHUB_APP_ID="my-app")
    monkeypatch.setenv("GITHUB_APP_ID", str(APP_ID))
    assert "cannot be read as a file" in refused(GITHUB_APP_PRIVATE_KEY=str(tmp_path / "missing.pem"))
    garbled = "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"
    assert "not a readable" in refused(GITHUB_APP_PRIVATE_KEY=garbled)
    assert "not an RSA key" in refused(GITHUB_APP_PRIVATE_KEY=_pem(ec.generate_private_key(ec.SECP256R1())))
    monkeypatch.delenv("GITHUB_APP_PRIVATE_KEY")
    assert "set GITHUB_APP_PRIVATE_KEY too" in refused()
