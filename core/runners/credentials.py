"""The credentials of Shepherd's own clones and pushes on the code host, for one git process at a time.

A repository on the configured code host (SHEPHERD_GIT_BASE_URL, https) is fetched and pushed with the token
that acts on it: the configured token, or a GitHub App's installation token for that repository (the
`GitCredentials` port; adapters/github/auth.py implements it). The token goes into that one git process's
environment as an `http.extraHeader` (core.runners.repos.git_env): never onto a command line, never into the
workspace's config where the agent could read it, never to another host.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit


class GitCredentials(Protocol):
    # whether its tokens expire soon by themselves: only such a token may leave Shepherd for a remote clone step
    @property
    def short_lived(self) -> bool: ...

    async def token(self, repo: str) -> str | None:
        """The token that acts on `repo` (owner/name), or None when there is none for it. A ShepherdError when it
        cannot be had now (the code host is down)."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """One token for every repository (SHEPHERD_GITHUB_TOKEN), or none."""

    value: str | None = field(default=None, repr=False)
    short_lived = False  # a personal token lives until revoked: it never leaves Shepherd

    async def token(self, repo: str) -> str | None:
        return self.value or None


def same_origin(url: str, base: str) -> bool:
    """Is `url` an https URL on the same host and port as `base`?"""
    a, b = urlsplit(url), urlsplit(base)
    return a.scheme == "https" and b.scheme == "https" and (a.hostname, a.port) == (b.hostname, b.port) \
        and bool(a.hostname)


def code_host_repo(url: str, base: str) -> str | None:
    """The `owner/name` of an https URL on the code host `base` (below its path), or None for any other URL."""
    if not same_origin(url, base):
        return None
    prefix = urlsplit(base).path.rstrip("/") + "/"
    path = urlsplit(url).path
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix):].removesuffix("/").removesuffix(".git").split("/")
    return "/".join(parts) if len(parts) == 2 and all(parts) else None


async def git_auth(credentials: GitCredentials | None, url: str, code_host: str) -> dict[str, str]:
    """Git settings that authenticate the https clone or push of `url` to the code host, for that one git process;
    nothing for any other URL (an arbitrary task repository never gets a token)."""
    repo = code_host_repo(url, code_host) if credentials is not None else None
    if credentials is None or repo is None:
        return {}
    token = await credentials.token(repo)
    if not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"http.extraHeader": f"Authorization: Basic {basic}"}
