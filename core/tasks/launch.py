"""What a turn's agent is started with: where its workspace comes from (a repository reached with its
credentials, a promotion's copy), where its unit sees that workspace, its environment (an allowlist, never the
server's secrets) and its RunSpec. core.tasks.turns drives the turn."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sqlmodel import col, select

from core import environ
from core.runners import Runner, RunSpec
from core.runners.credentials import GitCredentials, git_auth
from core.runners.presets import AgentCatalog
from core.runners.sandbox import SANDBOX_HOME, SANDBOX_SOCKET, SANDBOX_TOOLS, SandboxView, home_for
from core.runners.workspace import WorkspaceError
from core.shepherd import Shepherd
from core.store.models import Promotion, Session, Task
from core.tasks.config import RunnerConfig


def agent_env(config: RunnerConfig, task: Task, workspace: Path, token: str | None = None,
              session_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's whole environment: an allowlist, the agent credentials named in SHEPHERD_AGENT_ENV,
    the values its session sets for names of that allowlist (checked when set: never a secret), and the task's own
    SHEPHERD_* values (with `token`, the task-scoped callback for `shepherd ask`). Nothing else of the server's
    environment (its secrets) passes."""
    allowed = (*environ.AGENT, *config.pass_env)
    env = environ.passed(allowed)
    env.update({name: value for name, value in (session_env or {}).items()
                if name in allowed and not name.startswith("SHEPHERD_")})
    env.update({"SHEPHERD_TASK_ID": task.id, "SHEPHERD_TASK_NAME": task.name, "SHEPHERD_WORKSPACE": str(workspace)})
    box = config.sandbox
    # in the sandbox Shepherd is reached through its socket, and the launcher sits where the sandbox shows it
    callback = f"unix:{SANDBOX_SOCKET}" if box is not None and box.socket is not None else config.callback_url
    if token and callback:
        env.update({"SHEPHERD_URL": callback, "SHEPHERD_TASK_TOKEN": token})
    tools = SANDBOX_TOOLS if box is not None and box.tools is not None else config.tool_dir
    if tools is not None:
        env["PATH"] = os.pathsep.join(p for p in (str(tools), env.get("PATH", "")) if p)
    if box is not None:
        env.update({"HOME": SANDBOX_HOME, "TMPDIR": "/tmp"})  # the sandbox's own
    return env


def engine_clone(url: str | None, auth: Mapping[str, str], *,
                 short_lived: bool) -> tuple[str | None, Mapping[str, str]]:
    """What a remote engine's own clone step gets (core.runners.Seed): the repository and the clone's token when
    that token expires soon by itself (or none is needed). A lasting token (a personal token, a request's own)
    never leaves Shepherd: then nothing, and the engine is given Shepherd's copy instead."""
    if url is None or (auth and not short_lived):
        return None, {}
    return url, auth


class Launch:
    """A turn's start, for one runner: `spec` for its agent, `seen_at` for its workspace."""

    def __init__(self, shepherd: Shepherd, catalog: AgentCatalog, config: RunnerConfig, runner: Runner,
                 credentials: GitCredentials | None) -> None:
        self.shepherd = shepherd
        self.db = shepherd.db
        self.catalog = catalog
        self.config = config
        self.runner = runner
        self.credentials = credentials  # a clone from the code host carries the repository's token, git alone sees it

    async def promoted(self, task: Task) -> Path:
        """The repository of the task's promotion: Shepherd's own path for it (never one a request named), so no
        repository rule applies to it."""
        async with self.db.read() as session:
            promotion = await session.get(Promotion, task.promotion_id)
        if promotion is None or promotion.org_id != task.org_id:
            raise WorkspaceError(f"its promotion {task.promotion_id} is gone")
        repo = self.shepherd.promotions.repo_path(promotion)
        # a repository with a work tree or a bare one (either promotions module keeps one of them)
        if not ((repo / ".git").is_dir() or (repo / "HEAD").is_file()):  # noqa: ASYNC240 (a stat)
            raise WorkspaceError(f"the repository of promotion {promotion.id} is gone")
        return repo

    def mounts(self) -> bool:
        """Whether this runner shows a workspace where Shepherd says: a remote engine mounts its volume there,
        the local sandbox binds it there; the local runner without a sandbox runs the agent in the real path."""
        return self.runner.capabilities.remote or self.config.sandbox is not None

    def seen_at(self, task: Task, workspace: Path) -> Path:
        """Where the task's unit sees its workspace: a coding container's workspacePath (`mount_path`) when the
        runner can show it there, else the runner's own place for it."""
        if task.mount_path and self.mounts():
            return Path(task.mount_path)
        return self.runner.workspace_path(workspace)

    def short_lived(self, task: Task, url: str) -> bool:
        """Whether the token of the task's clone expires soon by itself (a GitHub App's installation token, an hour)
        rather than lasting (a personal token, the one-use token a request handed over, whose life is unknown)."""
        held = self.shepherd.run_tokens.git_config(task.id, url)
        return held is None and bool(getattr(self.credentials, "short_lived", False))

    async def git_auth(self, task: Task, url: str) -> dict[str, str]:
        """What authenticates the clone: the one-use token handed over with the task's request (held in this
        process's memory: core.runners.run_tokens), else Shepherd's own credentials for the code host."""
        held = self.shepherd.run_tokens.git_config(task.id, url)
        if held is not None:
            return held
        return await git_auth(self.credentials, url, self.config.git_base_url)

    async def spec(self, task: Task, workspace: Path, text: str, session_ref: str, follow_up: bool,
                    token: str | None) -> RunSpec:
        """`token`: the turn's callback token, stored (hashed) with its claim; passed when there is a callback."""
        token = token if self.config.callback_url else None
        seen_at = self.seen_at(task, workspace)  # where the unit sees it (a mount path in a container)
        sandbox: SandboxView | None = None
        if self.config.sandbox is not None and not self.runner.capabilities.remote:
            home = home_for(workspace)  # the agent's own home, kept for its follow-up turns
            # on the event loop, as the workspace's own folders are written (core.runners.emptyrepo): a mkdir or two.
            # Handed to a thread, a hundred turns starting together each waited for the whole queue before them
            # (the default executor's few threads, first in first out), and so every agent started with the last
            home.mkdir(parents=True, exist_ok=True)
            # shown at seen_at when that is not its own path (a coding container's workspacePath)
            sandbox = self.config.sandbox.for_task(home, workspace if seen_at != workspace else None)
        preset = self.catalog.get(task.runtime)
        session_env: dict[str, str] = {}
        if task.session_id is not None:
            async with self.db.read() as session:
                found = (await session.exec(select(Session.env).where(col(Session.id) == task.session_id))).first()
            session_env = dict(found or {})
        return RunSpec(
            argv=preset.argv(prompt=text, session=session_ref, workspace=seen_at, task=task.id,
                             follow_up=follow_up, cheap=task.cheap_model),
            cwd=seen_at, env=agent_env(self.config, task, seen_at, token, session_env),
            idle_timeout=self.config.idle_timeout_s, hard_timeout=self.config.hard_timeout_s,
            sandbox=sandbox, program=preset.own_words(follow_up=follow_up),
            task_id=task.id, org_id=task.org_id, turn=task.turns + 1, runtime=task.runtime,
        )
