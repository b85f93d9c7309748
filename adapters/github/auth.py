"""How Shepherd speaks to GitHub as itself: the credentials of every API call and clone, and its own login.

One object per process (bot/background.py builds it from settings) hands out gidgethub clients, in one of two
modes:

- a token (`SHEPHERD_GITHUB_TOKEN`): every repository gets the same token; Shepherd is the token's user;
- a GitHub App (`GITHUB_APP_ID` + `GITHUB_APP_PRIVATE_KEY`): each repository gets a token of the App's
  installation on it (`GET /repos/{owner}/{repo}/installation`, cached), minted with gidgethub.apps and kept
  until shortly before it expires; callers asking at the same moment share one mint. Shepherd is
  `<app slug>[bot]` (`GET /app`, with the App's JWT).

Tokens never leave this module but inside the clients it builds and the git settings of one clone or push
(core.runners.credentials); they never reach an agent, and errors are cleaned of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token, get_jwt

from adapters.github.calls import GitHubCallFailed, call

REQUESTER = "shepherd"
REFRESH_BEFORE_S = 300.0  # an installation token is replaced this long before it expires (they last an hour)
APP_SETTINGS = "GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY"


class BadAppKey(ValueError):
    """GITHUB_APP_PRIVATE_KEY is neither a PEM private key nor the path of a file holding one."""


def read_private_key(value: str) -> str:
    """The App's private key as PEM text, from the PEM itself (a .env may hold it with `\\n` for newlines) or from
    the path of a .pem file; checked to be an RSA private key, since GitHub signs Apps' JWTs with RS256."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = value.strip()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadAppKey(f"it is not PEM text, and {str(path)!r} cannot be read as a file "
                            f"({type(exc).__name__})") from None
    text = text.replace("\\n", "\n").strip()
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise BadAppKey(f"it is not a readable, unencrypted PEM private key ({exc})") from None
    if not isinstance(key, RSAPrivateKey):
        raise BadAppKey("it is not an RSA key (GitHub Apps sign with RS256: download the key GitHub generated)")
    return text + "\n"


@dataclass(frozen=True)
class GitHubApp:
    """A GitHub App's credentials: its id and its private key (PEM)."""

    app_id: str
    private_key: str = field(repr=False)


@dataclass
class _Minted:
    token: str
    refresh_at: float  # by the auth's clock


