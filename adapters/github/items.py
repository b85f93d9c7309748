"""A GitHub webhook payload -> the item Shepherd acts on, read once, without I/O.

Each reader here takes one (event, action)'s payload and returns its item, or None when the payload is not one
Shepherd acts on (a check that passed, a draft pull request). Which reader serves which event is the routing
table's (adapters/github/routes.py). Payloads are read defensively: a field that is missing or of the wrong type
reads as empty, so a payload of an odd shape is left alone, never a 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.people.trust import Author

TEXT_MAX = 65_536  # GitHub's own limit on a comment or an issue body
FAILED = frozenset({"failure", "timed_out", "startup_failure"})  # conclusions that call for an incident agent


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, limit: int = TEXT_MAX) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def author(user: Any, association: Any = "") -> Author:
    user = _dict(user)
    return Author(login=_str(user.get("login"), 100), association=_str(association, 40),
                  bot=_str(user.get("type"), 20) == "Bot")


@dataclass(frozen=True)
class Issue:
    """An issue or a pull request: the thread a conversation about it lives in (`owner/name#12`)."""

    repo: str
    number: int
    title: str
    body: str
    pull: bool
    default_branch: str = "main"  # the repository's
    head_ref: str = ""  # a pull request's branch
    head_repo: str = ""  # the repository that branch lives in ("" when the fork is gone)
    head_sha: str = ""
    base_ref: str = ""  # the branch it would merge into
    draft: bool = False

    @property
    def address(self) -> str:
        return f"{self.repo}#{self.number}"

    @property
    def fork(self) -> bool:
        """A pull request from another repository (a fork), whose branch Shepherd cannot push to."""
        return self.pull and self.head_repo.lower() != self.repo.lower()


@dataclass(frozen=True)
class Comment:
    """Something a person wrote where a command may be: an issue or PR comment, a review's body, a review
    comment on a line of a file."""

    key: str
    issue: Issue
    author: Author
    body: str
    reactions: str = ""  # the API path of the comment's reactions ("" when it has none: a review's body)
    path: str = ""  # a review comment's file
    line: int | None = None  # and line
    installation: int | None = None


@dataclass(frozen=True)
class Labelled:
    """A label added to an issue."""

    key: str
    issue: Issue
    label: str
    sender: Author
    installation: int | None = None


@dataclass(frozen=True)
class PullOpened:
    """A pull request opened, reopened or marked ready for review (never a draft)."""

    key: str
    issue: Issue
    author: Author
    installation: int | None = None


@dataclass(frozen=True)
class CheckFailed:
    """A check run, check suite or workflow run that concluded in failure on a pull request's branch."""

    key: str
    repo: str
    kind: str  # check_run, check_suite, workflow_run
    name: str
    conclusion: str
    summary: str
    head_sha: str
    head_branch: str
    pulls: tuple[int, ...]
    url: str = ""
    default_branch: str = "main"
    installation: int | None = None


Item = Comment | Labelled | PullOpened | CheckFailed


def repo_of(payload: dict[str, Any]) -> str:
    return _str(_dict(payload.get("repository")).get("full_name"), 140)


def installation_of(payload: dict[str, Any]) -> int | None:
    return _int(_dict(payload.get("installation")).get("id"))


def _default_branch(payload: dict[str, Any]) -> str:
    return _str(_dict(payload.get("repository")).get("default_branch"), 200) or "main"


def _issue(payload: dict[str, Any], data: Any, *, pull: bool | None = None) -> Issue | None:
    data = _dict(data)
    repo, number = repo_of(payload), _int(data.get("number"))
    if not repo or number is None:
        return None
    head, base = _dict(data.get("head")), _dict(data.get("base"))
    is_pull = pull if pull is not None else bool(data.get("pull_request"))
    return Issue(repo=repo, number=number, title=_str(data.get("title"), 1000), body=_str(data.get("body")),
                 pull=is_pull, default_branch=_default_branch(payload), head_ref=_str(head.get("ref"), 200),
                 head_repo=_str(_dict(head.get("repo")).get("full_name"), 140), head_sha=_str(head.get("sha"), 64),
                 base_ref=_str(base.get("ref"), 200), draft=data.get("draft") is True)


