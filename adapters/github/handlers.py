"""What each GitHub item does, in core's conversation API (core.channels.conversations).

A comment with a line `/shepherd …` or `@shepherd …` (the handle, a whole word) is a command: a word of the
grammar runs as it would in Slack (`status`, `approve K7P2`, `stop`: in a task's thread, that task); any other
words are a `run` on the repository, with the issue or pull request (and a review comment's file and line) as
context. Only trusted authors count (core.people.trust): an untrusted author's command is held and answered with
the `ok-to-run` hint, and a trusted person's `ok-to-run` runs what was held there. Shepherd's own comments are
never commands. A label, a pull request opened and a failed check are triggers: gated by the project agent's
autonomy level as `task.start` / `review.start`.

Everything said goes through the outbox (the GitHub channel, adapters/github/channel.py); the one direct call is
the "eyes" reaction that acknowledges a command at once (best effort: its failure is logged, never fatal).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from adapters.github.auth import GitHubAuth
from adapters.github.items import CheckFailed, Comment, Issue, Item, Labelled, PullOpened
from adapters.github.receiver import TryLater
from adapters.github.routes import route
from core.channels.conversations import Conversations, Received, Start, Where
from core.commands.grammar import UsageError, split
from core.commands.tasks import started
from core.people.access import Principal
from core.people.trust import OK_TO_RUN, Permissions, trusted, vouched
from core.projects import Project, Projects
from core.tasks.service import TaskView

if TYPE_CHECKING:
    from adapters.github.inbound import GitHubConfig

log = logging.getLogger(__name__)

CHANNEL = SOURCE = "github"
CONTEXT_MAX = 12_000  # of an issue's body in a task's prompt (core caps a prompt at 20,000 characters)
REACTION_TIMEOUT_S = 10.0
PULL_TIMEOUT_S = 10.0
HINT = ("Thanks! Shepherd runs commands only for this repository's maintainers. A maintainer can run this one by "
        "commenting `/{handle} ok-to-run`.")

Replay = Callable[[str], Awaitable[dict[str, Any] | None]]


def command_line(body: str, handle: str) -> str | None:
    """The words after the first `/handle` or `@handle` that starts a line (None: no command in it)."""
    found = re.search(rf"^[ \t]*[/@]{re.escape(handle)}(?![\w-])[ \t]*(.*)$", body, re.IGNORECASE | re.MULTILINE)
    return found.group(1).strip() if found else None


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def prompt_for(instruction: str, issue: Issue, *, path: str = "", line: int | None = None) -> str:
    """A run's prompt: the words, then what they are about."""
    kind = "pull request" if issue.pull else "issue"
    parts = [instruction, "", f"Context: {kind} {issue.address}: {issue.title}"]
    if path:
        parts.append(f"The comment is on {path}" + (f", line {line}" if line else "") + ".")
    if issue.body.strip():
        parts += ["", issue.body.strip()[:CONTEXT_MAX]]
    return "\n".join(parts)


class LoginUnknown(TryLater):
    """Shepherd cannot tell its own comments from others' yet: the delivery fails, and is processed again."""


