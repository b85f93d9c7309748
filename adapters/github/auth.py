"""How Shepherd speaks to GitHub as itself: the credentials of every API call and clone, and its own login.

One object per process (bot/background.py builds it from settings) hands out gidgethub clients. With
`SHEPHERD_GITHUB_TOKEN` every repository gets the same token. (A GitHub App's installation tokens, minted per
installation and cached until shortly before they expire, come with the GitHub issue.) The token never leaves
this module but inside the client it builds, and never reaches an agent.
"""

from __future__ import annotations

import aiohttp
from gidgethub.aiohttp import GitHubAPI

REQUESTER = "shepherd"


class GitHubAuth:
    """Credentials for GitHub: `api(repo)` is a client allowed to act on `repo`; `login()` is who Shepherd is there
    (its comments are never read as commands)."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str = "https://api.github.com",
                 token: str | None = None) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._token = token or None
        self._login: str | None = None

    @property
    def configured(self) -> bool:
        """Whether Shepherd can act on GitHub at all (reply, react, open pull requests)."""
        return self._token is not None

    async def token(self, repo: str | None = None, *, installation_id: int | None = None) -> str | None:
        """The token that acts on `repo` (for a clone or a push), or None when none is configured."""
        return self._token

    async def api(self, repo: str | None = None, *, installation_id: int | None = None) -> GitHubAPI:
        """A client whose calls act on `repo` (or, for an App, on the installation named)."""
        return GitHubAPI(self.session, REQUESTER, oauth_token=await self.token(repo, installation_id=installation_id),
                         base_url=self.base_url)

    async def login(self) -> str | None:
        """Shepherd's own login on GitHub (`GET /user` for a token), asked once; None when it cannot be known."""
        if self._login is None and self._token is not None:
            user = await (await self.api()).getitem("/user")
            self._login = str(user.get("login") or "") or None
        return self._login
