"""core.people.trust.Permissions on GitHub: GET /repos/{owner}/{repo}/collaborators/{login}/permission."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import gidgethub

from adapters.github.auth import GitHubAuth

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class GitHubPermissions:
    def __init__(self, auth: GitHubAuth) -> None:
        self.auth = auth

    async def permission(self, repo: str, login: str) -> str | None:
        """admin, maintain, write, triage, read or none; None when GitHub cannot say (then the author is not
        trusted by this rule)."""
        try:
            api = await self.auth.api(repo)
            answer = await asyncio.wait_for(api.getitem(
                "/repos/{+repo}/collaborators/{login}/permission", {"repo": repo, "login": login}), TIMEOUT_S)
        except gidgethub.HTTPException as exc:
            if int(exc.status_code) == 404:  # not a collaborator (or not a user at all)
                return "none"
            log.warning("GitHub: the permission of %s on %s: GitHub answered %s", login, repo, exc.status_code)
            return None
        except (gidgethub.GitHubException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("GitHub: the permission of %s on %s could not be read (%s)", login, repo,
                        type(exc).__name__)
            return None
        # role_name tells maintain and triage apart; permission folds them into write and read
        role = answer.get("role_name") if isinstance(answer, dict) else None
        level = answer.get("permission") if isinstance(answer, dict) else None
        return str(role or level or "none")
