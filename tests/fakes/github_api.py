"""A loopback fake of the GitHub REST API: the endpoints Shepherd's gated actions call, with GitHub's
shapes, statuses and error bodies, so that the real gidgethub client (adapters/github/forge.py) runs.

    GET  /repos/{owner}/{repo}/pulls?head=owner:branch&state=open
    POST /repos/{owner}/{repo}/pulls                       {title, head, base, body}
    GET  /repos/{owner}/{repo}/pulls/{number}
    PUT  /repos/{owner}/{repo}/pulls/{number}/merge        {merge_method, sha?}
    POST /repos/{owner}/{repo}/issues/{number}/comments    {body}

With `git_root`, a pull request's head must be a branch of the bare repository
`<git_root>/<owner>/<repo>.git` (422 otherwise, as GitHub answers), and its head sha is read from there.
Tests read `requests` (everything asked, in order) and `pulls`, and inject failures with `fail_next`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DOCS = "https://docs.github.com/rest"
BODY = web.RequestKey("body", object)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Failure:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"message": message, "documentation_url": DOCS, **extra}, status=status,
                             headers=headers)


class FakeGitHub:
    def __init__(self, token: str, *, git_root: Path | None = None) -> None:
        self.token = token
        self.git_root = git_root
        self.requests: list[Seen] = []
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self._failures: list[Failure] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- control ------------------------------------------------------------------------------

    def fail_next(
        self, status: int = 502, message: str = "Server Error", headers: dict[str, str] | None = None
    ) -> None:
        """The next request answers `status` (e.g. 502, or 403 with x-ratelimit-remaining: 0)."""
        self._failures.append(Failure(status, message, headers or {}))

    def rate_limit_next(self) -> None:
        self.fail_next(403, "API rate limit exceeded", {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
                                                        "x-ratelimit-reset": "9999999999"})

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/repos/{owner}/{repo}/pulls", self._list_pulls)
        app.router.add_post("/repos/{owner}/{repo}/pulls", self._create_pull)
        app.router.add_get("/repos/{owner}/{repo}/pulls/{number}", self._get_pull)
        app.router.add_put("/repos/{owner}/{repo}/pulls/{number}/merge", self._merge)
        app.router.add_post("/repos/{owner}/{repo}/issues/{number}/comments", self._comment)
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
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _error(400, "Problems parsing JSON")
        self.requests.append(Seen(request.method, request.path, dict(request.query), body, dict(request.headers)))
        if not request.headers.get("User-Agent"):
            return _error(403, "Request forbidden by administrative rules. Please make sure your request has a "
                               "User-Agent header")
        auth = request.headers.get("Authorization", "")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer") or secret != self.token:
            return _error(401, "Bad credentials")
        if self._failures:
            failure = self._failures.pop(0)
            return _error(failure.status, failure.message, failure.headers)
        request[BODY] = body
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
        body: dict[str, Any] = request[BODY] or {}  # type: ignore[assignment]
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
        body: dict[str, Any] = request[BODY] or {}  # type: ignore[assignment]
        if body.get("sha") and body["sha"] != pull["head"]["sha"]:
            return _error(409, "Head branch was modified. Review and try the merge again.")
        pull.update(merged=True, state="closed",
                    merge_commit_sha=hashlib.sha1(f"merge:{pull['head']['sha']}".encode()).hexdigest())
        return web.json_response({"sha": pull["merge_commit_sha"], "merged": True,
                                  "message": "Pull Request successfully merged"})

    async def _comment(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = request[BODY] or {}  # type: ignore[assignment]
        if not body.get("body"):
            return _error(422, "Validation Failed", errors=[{"resource": "IssueComment", "field": "body",
                                                             "code": "missing_field"}])
        repo, number = self._repo(request), int(request.match_info["number"])
        comment = {"id": len(self.comments) + 1, "body": body["body"],
                   "html_url": f"https://github.com/{repo}/pull/{number}#issuecomment-{len(self.comments) + 1}"}
        self.comments.append(comment)
        return web.json_response(comment, status=201)