class GitHubAuth:
    """Credentials for GitHub: `api(repo)` is a client allowed to act on `repo`; `token(repo)` the token a clone or
    push of `repo` carries; `login()` is who Shepherd is there (its comments are never read as commands)."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str = "https://api.github.com",
                 token: str | None = None, app: GitHubApp | None = None,
                 refresh_before_s: float = REFRESH_BEFORE_S, clock: Callable[[], float] = time.time) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.app = app
        self._token = None if app is not None else token or None  # an App, when set, is who Shepherd is
        self._login: str | None = None
        self.refresh_before_s = refresh_before_s
        self.clock = clock
        self._installations: dict[str, int] = {}  # repo (lower case) -> installation id
        self._minted: dict[int, _Minted] = {}
        self._locks: dict[object, asyncio.Lock] = {}

    @property
    def configured(self) -> bool:
        """Whether Shepherd can act on GitHub at all (reply, react, open pull requests)."""
        return self._token is not None or self.app is not None

    @property
    def short_lived(self) -> bool:
        """Whether the tokens `token` gives expire soon by themselves (an App's installation tokens: an hour), so
        one may be handed to a clone step outside Shepherd (a Kubernetes init container)."""
        return self.app is not None

    @property
    def mode(self) -> str:
        """`app`, `token` or `off`: how Shepherd authenticates (shown by `shepherd doctor`)."""
        return "app" if self.app is not None else "token" if self._token is not None else "off"

    def secrets(self) -> list[str]:
        """Every credential this process holds now: blanked in any text that leaves it."""
        return [s for s in (self._token, *(m.token for m in self._minted.values())) if s]

    def _lock(self, key: object) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _as_app(self, doing: str, path: str, url_vars: dict[str, str]) -> dict[str, object]:
        try:
            assert self.app is not None
            bearer = get_jwt(app_id=self.app.app_id, private_key=self.app.private_key)  # a new one: they last minutes
            found = await call(doing, GitHubAPI(self.session, REQUESTER, base_url=self.base_url).getitem(
                path, url_vars, jwt=bearer), secrets=self.secrets())
        except GitHubCallFailed as exc:
            if exc.host_status == 401:  # the JWT was refused: a wrong id or key, which only the admin can fix
                raise GitHubCallFailed(f"{exc.message} (check {APP_SETTINGS})", 401) from None
            raise
        return dict(found)

    async def installation(self, repo: str) -> int | None:
        """The id of the App's installation on `repo` (asked once, then remembered), or None when the App is not
        installed there (nothing to act with; a public repository still clones without a token)."""
        key = repo.lower()
        if key in self._installations:
            return self._installations[key]
        async with self._lock(("repo", key)):
            if key not in self._installations:
                try:
                    found = await self._as_app(f"finding the GitHub App's installation on {repo}",
                                               "/repos/{+repo}/installation", {"repo": repo})
                except GitHubCallFailed as exc:
                    if exc.host_status == 404:
                        return None  # not installed (yet): asked again next time
                    raise
                self._installations[key] = int(str(found["id"]))
        return self._installations[key]

    def remember(self, repo: str, installation_id: int) -> None:
        """A webhook named the installation `repo` is in: no need to ask GitHub."""
        self._installations[repo.lower()] = installation_id

    async def _installation_token(self, installation_id: int) -> str:
        """A token of the installation, minted when none is kept or the kept one is about to expire; callers that
        ask together wait for one mint."""
        kept = self._minted.get(installation_id)
        if kept is not None and self.clock() < kept.refresh_at:
            return kept.token
        async with self._lock(("installation", installation_id)):
            kept = self._minted.get(installation_id)
            if kept is not None and self.clock() < kept.refresh_at:
                return kept.token
            assert self.app is not None
            doing = f"minting a token of the GitHub App's installation {installation_id}"
            try:
                data = await call(doing, get_installation_access_token(
                    GitHubAPI(self.session, REQUESTER, base_url=self.base_url),
                    installation_id=str(installation_id), app_id=self.app.app_id,
                    private_key=self.app.private_key), secrets=self.secrets())
            except GitHubCallFailed as exc:
                if exc.host_status == 401:
                    raise GitHubCallFailed(f"{exc.message} (check {APP_SETTINGS})", 401) from None
                raise
            now = self.clock()
            try:
                expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00")).timestamp()
            except (KeyError, ValueError):
                expires = now + 3600.0  # GitHub's documented lifetime
            # never keep one past half its life when GitHub hands out short-lived tokens
            minted = _Minted(str(data["token"]), expires - min(self.refresh_before_s, max(0.0, expires - now) / 2))
            self._minted[installation_id] = minted
            return minted.token

    def forget(self, token: str) -> None:
        """GitHub refused `token` (401): the next call mints a new one rather than trying it again."""
        for installation_id, minted in list(self._minted.items()):
            if minted.token == token:
                del self._minted[installation_id]

    async def token(self, repo: str | None = None, *, installation_id: int | None = None) -> str | None:
        """The token that acts on `repo` (for a clone or a push), or None when none is configured or, for an App,
        when it is not installed on `repo`."""
        if self.app is None:
            return self._token
        if installation_id is None:
            installation_id = await self.installation(repo) if repo else None
        if installation_id is None:
            return None
        return await self._installation_token(installation_id)

    async def api(self, repo: str | None = None, *, installation_id: int | None = None) -> GitHubAPI:
        """A client whose calls act on `repo` (or, for an App, on the installation named). A GitHubCallFailed (404)
        when the App is not installed on `repo`, or neither is named."""
        token = await self.token(repo, installation_id=installation_id)
        if self.app is not None and token is None:
            raise GitHubCallFailed(f"the GitHub App is not installed on {repo}: install it there (the App's page → "
                                   "Install App) so that Shepherd can act on it" if repo else
                                   "a GitHub App acts on a repository: name the repository or the installation", 404)
        return GitHubAPI(self.session, REQUESTER, oauth_token=token, base_url=self.base_url)

    async def login(self) -> str | None:
        """Shepherd's own login on GitHub (`GET /user` for a token, `<app slug>[bot]` for an App), asked once; None
        when it cannot be known."""
        if self._login is None and self.app is not None:
            app = await self._as_app("reading the GitHub App", "/app", {})
            self._login = f"{app['slug']}[bot]" if app.get("slug") else None
        elif self._login is None and self._token is not None:
            user = await (await self.api()).getitem("/user")
            self._login = str(user.get("login") or "") or None
        return self._login
