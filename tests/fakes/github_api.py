"""A loopback fake of the GitHub REST API: the endpoints Shepherd's gated actions call, with GitHub's
shapes, statuses and error bodies, so that the real gidgethub client (adapters/github/forge.py) runs.

    GET  /repos/{owner}/{repo}/pulls?head=owner:branch&state=open
    POST /repos/{owner}/{repo}/pulls                       {title, head, base, body}
    GET  /repos/{owner}/{repo}/pulls/{number}
    PUT  /repos/{owner}/{repo}/pulls/{number}/merge        {merge_method, sha?}
    POST /repos/{owner}/{repo}/issues/{number}/comments    {body}
    GET  /user                                             (who the token is: `login`)
    GET  /repos/{owner}/{repo}/collaborators/{login}/permission   (from `permissions`; 404 for others)
    POST /repos/{owner}/{repo}/issues/comments/{id}/reactions     {content} (kept in `reactions`)
    POST /repos/{owner}/{repo}/pulls/comments/{id}/reactions      {content}

and, for the GitHub channel's outbound half and GitHub App credentials (the block "comments and GitHub Apps"):

    GET   /repos/{owner}/{repo}/issues/{number}/comments   (paged: per_page, page, Link: rel="next")
    PATCH /repos/{owner}/{repo}/issues/comments/{id}       {body}
    GET   /app                                             (the App's JWT)
    GET   /repos/{owner}/{repo}/installation               (the App's JWT)
    POST  /app/installations/{id}/access_tokens            (the App's JWT; a token that expires)

With `git_root`, a pull request's head must be a branch of the bare repository
`<git_root>/<owner>/<repo>.git` (422 otherwise, as GitHub answers), and its head sha is read from there.
Tests read `requests` (everything asked, in order), `pulls` and `comments`, and queue what the next
requests meet instead of the real answer: `fail_next` (an error), `rate_limit_next` and
`secondary_rate_limit_next` (GitHub's two rate limits), `answer_next` (any status and body) and `stall_next`
(a slow answer). Only requests that pass GitHub's own checks (User-Agent, then credentials) take one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

DOCS = "https://docs.github.com/rest"
BODY: web.RequestKey[dict[str, Any]] = web.RequestKey("body", dict)
WHO: web.RequestKey[str] = web.RequestKey("who", str)  # the login the request's credentials act as


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Canned:
    """What a test queued for the next request (of `method`, when given): `status` None passes it on."""

    status: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    delay: float = 0.0


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"message": message, "documentation_url": DOCS, **extra}, status=status,
                             headers=headers)


class FakeGitHub:
    """GitHub's REST API for one token, in memory; repositories exist as soon as they are named."""

    def __init__(self, token: str, *, git_root: Path | None = None) -> None:
        self.token = token
        self.token_login = "shepherd-bot"  # the user the token belongs to (who its comments are by)
        self.app: FakeApp | None = None
        self.installation_tokens: dict[str, tuple[int, float]] = {}  # token -> (installation id, expires at)
        self.clock: Callable[[], float] = time.time
        self.git_root = git_root
        self.requests: list[Seen] = []
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self._canned: list[Canned] = []
        # --- GitHub in (issue 14, helper gh-in): who the token is, collaborator permissions, reactions
        self.permissions: dict[tuple[str, str], str] = {}  # (owner/repo, login) -> admin|write|read|…
        self.reactions: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- control ------------------------------------------------------------------------------

    def answer_next(self, status: int, body: Any, headers: dict[str, str] | None = None, *,
                    method: str | None = None, delay: float = 0.0) -> None:
        """The next request (of `method`, when given) gets this answer instead of the real one."""
        self._canned.append(Canned(status, body, headers or {}, method, delay))

    def fail_next(self, status: int = 502, message: str = "Server Error", headers: dict[str, str] | None = None,
                  *, method: str | None = None, **extra: Any) -> None:
        """The next request answers `status` with GitHub's error body ({"message", "documentation_url", ...})."""
        self.answer_next(status, {"message": message, "documentation_url": DOCS, **extra}, headers, method=method)

    def rate_limit_next(self) -> None:
        """The primary limit: 403 with x-ratelimit-remaining: 0 (gidgethub raises RateLimitExceeded)."""
        self.fail_next(403, "API rate limit exceeded", {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
                                                        "x-ratelimit-reset": "9999999999"})

    def secondary_rate_limit_next(self, status: int = 403, retry_after: int = 60, *, method: str | None = None) -> None:
        """A secondary limit: 403 or 429 with Retry-After while the hourly quota still has room."""
        self.fail_next(status, "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                               "try again.", {"retry-after": str(retry_after), "x-ratelimit-limit": "5000",
                                              "x-ratelimit-remaining": "4990", "x-ratelimit-reset": "9999999999"},
                       method=method)

    def stall_next(self, seconds: float, *, method: str | None = None) -> None:
        """The next request is answered for real, but only after `seconds` (to run a client into its timeout)."""
        self._canned.append(Canned(None, method=method, delay=seconds))

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/repos/{owner}/{repo}/pulls", self._list_pulls)
        app.router.add_post("/repos/{owner}/{repo}/pulls", self._create_pull)
        app.router.add_get("/repos/{owner}/{repo}/pulls/{number}", self._get_pull)
        app.router.add_put("/repos/{owner}/{repo}/pulls/{number}/merge", self._merge)
        app.router.add_post("/repos/{owner}/{repo}/issues/{number}/comments", self._comment)
        # --- GitHub in (issue 14, helper gh-in) ---
        app.router.add_get("/user", self._user)
        app.router.add_get("/repos/{owner}/{repo}/collaborators/{login}/permission", self._permission)
        app.router.add_post("/repos/{owner}/{repo}/issues/comments/{id}/reactions", self._react)
        app.router.add_post("/repos/{owner}/{repo}/pulls/comments/{id}/reactions", self._react)
        self._add_comment_and_app_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeGitHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- what GitHub checks first ---------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _error(400, "Problems parsing JSON")
        self.requests.append(Seen(request.method, request.path, dict(request.query), body, dict(request.headers)))
        if not request.headers.get("User-Agent"):
            return _error(403, "Request forbidden by administrative rules. Please make sure your request has a "
                               "User-Agent header")
        refused = self._refused(request)
        if refused is not None:
            return refused
        canned = next((c for c in self._canned if c.method in (None, request.method)), None)
        if canned is not None:
            self._canned.remove(canned)
            await asyncio.sleep(canned.delay)
            if canned.status is not None:
                return web.json_response(canned.body, status=canned.status, headers=canned.headers)
        request[BODY] = body if isinstance(body, dict) else {}
        return await handler(request)

    # --- endpoints ----------------------------------------------------------------------------

    def _repo(self, request: web.Request) -> str:
        return f"{request.match_info['owner']}/{request.match_info['repo']}"

    def _head_sha(self, repo: str, branch: str) -> str | None:
        if self.git_root is None:
            return hashlib.sha1(f"{repo}:{branch}".encode()).hexdigest()
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                             cwd=self.git_root / f"{repo}.git", capture_output=True, text=True)
        return out.stdout.strip() or None

    async def _list_pulls(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        head = request.query.get("head", "")
        state = request.query.get("state", "open")
        found = [p for (r, _), p in sorted(self.pulls.items()) if r == repo
                 and (state == "all" or p["state"] == state)
                 and (not head or p["head"]["label"] == head)]
        return web.json_response(found)

    async def _create_pull(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        body = request[BODY]
        missing = [f for f in ("title", "head", "base") if not body.get(f)]
        if missing:
            return _error(422, "Validation Failed",
                          errors=[{"resource": "PullRequest", "field": f, "code": "missing_field"} for f in missing])
        owner = request.match_info["owner"]
        label = f"{owner}:{body['head']}"
        if any(r == repo and p["state"] == "open" and p["head"]["label"] == label for (r, _), p in self.pulls.items()):
            return _error(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "code": "custom",
                "message": f"A pull request already exists for {label}."}])
        sha = self._head_sha(repo, body["head"])
        if sha is None:
            return _error(422, "Validation Failed",
                          errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        number = 1 + max((n for (r, n) in self.pulls if r == repo), default=0)
        pull = {
            "number": number, "state": "open", "title": body["title"], "body": body.get("body", ""),
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "url": f"{self.base_url}/repos/{repo}/pulls/{number}",
            "head": {"ref": body["head"], "sha": sha, "label": label},
            "base": {"ref": body["base"], "label": f"{owner}:{body['base']}"},
            "user": {"login": "shepherd-bot"}, "merged": False, "merge_commit_sha": None,
        }
        self.pulls[(repo, number)] = pull
        return web.json_response(pull, status=201)

    async def _get_pull(self, request: web.Request) -> web.Response:
        pull = self.pulls.get((self._repo(request), int(request.match_info["number"])))
        return web.json_response(pull) if pull else _error(404, "Not Found")

    async def _merge(self, request: web.Request) -> web.Response:
        pull = self.pulls.get((self._repo(request), int(request.match_info["number"])))
        if pull is None:
            return _error(404, "Not Found")
        if pull["merged"]:
            return _error(405, "Pull Request is not mergeable")
        body = request[BODY]
        if body.get("sha") and body["sha"] != pull["head"]["sha"]:
            return _error(409, "Head branch was modified. Review and try the merge again.")
        pull.update(merged=True, state="closed",
                    merge_commit_sha=hashlib.sha1(f"merge:{pull['head']['sha']}".encode()).hexdigest())
        return web.json_response({"sha": pull["merge_commit_sha"], "merged": True,
                                  "message": "Pull Request successfully merged"})

    async def _comment(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not body.get("body"):
            return _error(422, "Validation Failed", errors=[{"resource": "IssueComment", "field": "body",
                                                             "code": "missing_field"}])
        repo, number = self._repo(request), int(request.match_info["number"])
        comment = {"id": len(self.comments) + 1, "body": body["body"],
                   "html_url": f"https://github.com/{repo}/pull/{number}#issuecomment-{len(self.comments) + 1}",
                   "user": {"login": request[WHO], "type": "Bot" if request[WHO].endswith("[bot]") else "User"},
                   "issue": f"{repo}#{number}"}
        self.comments.append(comment)
        return web.json_response(comment, status=201)

    # --- GitHub in (issue 14, helper gh-in): GET /user, collaborator permission, reactions ---------------

    async def _user(self, request: web.Request) -> web.Response:
        return web.json_response({"login": request.get(WHO, self.token_login), "id": 1, "type": "User"})

    async def _permission(self, request: web.Request) -> web.Response:
        login = request.match_info["login"]
        level = self.permissions.get((self._repo(request), login))
        if level is None:  # GitHub: 404 for someone who is not a collaborator
            return _error(404, f"{login} is not a user")
        role = {"maintain": "maintain", "triage": "triage"}.get(level, level)
        folded = {"maintain": "write", "triage": "read"}.get(level, level)
        return web.json_response({"permission": folded, "role_name": role, "user": {"login": login}})

    async def _react(self, request: web.Request) -> web.Response:
        content = request[BODY].get("content")
        if content not in ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"):
            return _error(422, "Validation Failed", errors=[{"resource": "Reaction", "field": "content",
                                                             "code": "invalid"}])
        reaction = {"id": len(self.reactions) + 1, "content": content, "path": request.path}
        self.reactions.append(reaction)
        return web.json_response(reaction, status=201)
    # === comments and GitHub Apps (the GitHub channel's outbound half) ==========================================
    #
    # Credentials: the token (`token`, whose user is `token_login`), an App's JWT (RS256, checked with the App's
    # public key: its `iss`, `iat` and `exp`, at most 10 minutes long) for the App's own endpoints, and installation
    # tokens the App minted, which act only on their installation's repositories until they expire (`clock`).
    # Tests read `comments` (with `user` and `issue`) and `installation_tokens`; `install_app` sets the App up.

    def install_app(self, app_id: int, public_key_pem: str, *, slug: str = "shepherd-app",
                    installations: dict[int, list[str]] | None = None, token_lifetime_s: float = 3600.0) -> FakeApp:
        """Register a GitHub App (its public key checks its JWTs) installed on `installations` (id -> repos)."""
        self.app = FakeApp(app_id, public_key_pem, slug, dict(installations or {}), token_lifetime_s)
        return self.app

    def _add_comment_and_app_routes(self, app: web.Application) -> None:
        app.router.add_get("/repos/{owner}/{repo}/issues/{number}/comments", self._list_comments)
        app.router.add_patch("/repos/{owner}/{repo}/issues/comments/{id}", self._edit_comment)
        app.router.add_get("/app", self._get_app)
        app.router.add_get("/repos/{owner}/{repo}/installation", self._get_installation)
        app.router.add_post("/app/installations/{id}/access_tokens", self._mint_token)

    def _refused(self, request: web.Request) -> web.Response | None:
        """GitHub's answer to credentials that do not open this endpoint, or None (and `request[WHO]` set)."""
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        app_only = request.path == "/app" or request.path.startswith("/app/") or request.path.endswith("/installation")
        if app_only:
            if scheme != "bearer" or self.app is None:
                return _error(401, "A JSON web token could not be decoded")
            problem = self.app.check_jwt(secret)
            if problem is not None:
                return _error(401, problem)
            request[WHO] = f"{self.app.slug}[bot]"
            return None
        if scheme not in ("token", "bearer"):
            return _error(401, "Bad credentials")
        if secret == self.token:
            request[WHO] = self.token_login
            return None
        minted = self.installation_tokens.get(secret)
        if minted is None or self.app is None or self.clock() >= minted[1]:
            return _error(401, "Bad credentials")
        repo = "/".join(request.path.split("/")[2:4]) if request.path.startswith("/repos/") else ""
        if repo and repo.lower() not in {r.lower() for r in self.app.installations.get(minted[0], [])}:
            return _error(404, "Not Found")  # GitHub hides what an installation cannot see
        request[WHO] = f"{self.app.slug}[bot]"
        return None

    async def _list_comments(self, request: web.Request) -> web.Response:
        issue = f"{self._repo(request)}#{request.match_info['number']}"
        found = [c for c in self.comments if c.get("issue") == issue]
        per_page = max(1, min(100, int(request.query.get("per_page", "30"))))
        page = max(1, int(request.query.get("page", "1")))
        headers = {}
        if page * per_page < len(found):
            headers["Link"] = f'<{self.base_url}{request.path}?per_page={per_page}&page={page + 1}>; rel="next"'
        return web.json_response(found[(page - 1) * per_page: page * per_page], headers=headers)

    async def _edit_comment(self, request: web.Request) -> web.Response:
        body = request[BODY]
        comment = next((c for c in self.comments if str(c["id"]) == request.match_info["id"]
                        and str(c.get("issue", "")).startswith(f"{self._repo(request)}#")), None)
        if comment is None:
            return _error(404, "Not Found")
        if comment.get("user", {}).get("login") != request[WHO]:
            return _error(403, "Resource not accessible by integration")
        if not body.get("body"):
            return _error(422, "Validation Failed", errors=[{"resource": "IssueComment", "field": "body",
                                                             "code": "missing_field"}])
        comment["body"] = body["body"]
        return web.json_response(comment)

    async def _get_app(self, request: web.Request) -> web.Response:
        assert self.app is not None
        return web.json_response({"id": self.app.app_id, "slug": self.app.slug, "name": self.app.slug,
                                  "owner": {"login": "acme", "type": "Organization"}})

    async def _get_installation(self, request: web.Request) -> web.Response:
        assert self.app is not None
        repo = self._repo(request).lower()
        for installation_id, repos in self.app.installations.items():
            if repo in {r.lower() for r in repos}:
                return web.json_response({"id": installation_id, "app_id": self.app.app_id,
                                          "account": {"login": repo.split("/")[0]}})
        return _error(404, "Not Found")

    async def _mint_token(self, request: web.Request) -> web.Response:
        assert self.app is not None
        installation_id = int(request.match_info["id"])
        if installation_id not in self.app.installations:
            return _error(404, "Not Found")
        token = f"ghs_{secrets.token_hex(16)}"
        expires = self.clock() + self.app.token_lifetime_s
        self.installation_tokens[token] = (installation_id, expires)
        return web.json_response({"token": token, "expires_at": datetime.fromtimestamp(expires, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"), "permissions": {"issues": "write"}, "repository_selection": "selected"},
            status=201)


@dataclass
class FakeApp:
    """A GitHub App as the fake knows it: its id, public key, slug and installations (id -> repositories)."""

    app_id: int
    public_key_pem: str
    slug: str
    installations: dict[int, list[str]]
    token_lifetime_s: float = 3600.0
    jwts_seen: int = 0

    def check_jwt(self, token: str) -> str | None:
        """GitHub's checks of an App's JWT: signed RS256 by the App's key, issued by it, at most 10 minutes long;
        None when it passes, else GitHub's message."""
        try:
            claims = jwt.decode(token, self.public_key_pem, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]}, leeway=30)
        except jwt.ExpiredSignatureError:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which " \
                   "the assertion expires"
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        if str(claims["iss"]) != str(self.app_id):
            return f"Integration not found for iss {claims['iss']}"
        if int(claims["exp"]) - int(claims["iat"]) > 11 * 60:
            return "'Expiration time' claim ('exp') is too far in the future"
        self.jwts_seen += 1
        return None