class Handlers:
    def __init__(self, conversations: Conversations, projects: Projects, config: GitHubConfig, auth: GitHubAuth,
                 permissions: Permissions | None, replay: Replay) -> None:
        self.conversations = conversations
        self.projects = projects
        self.config = config
        self.auth = auth
        self.permissions = permissions
        self.replay = replay  # a held delivery's stored payload, for `ok-to-run`

    async def handle(self, item: Item) -> bool:
        """Process an item; True when it was settled in the commit of its effect, False when there was nothing
        to do (the receiver settles it)."""
        if isinstance(item, Comment):
            return await self._comment(item)
        if isinstance(item, Labelled):
            return await self._labelled(item)
        if isinstance(item, PullOpened):
            return await self._pull_opened(item)
        return await self._check_failed(item)

    # --- comment commands ------------------------------------------------------------------------

    async def _comment(self, item: Comment, *, released_by: Principal | None = None) -> bool:
        said = command_line(item.body, self.config.handle)
        if said is None:
            return False
        me = await self._me()
        if me is None and self.auth.configured:
            # Shepherd comments as this credential, often a repository member: its own comments (answers, output
            # it shows) must never read as a member's commands, so a comment is not read before it knows itself
            raise LoginUnknown("Shepherd's own GitHub login could not be read; the comment is read again later")
        if me and item.author.login.lower() == me.lower():
            return False  # Shepherd's own comment (its answers quote commands)
        where = Where(CHANNEL, item.issue.address)
        received = Received(SOURCE, item.key)
        if released_by is None and not await trusted(item.author, item.issue.repo, self.config.rules,
                                                     self.permissions):
            if item.author.is_bot:
                return False  # a bot is not answered (two bots must not talk forever)
            await self.conversations.hold(self.config.org_id, where, item.author.login,
                                          HINT.format(handle=self.config.handle), item=received)
            return True
        principal = released_by or vouched(await self._person(item.author.login))
        await self._eyes(item)
        try:
            words = split(said) if said else ["help"]
        except UsageError as exc:
            await self.conversations.reply(self.config.org_id, where, f"error: {exc.message}", item=received)
            return True
        if words[0].lower() == OK_TO_RUN:
            # an outsider's own ok-to-run, released by a maintainer's, vouches for nothing
            return await self._ok_to_run(principal, where, received) if released_by is None else False
        project = await self._project(item.issue.repo, item.issue.default_branch)
        if self.conversations.registry.known(words[0]):
            # a command acts with its author's own rights: a maintainer's ok-to-run makes an outsider's words
            # count, and never lends them the maintainer's role (an outsider's `approve CODE`, `stop`, released)
            actor = principal if released_by is None else await self._person(item.author.login)
            task = await self.conversations.task_at(self.config.org_id, where)
            await self.conversations.command(actor, words, where=Where(CHANNEL, where.address, task, shared=True),
                                             answer=where, item=received)
            return True
        issue = await self._pull_of(item.issue)
        start = Start(prompt_for(said, issue, path=item.path, line=item.line), project.id,
                      **self._branch(issue, in_place=True))
        await self.conversations.start(principal, start, where=where, request=item.key, item=received,
                                       say=started)
        return True

    @staticmethod
    def _branch(issue: Issue, *, in_place: bool) -> dict[str, Any]:
        """Where a task works (core.channels.conversations.Start's branch words): on an issue, the project's default
        branch, with a pull request into it at the end. On a pull request from this repository, the PR's head
        branch itself (`in_place`: its end is a push there, the pull request exists), or with `in_place` False a
        new branch off it with a pull request into it. On a fork's pull request (its branch is not Shepherd's to
        push to) a new branch off the PR's base, with a pull request into that base."""
        if not issue.pull:
            return {}
        if issue.head_ref and not issue.fork:
            return {"branch": issue.head_ref, "in_place": in_place}
        return {"branch": issue.base_ref} if issue.base_ref else {}

    async def _pull_of(self, issue: Issue) -> Issue:
        """A pull request's branches: a comment on it (issue_comment) names none, GitHub's pull request does. When
        GitHub cannot say, the issue as it is (the task then works off the default branch, as on an issue)."""
        if not issue.pull or issue.head_ref or not self.auth.configured:
            return issue
        try:
            api = await self.auth.api(issue.repo)
            pull = await asyncio.wait_for(api.getitem("/repos/{+repo}/pulls/{number}",
                                                      {"repo": issue.repo, "number": issue.number}), PULL_TIMEOUT_S)
        except Exception as exc:
            log.warning("GitHub: pull request %s could not be read (%s); its task works off the default branch",
                        issue.address, type(exc).__name__)
            return issue
        head = pull.get("head") if isinstance(pull, dict) else None
        base = pull.get("base") if isinstance(pull, dict) else None
        if not isinstance(head, dict) or not isinstance(base, dict):
            return issue
        head_repo = head.get("repo") if isinstance(head.get("repo"), dict) else {}
        return replace(issue, head_ref=str(head.get("ref") or "")[:200], head_sha=str(head.get("sha") or "")[:64],
                       head_repo=str(head_repo.get("full_name") or "")[:140], base_ref=str(base.get("ref") or "")[:200])

    async def _ok_to_run(self, principal: Principal, where: Where, received: Received) -> bool:
        """A maintainer vouches for what was held in this thread: each held request runs, as theirs."""
        held = await self.conversations.held(self.config.org_id, where)
        ran: list[Received] = []
        acted = 0
        for hold in held:
            stored = await self.replay(hold.key)
            event, payload = (stored or {}).get("event"), (stored or {}).get("payload")
            item = route(event, payload, hold.key) if isinstance(event, str) and isinstance(payload, dict) else None
            if isinstance(item, Comment):
                acted += await self._comment(item, released_by=principal)
            elif isinstance(item, PullOpened):
                acted += await self._review(item, started_by=principal)
            ran.append(hold)
        await self.conversations.released(self.config.org_id, ran, principal.name)
        text = f"ok-to-run: {acted} held request(s) started" if acted else "ok-to-run: nothing is held here"
        await self.conversations.reply(self.config.org_id, where, text, item=received)
        return True

    # --- triggers ----------------------------------------------------------------------------------

    async def _labelled(self, item: Labelled) -> bool:
        if item.label.lower() != self.config.label.lower() or item.issue.pull:
            return False
        if item.sender.is_bot and item.sender.login.lower() not in self.config.trusted:
            return False  # labels need triage rights (a trusted act), but a bot's label starts nothing
        issue = item.issue
        prompt = prompt_for(f"Resolve {'pull request' if issue.pull else 'issue'} {issue.address}.", issue)
        return await self._trigger(item.key, issue, "task.start", prompt, agent_type="task",
                                   who=item.sender.login, request=f"label:{issue.address}", in_place=False)

    async def _pull_opened(self, item: PullOpened) -> bool:
        mode = self.config.review
        if mode == "off":
            return False
        if mode == "trusted":
            ok = not item.issue.fork or item.author.login.lower() in self.config.trusted
            if not ok or not await trusted(item.author, item.issue.repo, self.config.rules, self.permissions):
                if item.author.is_bot:
                    return False
                # a fork's pull request (or an outsider's) is reviewed after a maintainer's ok-to-run
                where = Where(CHANNEL, item.issue.address)
                await self.conversations.hold(
                    self.config.org_id, where, item.author.login,
                    f"A maintainer can ask Shepherd to review this pull request with `/{self.config.handle} "
                    f"{OK_TO_RUN}`.", item=Received(SOURCE, item.key))
                return True
        return await self._review(item)

    async def _review(self, item: PullOpened, *, started_by: Principal | None = None) -> bool:
        issue = item.issue
        prompt = prompt_for(f"Review pull request {issue.address} ({issue.head_ref} into {issue.base_ref}) and "
                            "write your review as one comment: what it changes, what is wrong or risky, what to "
                            "fix.", issue)
        # the pull request's own code, in place (a review changes nothing: its end, if any, is gated as a push)
        return await self._trigger(item.key, issue, "review.start", prompt, agent_type="review",
                                   who=started_by.name if started_by else item.author.login,
                                   request=f"review:{issue.address}:{issue.head_sha or item.key}", in_place=True,
                                   started_by=started_by)

    async def _check_failed(self, item: CheckFailed) -> bool:
        if not self.config.incidents or not item.pulls:
            return False  # only a pull request's branch: a failure on main is not a pull request's to fix
        if item.head_branch.startswith("shepherd/"):
            return False  # Shepherd's own branches (its incident fixes among them): never a loop
        number = item.pulls[0]
        issue = Issue(repo=item.repo, number=number, title=f"{item.name} {item.conclusion}", body="", pull=True,
                      default_branch=item.default_branch, head_ref=item.head_branch, head_repo=item.repo,
                      head_sha=item.head_sha)
        prompt = "\n".join(s for s in (
            f"Investigate the failed {item.kind.replace('_', ' ')} `{item.name}` ({item.conclusion}) on pull "
            f"request {issue.address}, branch {item.head_branch}, commit {item.head_sha[:12]}: find the cause and "
            "fix it.", item.url and f"Details: {item.url}", item.summary and f"Summary:\n{item.summary}") if s)
        # once per head sha: every failed check of one commit is one incident. Its fix goes on a branch of its own
        # (shepherd/…) with a pull request into the PR's branch, never pushed onto that branch in place: a failed
        # check on Shepherd's own branch starts nothing, so a fix that fails again cannot start a loop
        return await self._trigger(item.key, issue, "task.start", prompt, agent_type="incident", who="github",
                                   request=f"incident:{item.repo}:{item.head_sha or item.key}", in_place=False)

    async def _trigger(self, key: str, issue: Issue, action: str, prompt: str, *, agent_type: str, who: str,
                       request: str, in_place: bool, started_by: Principal | None = None) -> bool:
        """Start what a webhook asks for, its start gated as `action` by the project agent's level (core decides:
        started, waiting for `approve CODE` from any channel, or refused), and say so on the issue or pull
        request. Keyed by `request`: a second delivery of the same request (another failed check of one commit)
        finds the same task and edits the same answer. `started_by`: a maintainer's own `ok-to-run`, their own
        approval of the start."""
        project = await self._project(issue.repo, issue.default_branch)
        principal = started_by or Principal.system(self.config.org_id, "github")
        start = Start(prompt, project.id, agent_type=agent_type, gate=None if started_by else action,
                      **self._branch(issue, in_place=in_place))
        view = await self.conversations.start(
            principal, start, where=Where(CHANNEL, issue.address), request=request, item=Received(SOURCE, key),
            say=lambda v: self._said(v, agent_type, who, project.name))
        if view is not None:
            log.info("GitHub: %s asked for a %s task on %s: %s", key, agent_type, issue.address, view.task.status)
        return True

    def _said(self, view: TaskView, agent_type: str, who: str, project: str) -> str:
        """The answer to a trigger: started, waiting for a decision (with the code to type), or refused."""
        conf = view.confirmation
        if conf is None or conf.status == "approved" and view.task.status != "awaiting":
            return started(view)
        if conf.status == "pending":
            return (f"Shepherd will start {_a(agent_type)} agent here (asked by {who}) once an approver agrees: "
                    f"{conf.action} needs approval at project {project}'s level {conf.level}. Approve with "
                    f"`/{self.config.handle} approve {conf.code}` (or reject with `/{self.config.handle} reject "
                    f"{conf.code}`), here or in any channel Shepherd is in; unanswered, it expires at "
                    f"{conf.expires_at:%H:%M} UTC.")
        return (f"Shepherd did not start {_a(agent_type)} agent here (asked by {who}): {conf.action} "
                f"{conf.status} ({conf.reason or 'no reason given'}). A maintainer can start one with "
                f"`/{self.config.handle} <what to do>`.")

    # --- who and where -----------------------------------------------------------------------------

    async def _project(self, repo: str, default_branch: str) -> Project:
        return await self.projects.of_repo(self.config.org_id, repo, default_branch=default_branch)

    async def _person(self, login: str) -> Principal:
        return await self.conversations.person(self.config.org_id, CHANNEL, login, name=login,
                                               default_role=self.config.default_role,
                                               admin=login.lower() in self.config.admins)

    async def _me(self) -> str | None:
        try:
            return await self.auth.login()
        except Exception as exc:  # GitHub down, or a credential it refuses
            log.warning("GitHub: Shepherd's own login could not be read (%s)", type(exc).__name__)
            return None

    async def _eyes(self, item: Comment) -> None:
        """An "eyes" reaction on the comment, right after it is accepted: best effort."""
        if not item.reactions or not self.auth.configured:
            return
        try:
            api = await self.auth.api(item.issue.repo)
            await asyncio.wait_for(api.post(item.reactions, data={"content": "eyes"}), REACTION_TIMEOUT_S)
        except Exception as exc:
            log.warning("GitHub: the eyes reaction on %s failed (%s); the command goes on", item.key,
                        type(exc).__name__)
