"""Gated actions, carried out by Shepherd once policy or people have approved them.

What each action does, on what target:

    branch.push        push the task's branch (HEAD of its workspace) to its repository
    pr.open            push, then open a pull request task branch -> base branch (or find the open one)
    pr.comment         comment on the task's pull request
    pr.merge           merge the task's pull request, only if its head is still the approved commit
    deploy.<env>       run the project's deploy command in the workspace, or POST to its deploy URL
    task.start         start a task a webhook asked for (a label, a failed check: an incident agent)
    review.start       start a review agent on a pull request a webhook announced

Every action checks its plan first: if the target moved (a new head, uncommitted changes) since the
confirmation was asked, it raises PlanChanged and the confirmation is void. Every action is safe to repeat
after a crash: pushing the same commit again changes nothing, an open pull request is found rather than
opened twice, merging a merged one returns its commit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from core import environ
from core.autonomy.forge import Forge, ForgeError
from core.autonomy.plans import START_ACTIONS, Target
from core.autonomy.plans import describe as describe  # re-exported: what an action would do is core.autonomy.plans'
from core.autonomy.policy import DeployTarget, Policy
from core.errors import ShepherdError
from core.runners.credentials import GitCredentials, StaticToken, git_auth
from core.runners.credentials import same_origin as same_origin  # re-exported: it was defined here
from core.runners.repos import RepoRules
from core.runners.workspace import WorkspaceError, head_of, push
from core.store.models import Confirmation, Task
from core.tasks.evidence import ActionResult

DEPLOY_TIMEOUT_S = 900.0
LAST_LINES = 20


class ActionError(ShepherdError):
    """An approved action could not be carried out (transient: it is tried again, after `retry_after`)."""

    code = "ACTION_FAILED"
    status = 502


class PlanChanged(ActionError):
    """The target is no longer what was approved."""


@dataclass(frozen=True)
class ActionsConfig:
    git_base_url: str = "https://github.com"
    git_token: str | None = None  # for https pushes to the code host, when no GitCredentials are given
    deploy_timeout_s: float = DEPLOY_TIMEOUT_S


class DeployHook(Protocol):
    """How a deploy URL is called (adapters/deploy): a JSON POST; core never speaks HTTP itself."""

    async def post(self, url: str, facts: Mapping[str, Any], *, key: str) -> tuple[int, str]:
        """POST `facts` to `url` with `Idempotency-Key: key`; returns the answer's status and (the start of) its
        text. An ActionError, transient, when the hook cannot be reached or does not answer in time."""
        ...


class Executor:
    def __init__(
        self, config: ActionsConfig, forge: Forge | None = None, deploy_hook: DeployHook | None = None, *,
        credentials: GitCredentials | None = None,
    ) -> None:
        """`credentials`: the token a push to the code host carries per repository (a GitHub App's installation
        token); by default the configured `git_token` for every repository."""
        self.config = config
        self.forge = forge
        self.deploy_hook = deploy_hook
        self.credentials = credentials or StaticToken(config.git_token)

    async def _credentials(self, url: str) -> dict[str, str]:
        """Git settings that authenticate an https push to the configured code host only (the URL of an
        arbitrary task repository never gets the token), for that one git process: never in the workspace's
        config, where the agent could read them, nor on a command line others can see."""
        try:
            return await git_auth(self.credentials, url, self.config.git_base_url)
        except ShepherdError as exc:
            raise ActionError(f"no credentials to push with: {exc.message}", transient=exc.transient,
                              retry_after=exc.retry_after) from None

    async def execute(
        self, conf: Confirmation, task: Task | None, policy: Policy, *, repos: RepoRules | None = None,
        held: Callable[[str], dict[str, str] | None] | None = None,
    ) -> ActionResult:
        """Carry out one approved confirmation; returns what came of it (shown to people, kept as result).
        `repos`: the rules the task's clone obeyed (by default the code host alone); a push obeys them too.
        `held`: the git settings of a one-use token held for the task, by URL (None where none applies)."""
        action = conf.action
        if action in START_ACTIONS:
            return ActionResult()  # the start is the task's own move to pending, written as the action settles
        if action in ("branch.push", "pr.open"):
            rules = repos or RepoRules(code_host=self.config.git_base_url)
            return await self._push_and_open(conf, task, rules, open_pr=action == "pr.open", held=held)
        if action == "pr.comment":
            return await self._comment(conf)
        if action == "pr.merge":
            return await self._merge(conf)
        if action.startswith("deploy."):
            return await self._deploy(conf, task, policy)
        raise ActionError(f"Shepherd does not carry out {action!r} itself (an agent asked for it: it acts)")

    # --- git and the code host ---------------------------------------------------------------------

    async def _checked_head(self, conf: Confirmation, target: Target, task: Task | None) -> Path:
        if task is None or not task.workspace:
            raise ActionError(f"{conf.action} needs the task's workspace, and it has none")
        workspace = Path(task.workspace)
        if not workspace.is_dir():  # noqa: ASYNC240 (one stat)
            raise ActionError(f"the workspace {workspace} is gone")
        try:
            sha, dirty = await head_of(workspace)
        except WorkspaceError as exc:
            raise ActionError(exc.message) from None
        if sha != target.head or dirty:
            raise PlanChanged(
                f"the branch moved since {conf.code} was asked (now {sha[:10]}"
                f"{' with uncommitted changes' if dirty else ''}, approved {str(target.head)[:10]})"
            )
        return workspace

    async def _push_and_open(
        self, conf: Confirmation, task: Task | None, repos: RepoRules, *, open_pr: bool,
        held: Callable[[str], dict[str, str] | None] | None = None,
    ) -> ActionResult:
        target = Target.from_json(conf.target)
        workspace = await self._checked_head(conf, target, task)
        repo, branch, head = _need(target.repo, "repo"), _need(target.branch, "branch"), _need(target.head, "head")
        try:  # checked again right before git connects: the host's addresses may have changed since the clone
            reach = await repos.reach(repo)
        except ShepherdError as exc:
            raise ActionError(f"pushing {branch} refused: {exc.message}") from None
        try:
            auth = held(reach.url) if held is not None else None
            await push(workspace, reach.url, branch, head,
                       env=reach.env(auth if auth is not None else await self._credentials(reach.url)))
        except WorkspaceError as exc:
            raise ActionError(f"pushing {branch} failed: {exc.message}", transient=True) from None
        result = ActionResult(branch=branch, head=head, pushed=True)
        if not open_pr:
            return result
        forge = self._need_forge()
        title = conf.params.get("title") or branch
        body = conf.params.get("body") or ""
        try:
            pr = await forge.open_pull_request(repo, head=branch, base=target.base or "main", title=title, body=body)
        except ForgeError as exc:
            raise ActionError(f"opening the pull request failed: {exc.message}", transient=exc.transient,
                              retry_after=exc.retry_after) from None
        return replace(result, number=pr.number, url=pr.url, created=pr.created)

    async def _comment(self, conf: Confirmation) -> ActionResult:
        forge = self._need_forge()
        repo = _need(Target.from_json(conf.target).repo, "repo")
        try:
            url = await forge.comment(repo, int(conf.params["number"]), str(conf.params["body"]))
        except ForgeError as exc:
            raise ActionError(f"commenting failed: {exc.message}", transient=exc.transient,
                              retry_after=exc.retry_after) from None
        return ActionResult(url=url)

    async def _merge(self, conf: Confirmation) -> ActionResult:
        forge = self._need_forge()
        target = Target.from_json(conf.target)
        try:
            sha = await forge.merge(_need(target.repo, "repo"), int(conf.params["number"]), sha=target.head,
                                    method=str(conf.params.get("method", "squash")))
        except ForgeError as exc:
            if exc.host_status == 409:
                raise PlanChanged(f"the pull request's head moved since {conf.code} was asked") from None
            raise ActionError(f"merging failed: {exc.message}", transient=exc.transient,
                              retry_after=exc.retry_after) from None
        return ActionResult(number=int(conf.params["number"]), merge_commit=sha)

    def _need_forge(self) -> Forge:
        if self.forge is None:
            raise ActionError("no GitHub access is configured: set SHEPHERD_GITHUB_TOKEN (and "
                              "SHEPHERD_GITHUB_API_URL for GitHub Enterprise)")
        return self.forge

    # --- deploys -----------------------------------------------------------------------------------

    async def _deploy(self, conf: Confirmation, task: Task | None, policy: Policy) -> ActionResult:
        env_name = conf.action.removeprefix("deploy.")
        deploy: DeployTarget | None = policy.deploy.get(env_name)
        if deploy is None:
            raise ActionError(f"no deploy is configured for {env_name!r}: add [deploy.{env_name}] to the "
                              "project's policy file")
        target = Target.from_json(conf.target)
        workspace = await self._checked_head(conf, target, task)
        facts = {"environment": env_name, "repo": target.repo, "branch": target.branch,
                 "sha": target.head, "task": task.name if task else None,
                 "confirmation": conf.code, "approvedBy": conf.decided_by}
        if deploy.url:
            return await self._deploy_url(deploy.url, facts, key=conf.id)
        assert deploy.command is not None
        return await self._deploy_command(deploy.command, workspace, facts)

    async def _deploy_url(self, url: str, facts: dict[str, Any], *, key: str) -> ActionResult:
        if self.deploy_hook is None:
            raise ActionError("this process cannot call deploy hooks (no DeployHook was given to its executor)")
        # the same key on a retry: a hook that honours Idempotency-Key deploys once
        status, text = await self.deploy_hook.post(url, facts, key=key)
        if status >= 300:
            raise ActionError(f"the deploy hook answered {status}: {text}", transient=status >= 500 or status == 429)
        return ActionResult(hook_status=status, hook_response=text)

    async def _deploy_command(self, command: str, workspace: Path, facts: dict[str, Any]) -> ActionResult:
        env = environ.passed(environ.DEPLOY)
        env.update({f"SHEPHERD_DEPLOY_{k.upper()}": str(v) for k, v in facts.items() if v is not None})
        proc = await asyncio.create_subprocess_shell(
            command, cwd=workspace, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=self.config.deploy_timeout_s)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ActionError(f"the deploy command ran longer than {self.config.deploy_timeout_s:g} s") from None
        lines = out.decode(errors="replace").splitlines()[-LAST_LINES:]
        if proc.returncode != 0:
            raise ActionError(f"the deploy command failed (exit {proc.returncode}): {' | '.join(lines[-3:])}")
        return ActionResult(exit_code=0, last_lines=tuple(lines))


def _need(value: str | None, what: str) -> str:
    if not value:
        raise ActionError(f"the approved target names no {what}")
    return value