# --- the readers (routes.py says which serves which event) ------------------------------------------------


def issue_comment(key: str, payload: dict[str, Any]) -> Item | None:
    comment = _dict(payload.get("comment"))
    issue, comment_id = _issue(payload, payload.get("issue")), _int(comment.get("id"))
    if issue is None or comment_id is None:
        return None
    return Comment(key, issue, author(comment.get("user"), comment.get("author_association")),
                   _str(comment.get("body")), reactions=f"/repos/{issue.repo}/issues/comments/{comment_id}/reactions",
                   installation=installation_of(payload))


def review(key: str, payload: dict[str, Any]) -> Item | None:
    data = _dict(payload.get("review"))
    issue = _issue(payload, payload.get("pull_request"), pull=True)
    if issue is None:
        return None
    return Comment(key, issue, author(data.get("user"), data.get("author_association")), _str(data.get("body")),
                   installation=installation_of(payload))


def review_comment(key: str, payload: dict[str, Any]) -> Item | None:
    comment = _dict(payload.get("comment"))
    issue, comment_id = _issue(payload, payload.get("pull_request"), pull=True), _int(comment.get("id"))
    if issue is None or comment_id is None:
        return None
    return Comment(key, issue, author(comment.get("user"), comment.get("author_association")),
                   _str(comment.get("body")), reactions=f"/repos/{issue.repo}/pulls/comments/{comment_id}/reactions",
                   path=_str(comment.get("path"), 1000), line=_int(comment.get("line") or comment.get("original_line")),
                   installation=installation_of(payload))


def labelled(key: str, payload: dict[str, Any]) -> Item | None:
    issue = _issue(payload, payload.get("issue"))
    label = _str(_dict(payload.get("label")).get("name"), 100)
    if issue is None or not label:
        return None
    return Labelled(key, issue, label, author(payload.get("sender")), installation_of(payload))


def pull_opened(key: str, payload: dict[str, Any]) -> Item | None:
    data = _dict(payload.get("pull_request"))
    issue = _issue(payload, data, pull=True)
    if issue is None or issue.draft:
        return None
    return PullOpened(key, issue, author(data.get("user"), data.get("author_association")), installation_of(payload))


def _failed(key: str, payload: dict[str, Any], kind: str, data: dict[str, Any], *, name: str, summary: str,
            head_branch: str) -> Item | None:
    conclusion = _str(data.get("conclusion"), 40)
    repo = repo_of(payload)
    if conclusion not in FAILED or not repo:
        return None
    pulls = tuple(n for n in (_int(_dict(p).get("number")) for p in _list(data.get("pull_requests"))
                              if isinstance(p, dict)) if n is not None)
    return CheckFailed(key, repo, kind, name, conclusion, summary, _str(data.get("head_sha"), 64), head_branch,
                       pulls, url=_str(data.get("html_url") or data.get("details_url"), 500),
                       default_branch=_default_branch(payload), installation=installation_of(payload))


def check_run(key: str, payload: dict[str, Any]) -> Item | None:
    data = _dict(payload.get("check_run"))
    output = _dict(data.get("output"))
    summary = "\n".join(s for s in (_str(output.get("title"), 500), _str(output.get("summary"), 4000)) if s)
    return _failed(key, payload, "check_run", data, name=_str(data.get("name"), 200), summary=summary,
                   head_branch=_str(_dict(data.get("check_suite")).get("head_branch"), 200))


def check_suite(key: str, payload: dict[str, Any]) -> Item | None:
    data = _dict(payload.get("check_suite"))
    app = _str(_dict(data.get("app")).get("name"), 200)
    return _failed(key, payload, "check_suite", data, name=f"check suite of {app}" if app else "check suite",
                   summary="", head_branch=_str(data.get("head_branch"), 200))


def workflow_run(key: str, payload: dict[str, Any]) -> Item | None:
    data = _dict(payload.get("workflow_run"))
    return _failed(key, payload, "workflow_run", data, name=_str(data.get("name"), 200),
                   summary=_str(data.get("display_title"), 500), head_branch=_str(data.get("head_branch"), 200))
