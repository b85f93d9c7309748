"""Configuration from the environment (prefix SHEPHERD_) or a .env file. Every field is in the README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.presets import agent_catalog
from core.autonomy.actions import ActionsConfig
from core.errors import ShepherdError
from core.housekeeping import Retention
from core.people.orgs import DEFAULT_ORG, check_org_id
from core.runners.presets import AgentCatalog, custom_presets
from core.runners.repos import RepoRules, parse_hosts
from core.runners.sandbox import SandboxView, parse_paths
from core.tasks.config import RunnerConfig

if TYPE_CHECKING:
    from adapters.github.auth import GitHubApp
    from adapters.github.inbound import GitHubConfig
    from adapters.runners.kubernetes_objects import KubeSettings
    from adapters.slack.inbound import SlackConfig
    from adapters.telegram.config import TelegramConfig

# The bot's own credentials: no setting can hand them to an agent.
FORBIDDEN_TO_AGENTS = ("SHEPHERD_", "SLACK_", "TELEGRAM_", "GITHUB_")


TELEGRAM_SECRET_MIN = 12  # TELEGRAM_WEBHOOK_SECRET's shortest


# The longest duration a setting may name (ten years): a schedule's or a retention's seconds are added to dates, and
# `inf` or 1e300 would overflow them in every run (an OverflowError in each gated action, each clean-up).
MAX_DURATION_S = 10 * 365 * 86400


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHEPHERD_", env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path(".shepherd"), description="where the embedded database and workspaces live")
    database_url: SecretStr | None = Field(
        None, description="sqlite:///path or postgresql://user:pass@host/db; default SQLite in the data dir"
    )
    host: str = Field("127.0.0.1", description="address the web server binds")
    port: int = Field(8080, ge=0, le=65535, description="port the web server binds")
    org: str = Field(DEFAULT_ORG, description="org the console acts in, and the org of new tokens by default")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest REST request body accepted"
    )
    default_agent: str = Field("claude", description="agent a task runs when none is named: claude, codex, …")
    agents: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='custom agent CLIs as JSON: {"name": {"command": "cli run {prompt}", "resume": "…"}}',
    )
    agent_env: str = Field(
        "", description="extra environment variables agents receive, comma-separated (e.g. ANTHROPIC_API_KEY)"
    )
    max_tasks: int = Field(4, ge=1, le=1000, description="tasks running at once on one runner")
    max_tasks_per_project: int = Field(2, ge=1, le=1000, description="tasks of one project running at once")
    task_timeout: float = Field(3600, gt=0, description="hard limit of one agent turn, in seconds")
    task_idle_timeout: float = Field(600, gt=0, description="end a turn after this many seconds without output")
    task_log_lines: int = Field(20_000, ge=100, description="output lines stored per task; more are counted")
    agent_nice: int = Field(19, ge=0, le=19, description="the local runner's agents run at this niceness (0: as "
                            "Shepherd): a busy machine keeps answering chat and REST")
    runner: Literal["local", "kubernetes", "docker"] = Field(
        "local", description="where agents' turns run: local (child processes here, sandboxed), kubernetes (a Job "
        "per turn; SHEPHERD_K8S_*), docker (a container per task on Docker or Podman; SHEPHERD_DOCKER_*)"
    )
    sandbox: bool = Field(
        False, description="run agents in bubblewrap: an unprivileged uid with no capabilities, no network, only "
                           "the system read-only and the workspace writable"
    )
    sandbox_ro_paths: str = Field(
        "", description="more host paths a sandboxed agent may read, colon-separated absolute paths"
    )
    git_base_url: str = Field("https://github.com", description="where owner/name repositories are cloned from")
    repo_hosts: str = Field(
        "", description="other hosts task repositories may come from, comma-separated: git.example.com, "
        "*.example.com (public addresses only), * (any public host)",
    )
    github_token: SecretStr | None = Field(
        None, description="GitHub token Shepherd pushes task branches and opens pull requests with (never an agent's)"
    )
    # A GitHub App instead of a token (GitHub's own names; SHEPHERD_GITHUB_APP_* work too): both or neither.
    github_app_id: str | None = Field(
        None, validation_alias=AliasChoices("GITHUB_APP_ID", "SHEPHERD_GITHUB_APP_ID"),
        description="a GitHub App's id (its settings page, 'App ID'): Shepherd acts as the App, with a token of its "
                    "installation on each repository, instead of SHEPHERD_GITHUB_TOKEN",
    )
    github_app_private_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GITHUB_APP_PRIVATE_KEY", "SHEPHERD_GITHUB_APP_PRIVATE_KEY"),
        description="the App's private key: the PEM text, or the path of the .pem file GitHub generated",
    )
    github_api_url: str = Field("https://api.github.com", description="GitHub REST API base (Enterprise: …/api/v3)")
    # GitHub in (issue 14): GitHub's own name for the secret (as in its docs); SHEPHERD_GITHUB_WEBHOOK_SECRET works too.
    github_webhook_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GITHUB_WEBHOOK_SECRET", "SHEPHERD_GITHUB_WEBHOOK_SECRET"),
        description="the webhook's secret: turns POST /github/webhook on (X-Hub-Signature-256 is checked with it)",
    )
    github_handle: str = Field(
        "shepherd", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$",
        description="the word comment commands start with: /shepherd … or @shepherd …",
    )
    github_label: str = Field(
        "shepherd", min_length=1, max_length=50, description="adding this label to an issue starts a task on it"
    )
    github_trusted: str = Field(
        "", description="more GitHub logins whose commands and triggers count, comma-separated (bots included)"
    )
    github_review: str = Field(
        "trusted", pattern=r"^(trusted|all|off)$",
        description="which opened pull requests get a review agent: trusted (authors), all, off",
    )
    github_incidents: str = Field(
        "on", pattern=r"^(on|off)$", description="a failed check or workflow run on a pull request starts an "
                                                 "incident agent: on, off",
    )
    policy_dir: Path | None = Field(
        None, description="folder of per-project policy files <project>.toml (default: <data dir>/policies)"
    )
    confirmation_ttl: int = Field(
        1800, ge=60, le=7 * 24 * 3600, description="seconds a confirmation waits before it expires (a reject)"
    )
    # sched-digest (issue 16): digests (`digest <cron>|off`)
    digest_every: float = Field(
        15, gt=0, le=3600, description="seconds between two looks for due digests (each digest has its own cron)"
    )
    digest_always: bool = Field(
        False, description="post a digest at each fire time even when nothing changed since the last (\"all quiet\")"
    )
    timezone: str = Field(
        "UTC", description="the IANA time zone digest schedules read in and their times are shown in (Europe/Berlin)"
    )
    ui_session: float = Field(
        43200, ge=60, le=MAX_DURATION_S,
        description="seconds a dashboard sign-in lasts (/ui/); signing out, or revoking its token, ends it sooner"
    )
    # sched-remind (issue 16): approver reminders and the stall watchdog (the `reminders` and `stalls` jobs)
    remind_after: float = Field(
        600, gt=0, le=MAX_DURATION_S,
        description="seconds a confirmation waits before approvers are reminded, and between reminders"
    )
    remind_every: float = Field(
        30, gt=0, le=MAX_DURATION_S, description="seconds between two looks for due reminders"
    )
    stall_warn: float | None = Field(
        None, gt=0, le=MAX_DURATION_S, description="seconds of silence after which a running task's threads are warned "
        "(default: half of SHEPHERD_TASK_IDLE_TIMEOUT)"
    )
    stall_every: float | None = Field(
        None, gt=0, le=MAX_DURATION_S, description="seconds between two looks for silent or long-waiting tasks "
        "(default: 30, or a third of the warning time when that is shorter, so a warning comes before the timeout)"
    )
    waiting_note_after: float = Field(
        86400, gt=0, le=MAX_DURATION_S,
        description="seconds a task waits on people before its threads get a note, and between notes"
    )
    public_url: str | None = Field(
        None, description="where agents (and links) reach this server; default http://<host>:<port>"
    )
    default_role: str = Field(
        "viewer", description="role of a person Shepherd meets for the first time in a chat: viewer, operator, …"
    )
    admins: str = Field(
        "", description="chat users who are admins from their first message: slack:U0123ABC,telegram:4242"
    )
    console_user: str | None = Field(
        None, description="the person `shepherd console` acts as (an admin user of SHEPHERD_ORG); default: the OS user"
    )
    # sched-clean (issue 16): clean-up's retentions, in seconds, and its schedule (core.housekeeping)
    agent_retention: float = Field(
        7 * 86400, gt=0, le=MAX_DURATION_S,
        description="seconds after a task's end its ephemeral agent is removed (its history stays)"
    )
    workspace_retention: float = Field(
        3 * 86400, gt=0, le=MAX_DURATION_S,
        description="seconds after a task's end its workspace is pruned (none with unpushed work)"
    )
    workspace_hard_limit: float = Field(
        30 * 86400, gt=0, le=MAX_DURATION_S,
        description="seconds after a task's end its workspace is pruned even with unpushed work"
    )
    ledger_retention: float = Field(
        7 * 86400, gt=0, le=MAX_DURATION_S,
        description="seconds done deliveries and sent outbox rows are kept before compaction"
    )
    cleanup_schedule: str = Field(
        "17 * * * *", description="when clean-up runs: a cron line (5 fields, UTC) or a number of seconds"
    )
    # Slack's own variable names (the SDKs' and Slack's docs' convention); SHEPHERD_SLACK_* work too.
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "SHEPHERD_SLACK_BOT_TOKEN"),
        description="the app's bot token (xoxb-…): turns the Slack channel on",
    )
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "SHEPHERD_SLACK_SIGNING_SECRET"),
        description="verifies requests to /slack/events (Basic Information → App Credentials)",
    )
    slack_app_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_APP_TOKEN", "SHEPHERD_SLACK_APP_TOKEN"),
        description="an app-level token (xapp-…, connections:write): Socket Mode instead of /slack/events",
    )
    slack_api_url: str = Field(
        "https://slack.com/api/", validation_alias=AliasChoices("SLACK_API_URL", "SHEPHERD_SLACK_API_URL"),
        description="Slack Web API base URL",
    )
    # Telegram's (issue 15): TELEGRAM_* as BotFather and python-telegram-bot's docs name them; SHEPHERD_TELEGRAM_* too.
    telegram_bot_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "SHEPHERD_TELEGRAM_BOT_TOKEN"),
        description="the bot's token from @BotFather: turns Telegram on",
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TELEGRAM_WEBHOOK_SECRET", "SHEPHERD_TELEGRAM_WEBHOOK_SECRET"),
        description="webhook mode at POST /telegram/webhook (X-Telegram-Bot-Api-Secret-Token must carry it); "
                    "without it Shepherd polls getUpdates",
    )
    telegram_api_url: str = Field(
        "https://api.telegram.org/bot", validation_alias=AliasChoices("TELEGRAM_API_URL", "SHEPHERD_TELEGRAM_API_URL"),
        description="the Bot API base URL the token and method follow (a local Bot API server, or a test fake)",
    )
    # The scheduler (issue 16, sched-core): leader election and the expiry job.
    leader_timeout: float = Field(
        30, ge=1, le=3600, description="seconds within which another worker takes over from a leader that died "
        "(the leader checks its lock every third of it)",
    )
    leader_database_url: SecretStr | None = Field(
        None, description="a direct PostgreSQL connection for the leader's lock when SHEPHERD_DATABASE_URL goes "
                          "through a transaction pooler (pgbouncer), where a session lock does not hold",
    )
    expiry_every: float = Field(
        5, gt=0, le=3600, description="seconds between runs of the `expiry` job (confirmations past their time "
                                      "expire, a reject)",
    )
    # The Docker runner (issue 18, SHEPHERD_RUNNER=docker; adapters/runners/docker.py): Docker or Podman's API.
    docker_host: str | None = Field(
        None, validation_alias=AliasChoices("DOCKER_HOST", "SHEPHERD_DOCKER_HOST"),
        description="the engine's API: unix:///run/podman/podman.sock or tcp://host:2375 (Docker's own variable); "
                    "default the local Docker socket",
    )
    docker_image: str = Field(
        "shepherd-agent:latest", min_length=1,
        description="the image agent turns run in (the agent CLIs installed, /workspace owned by SHEPHERD_DOCKER_USER)",
    )
    docker_images: dict[str, str] = Field(
        default_factory=dict, description='an image per agent preset, as JSON: {"claude": "my/claude:1", ...}'
    )
    docker_network: str = Field(
        "none", min_length=1, description="the network agent containers join: none (no network), or a network's name"
    )
    docker_networks: dict[str, str] = Field(
        default_factory=dict, description='a network per agent preset that needs one, as JSON: {"claude": "bridge"}'
    )
    docker_cpus: float = Field(2.0, gt=0, le=1024, description="CPUs one agent container may use")
    docker_memory: str = Field(
        "4g", pattern=r"^\s*\d+(\.\d+)?\s*[kmgtKMGT]?i?[bB]?\s*$",
        description="memory one agent container may use, swap included: 512m, 4g",
    )
    docker_pids: int = Field(1024, ge=16, le=1_000_000, description="processes one agent container may have at once")
    docker_user: str = Field(
        "1000:1000", pattern=r"^[1-9][0-9]*(:[0-9]+)?$",
        description="the uid:gid agent containers run as (never root); the workspace's files are theirs",
    )
    # The Kubernetes runner (issue 18, SHEPHERD_RUNNER=kubernetes): a Job per turn, a PVC per task.
    k8s_kubeconfig: Path | None = Field(
        None, description="the kubeconfig file of the cluster agents run on (else KUBECONFIG, else the in-cluster "
                          "service account, else ~/.kube/config)",
    )
    k8s_context: str | None = Field(None, description="the kubeconfig context to use (else its current one)")
    k8s_namespace: str | None = Field(
        None, description="the namespace of the agents' Jobs and workspace claims (else the worker's own namespace "
                          "in a cluster, else `default`)",
    )
    k8s_image: str = Field(
        "shepherd-agent:latest", description="the agent image (with sh, git, tar, base64 and the agents' CLIs)",
    )
    k8s_images: str = Field(
        "", description="an image per agent preset, e.g. claude=ghcr.io/acme/claude:1,codex=ghcr.io/acme/codex:1 "
                        "(the others run SHEPHERD_K8S_IMAGE)",
    )
    k8s_storage_class: str | None = Field(
        None, description="the storage class of each task's workspace claim (else the cluster's default)",
    )
    k8s_workspace_size: str = Field("10Gi", description="the size of each task's workspace claim")
    k8s_cpu_request: str = Field("500m", description="CPU an agent's pod requests")
    k8s_cpu_limit: str = Field("2", description="CPU an agent's pod may use at most")
    k8s_memory_request: str = Field("1Gi", description="memory an agent's pod requests")
    k8s_memory_limit: str = Field("4Gi", description="memory an agent's pod may use at most")
    k8s_uid: int = Field(1000, ge=1, le=2**31 - 1, description="the non-root uid (and gid) agents run as")
    k8s_job_ttl: int = Field(
        3600, ge=0, le=MAX_DURATION_S, description="seconds a finished turn's Job is kept (its log with it)",
    )
    k8s_deadline_grace: int = Field(
        60, ge=0, le=86400, description="seconds added to SHEPHERD_TASK_TIMEOUT for a Job's activeDeadlineSeconds "
                                        "(the pod's start), so the engine ends a turn nobody watches",
    )
    k8s_writable_root: str = Field(
        "", description="agent presets whose pods get a writable root filesystem, comma-separated (the others "
                        "write only to their workspace, home and /tmp)",
    )

    @field_validator("org")
    @classmethod
    def _org(cls, value: str) -> str:
        return check_org_id(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from core.schedule.cron import zone  # imports APScheduler's trigger: only when settings are read

        try:
            return zone(value.strip()).key
        except ShepherdError as exc:  # pydantic reports a ValueError as a setting's error
            raise ValueError(exc.message) from None

    @field_validator("sandbox_ro_paths")
    @classmethod
    def _ro_paths(cls, value: str) -> str:
        return ":".join(str(p) for p in parse_paths(value))

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
        return value

    @field_validator("agent_env")
    @classmethod
    def _agent_env(cls, value: str) -> str:
        names = [n.strip() for n in value.replace(" ", ",").split(",") if n.strip()]
        for name in names:
            if name.startswith(FORBIDDEN_TO_AGENTS):
                raise ValueError(f"{name} is one of Shepherd's own secrets and never reaches an agent")
        return ",".join(names)

    @field_validator("agents")
    @classmethod
    def _agents(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            custom_presets(value)
        except ShepherdError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("default_role")
    @classmethod
    def _default_role(cls, value: str) -> str:
        from core.people.access import Role

        try:
            return Role.parse(value).label
        except ShepherdError as exc:
            raise ValueError(exc.message) from None

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: str) -> str:
        entries = [e.strip() for e in value.replace(" ", ",").split(",") if e.strip()]
        for entry in entries:
            channel, sep, who = entry.partition(":")
            if not sep or not channel or not who:
                raise ValueError(f"{entry!r}: each admin is <channel>:<user id>, e.g. slack:U0123ABC")
            if channel == "telegram" and not re.fullmatch(r"[1-9][0-9]{0,19}", who):
                # a Telegram user is matched by their number: a @username (which changes hands) never would be
                raise ValueError(f"{entry!r}: a Telegram admin is telegram:<numeric user id>, e.g. telegram:4242 "
                                 "(the user's number, not their @username)")
        return ",".join(entries)

    @field_validator("console_user")
    @classmethod
    def _console_user(cls, value: str | None) -> str | None:
        from core.people.users import check_user_name

        if value is None or not value.strip():
            return None
        try:
            return check_user_name(value)
        except ShepherdError as exc:
            raise ValueError(exc.message) from None

    @field_validator("repo_hosts")
    @classmethod
    def _repo_hosts(cls, value: str) -> str:
        try:
            return ",".join(parse_hosts(value))
        except ShepherdError as exc:
            raise ValueError(exc.message) from None

    @field_validator("github_app_id")
    @classmethod
    def _github_app_id(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if value and not value.isdigit():
            raise ValueError(f"{value!r} is not a GitHub App id (the number on the App's settings page)")
        return value or None

    @field_validator("github_app_private_key")
    @classmethod
    def _github_app_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from adapters.github.auth import BadAppKey, read_private_key  # here: ~10 MB of JWT and crypto otherwise

        try:
            return SecretStr(read_private_key(value.get_secret_value()))
        except BadAppKey as exc:
            raise ValueError(f"cannot be used: {exc}") from None

    @model_validator(mode="after")
    def _github_app_whole(self) -> Settings:
        if (self.github_app_id is None) != (self.github_app_private_key is None):
            missing = "GITHUB_APP_PRIVATE_KEY" if self.github_app_private_key is None else "GITHUB_APP_ID"
            raise ValueError(f"a GitHub App needs both GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY: set {missing} too")
        return self

    @field_validator("cleanup_schedule")
    @classmethod
    def _cleanup_schedule(cls, value: str) -> str:
        from core.schedule.schedules import BadSchedule, parse_schedule  # APScheduler's triggers: only when read

        try:
            parsed = parse_schedule(value)
        except BadSchedule as exc:
            raise ValueError(str(exc)) from None
        if isinstance(parsed, float) and parsed > MAX_DURATION_S:
            raise ValueError(f"a number of seconds at most {MAX_DURATION_S}, or a cron line")
        return parsed if isinstance(parsed, str) else f"{parsed:g}"

    @model_validator(mode="after")
    def _workspace_limits(self) -> Settings:
        if self.workspace_hard_limit < self.workspace_retention:
            raise ValueError("SHEPHERD_WORKSPACE_HARD_LIMIT is the longest a workspace with unpushed work is kept: "
                             "at least SHEPHERD_WORKSPACE_RETENTION")
        return self

    @model_validator(mode="after")
    def _stall_warning(self) -> Settings:
        # the watchdog warns only before the idle timeout ends the turn: a later warning would never be posted
        if self.stall_warn is not None and self.stall_warn >= self.task_idle_timeout:
            raise ValueError(f"SHEPHERD_STALL_WARN ({self.stall_warn:g} s) must be below SHEPHERD_TASK_IDLE_TIMEOUT "
                             f"({self.task_idle_timeout:g} s): the idle timeout ends a silent turn before any warning")
        return self

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:
        secret = value.get_secret_value() if value else ""
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ValueError("Telegram takes 1-256 characters of A-Z, a-z, 0-9, _ and - as a webhook secret")
        if secret and len(secret) < TELEGRAM_SECRET_MIN:
            # the header is the webhook's only proof: who guesses it speaks as any Telegram user, an admin too
            raise ValueError(f"at least {TELEGRAM_SECRET_MIN} characters (a short secret can be guessed): "
                             "e.g. `openssl rand -hex 32`")
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _telegram_api(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL (the token and the method follow it)")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL")
        return value.rstrip("/") + "/"

    @field_validator("k8s_images")
    @classmethod
    def _k8s_images(cls, value: str) -> str:
        from adapters.runners.kubernetes_objects import parse_images

        return ",".join(f"{name}={image}" for name, image in parse_images(value).items())

    def k8s_settings(self, namespace: str) -> KubeSettings:
        """The Kubernetes runner's configuration, in `namespace`."""
        from adapters.runners.kubernetes_objects import KubeSettings, parse_images

        return KubeSettings(
            namespace=namespace, image=self.k8s_image, images=parse_images(self.k8s_images),
            storage_class=self.k8s_storage_class or None, workspace_size=self.k8s_workspace_size,
            cpu_request=self.k8s_cpu_request, cpu_limit=self.k8s_cpu_limit, memory_request=self.k8s_memory_request,
            memory_limit=self.k8s_memory_limit, uid=self.k8s_uid, job_ttl_s=self.k8s_job_ttl,
            deadline_grace_s=self.k8s_deadline_grace,
            writable_root=frozenset(n.strip() for n in self.k8s_writable_root.split(",") if n.strip()),
        )

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets `field`."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"SHEPHERD_{field.upper()}"

    @property
    def repo_host_list(self) -> tuple[str, ...]:
        return parse_hosts(self.repo_hosts)

    def repo_rules(self) -> RepoRules:
        """Which repositories tasks may name (checked when a task is created; runners check again)."""
        return RepoRules(code_host=self.git_base_url, hosts=self.repo_host_list)

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(e for e in self.admins.split(",") if e)

    @property
    def slack_on(self) -> bool:
        return bool(self.slack_bot_token and self.slack_bot_token.get_secret_value())

    def slack(self) -> SlackConfig | None:
        """The Slack channel's configuration, or None when no bot token is set."""
        if not self.slack_on or self.slack_bot_token is None:
            return None
        from adapters.slack.inbound import SlackConfig
        from core.people.access import Role

        secret, app = self.slack_signing_secret, self.slack_app_token
        return SlackConfig(
            bot_token=self.slack_bot_token.get_secret_value(), org_id=self.org,
            signing_secret=secret.get_secret_value() or None if secret else None,
            app_token=app.get_secret_value() or None if app else None, api_url=self.slack_api_url,
            default_role=Role.parse(self.default_role),
            admins=frozenset(e.split(":", 1)[1] for e in self.admin_ids if e.startswith("slack:")),
        )

    def github(self) -> GitHubConfig | None:
        """GitHub in (POST /github/webhook), or None when no webhook secret is set."""
        secret = self.github_webhook_secret.get_secret_value() if self.github_webhook_secret else ""
        if not secret:
            return None
        from adapters.github.inbound import GitHubConfig
        from core.people.access import Role

        token = self.github_token.get_secret_value() if self.github_token else None
        return GitHubConfig(
            webhook_secret=secret, org_id=self.org, handle=self.github_handle, label=self.github_label,
            trusted=frozenset(e.strip().lower() for e in self.github_trusted.split(",") if e.strip()),
            review=self.github_review, incidents=self.github_incidents == "on",
            default_role=Role.parse(self.default_role), api_url=self.github_api_url, token=token or None,
            app=self.github_app(),
            admins=frozenset(e.split(":", 1)[1].lower() for e in self.admin_ids if e.startswith("github:")),
        )

    def telegram(self) -> TelegramConfig | None:
        """The Telegram channel's configuration, or None when no bot token is set."""
        token = self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else ""
        if not token:
            return None
        from adapters.telegram.config import TelegramConfig
        from core.people.access import Role

        secret = self.telegram_webhook_secret.get_secret_value() if self.telegram_webhook_secret else ""
        return TelegramConfig(
            bot_token=token, org_id=self.org, webhook_secret=secret or None, api_url=self.telegram_api_url,
            public_url=self.public_url, default_role=Role.parse(self.default_role),
            admins=frozenset(e.split(":", 1)[1] for e in self.admin_ids if e.startswith("telegram:")),
        )

    def github_app(self) -> GitHubApp | None:
        """The GitHub App Shepherd acts as, or None (then SHEPHERD_GITHUB_TOKEN, if set, is its credential)."""
        if self.github_app_id is None or self.github_app_private_key is None:
            return None
        from adapters.github.auth import GitHubApp

        return GitHubApp(self.github_app_id, self.github_app_private_key.get_secret_value())

    @field_validator("public_url", "github_api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @property
    def policies_path(self) -> Path:
        return (self.policy_dir or self.data_dir / "policies").resolve()

    @property
    def workspace_root(self) -> Path:
        return (self.data_dir / "workspaces").resolve()

    def stall_warn_s(self) -> float:
        return self.stall_warn if self.stall_warn is not None else self.task_idle_timeout / 2

    def stall_check_every(self) -> float:
        """The `stalls` job's interval: a silence is noticed at most this long after the warning time."""
        return self.stall_every if self.stall_every is not None else min(30.0, self.stall_warn_s() / 3)

    def retention(self) -> Retention:
        """Clean-up's retentions (core.housekeeping)."""
        return Retention(agents_s=self.agent_retention, workspaces_s=self.workspace_retention,
                         workspace_hard_limit_s=self.workspace_hard_limit, ledger_s=self.ledger_retention)

    def catalog(self) -> AgentCatalog:
        return agent_catalog(custom_presets(self.agents), in_image=self.runner != "local")

    def actions_config(self) -> ActionsConfig:
        """How approved actions reach the code host: where it is, and the token pushes carry there only."""
        token = self.github_token.get_secret_value() if self.github_token else None
        return ActionsConfig(git_base_url=self.git_base_url, git_token=token or None)

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(
            workspace_root=self.workspace_root,
            max_tasks=self.max_tasks,
            max_tasks_per_project=self.max_tasks_per_project,
            hard_timeout_s=self.task_timeout,
            idle_timeout_s=self.task_idle_timeout,
            sandbox=self.sandbox_view() if self.sandbox else None,
            pass_env=tuple(n for n in self.agent_env.split(",") if n),
            git_base_url=self.git_base_url,
            repo_hosts=self.repo_host_list,
            max_log_lines=self.task_log_lines,
        )

    def sandbox_view(self) -> SandboxView:
        """What a sandboxed agent sees besides the system: never Shepherd's data directory, its working
        directory or its user's home; the operator's read-only additions."""
        hidden = [self.data_dir.resolve(), Path.cwd().resolve(), Path.home().resolve(), self.policies_path]
        if self.embedded and ":///" in self.db_url:  # a database file kept outside the data directory
            hidden.append(Path(self.db_url.split(":///", 1)[1]).resolve().parent)
        return SandboxView(hidden=tuple(dict.fromkeys(hidden)), ro_paths=parse_paths(self.sandbox_ro_paths))

    @property
    def db_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'shepherd.db').resolve()}"

    @property
    def embedded(self) -> bool:
        """True on the no-setup default: SQLite, which `serve` migrates by itself."""
        return self.db_url.startswith("sqlite")

    def secrets(self) -> list[str]:
        """The values no log line may show (bot.logsafe masks them): every secret setting, and the database
        URL's password."""
        values = [v.get_secret_value() for n in type(self).model_fields
                  if isinstance(v := getattr(self, n), SecretStr) and n not in ("database_url", "leader_database_url")]
        leader = self.leader_database_url.get_secret_value() if self.leader_database_url else ""
        passwords = [urlsplit(url).password for url in (self.db_url, leader) if url]
        return [v for v in [*values, *passwords] if v]

    def masked(self) -> dict[str, Any]:
        """Settings for display: secrets and passwords inside URLs hidden."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                value = mask_url(self.db_url)
            elif name == "leader_database_url":
                value = mask_url(value.get_secret_value()) if value else ""
            elif isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif name == "stall_warn":  # the value in effect, when it follows from another setting
                value = f"{self.stall_warn_s():g} (half of SHEPHERD_TASK_IDLE_TIMEOUT)" if value is None else value
            elif name == "stall_every":
                value = f"{self.stall_check_every():g}" if value is None else value
            shown[self.env_name(name)] = str(value)
        return shown


def mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
