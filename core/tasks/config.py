"""How a runner process runs tasks: where their workspaces live, how many at once, their limits, what agents
get. Built from Settings by the application shell (bot/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.runners.repos import RepoRules
from core.runners.sandbox import SandboxView


@dataclass(frozen=True)
class RunnerConfig:
    workspace_root: Path
    max_tasks: int = 4
    max_tasks_per_project: int = 2
    hard_timeout_s: float = 3600.0
    idle_timeout_s: float = 600.0
    sandbox: SandboxView | None = None  # run agents through bubblewrap, showing this much of the host
    pass_env: tuple[str, ...] = ()
    git_base_url: str = "https://github.com"
    repo_hosts: tuple[str, ...] = ()  # SHEPHERD_REPO_HOSTS (core.runners.repos.parse_hosts)
    max_log_lines: int = 20_000
    poll_s: float = 1.0
    heartbeat_s: float = 5.0
    stale_after_s: float = 30.0
    flush_s: float = 0.2
    callback_url: str | None = None  # SHEPHERD_URL for agents: where `shepherd ask` reaches Shepherd
    tool_dir: Path | None = None  # put first on the agent's PATH: holds the `shepherd` (ask) launcher
    max_action_attempts: int = 3

    @property
    def repos(self) -> RepoRules:
        """The rules a runner's clones and pushes obey: the same the task was checked with when created."""
        return RepoRules(code_host=self.git_base_url, hosts=self.repo_hosts)

    def holds_workspace(self, workspace: str | None) -> bool:
        """Is this workspace one of this runner's (an action that needs it runs where it lives)?"""
        if not workspace:
            return False
        path = Path(workspace)
        return path.parent == self.workspace_root.resolve() and path.is_dir()
