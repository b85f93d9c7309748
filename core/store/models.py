"""Tables. Every row but Org carries org_id: tenant data never crosses orgs.

Timestamps are timezone-aware UTC (SQLite hands them back naive; core.clock.as_utc mends that).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, Table, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from core.clock import utcnow


def table_of(model: type[SQLModel]) -> Table:
    """A model's table, for statements in SQLAlchemy Core (hot paths that want rows, not objects)."""
    table: Table = getattr(model, "__table__")  # noqa: B009  (set by SQLModel at class creation; untyped)
    return table


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=False, **kw)


class Org(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = _ts()


class User(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    created_at: datetime = _ts()


class Identity(SQLModel, table=True):
    """A user as one channel knows them: a Slack U…, a Telegram id, a GitHub login."""

    __table_args__ = (UniqueConstraint("org_id", "channel", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    user_id: str = Field(foreign_key="user.id", index=True, max_length=64)
    channel: str = Field(max_length=32)
    external_id: str = Field(max_length=200)
    created_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    """Only the SHA-256 of the secret is kept; `prefix` lets people tell tokens apart."""

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16)
    secret_hash: str = Field(unique=True, max_length=64)
    scopes: str = Field(max_length=100)
    user_id: str | None = Field(default=None, foreign_key="user.id", max_length=64)
    created_at: datetime = _ts()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class WebSession(SQLModel, table=True):
    """A browser signed in to the dashboard: only the SHA-256 of the cookie's secret is kept. It acts as the API
    token it was opened with (revoking the token, or lowering its user's role, reaches the browser at once), or,
    opened with a one-time link from chat, as that user with their role."""

    id: str = Field(primary_key=True, max_length=64)  # the secret's SHA-256
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    token_id: str | None = Field(default=None, foreign_key="apitoken.id", index=True, max_length=64)
    user_id: str | None = Field(default=None, foreign_key="user.id", index=True, max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False, index=True)


class SignInLink(SQLModel, table=True):
    """A one-time dashboard sign-in link that `dashboard` gave a person in chat: only its code's SHA-256 is kept;
    good once, until `expires_at`."""

    id: str = Field(primary_key=True, max_length=64)  # the code's SHA-256
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    user_id: str = Field(foreign_key="user.id", index=True, max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Project(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    name: str = Field(max_length=100)
    repo: str | None = Field(default=None, max_length=200)
    default_branch: str = Field(default="main", max_length=200)
    channels: list[str] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = _ts()


class AgentType(SQLModel, table=True):
    """A type registered beyond the six built-ins (core.agents.BUILTIN_TYPES), per org."""

    org_id: str = Field(foreign_key="org.id", primary_key=True, max_length=64)
    type: str = Field(primary_key=True, max_length=32)
    lifecycle: str = Field(max_length=16)
    description: str = Field(max_length=500)
    created_at: datetime = _ts()


class Agent(SQLModel, table=True):
    __table_args__ = (Index("ix_agent_org_created", "org_id", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    name: str = Field(max_length=100)
    type: str = Field(max_length=32)
    status: str = Field(max_length=16)
    autonomy_level: int = 1
    project_id: str | None = Field(default=None, foreign_key="project.id", index=True, max_length=64)
    task: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _ts()
    started_at: datetime = _ts()
    last_activity: datetime = _ts()
    messages_processed: int = 0
    tasks_completed: int = 0
    reviews_performed: int = 0
    deploys_triggered: int = 0
    incidents_handled: int = 0
    memory_embeddings: int = 0
    memory_storage_mb: float = 0.0


class OrgCount(SQLModel, table=True):
    """How many agents and tasks an org holds, kept by database triggers (migration 0007) in the transaction of
    every insert and delete, so a page's total is a sum over a few rows instead of a COUNT over the table. On
    PostgreSQL each transaction adds to one of 64 slots (its transaction id picks it; migration 0022), so that
    concurrent writers of one org rarely wait on one row's lock; an org's count is the sum of its slots."""

    org_id: str = Field(primary_key=True, max_length=64)  # no FK: counting follows the rows, not the org
    slot: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    agents: int = 0
    tasks: int = 0


class Event(SQLModel, table=True):
    """Append-only history. No foreign keys: the record outlives what it describes."""

    __table_args__ = (
        Index("ix_event_org_agent", "org_id", "agent_id", "id"),
        Index("ix_event_task", "task_id", "id"),  # a task's (and so a session's) history, newest first
        Index("ix_event_session", "session_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(max_length=64)
    agent_id: str | None = Field(default=None, max_length=64)
    task_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)  # an event of a session itself (issue 17)
    category: str = Field(max_length=32)
    name: str = Field(max_length=64)
    actor: str = Field(max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    occurred_at: datetime = _ts()


class Task(SQLModel, table=True):
    """One coding job, run by an ephemeral `task` agent through a Runner. See core.tasks.service for its life."""

    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        Index("ux_task_request", "org_id", "request_key", unique=True),
        Index("ix_task_org_created", "org_id", "created_at", "id"),
        Index("ix_task_status", "status", "created_at"),
        Index("ix_task_org_status", "org_id", "status", "created_at", "id"),  # a status filter's page
        # the scheduler's jobs (issue 16): a digest's "finished since", a finished task's agent, the workspaces
        # clean-up has not pruned yet (each run reads what is left to do, not every task that ever finished)
        Index("ix_task_org_finished", "org_id", "status", "finished_at"),
        Index("ix_task_agent", "agent_id"),
        Index("ix_task_unpruned", "workspace_pruned_at", "finished_at", "id"),
        Index("ix_task_session", "session_id", "created_at"),
        Index("ix_task_org_owner", "org_id", "owner_id", "created_at"),  # a person's last activity (hub users)
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    name: str = Field(max_length=100)
    display_name: str = Field(max_length=200)
    owner_id: str = Field(max_length=200)  # a user id, or the actor of a token with no user
    owner_name: str = Field(max_length=200)
    agent_id: str | None = Field(default=None, max_length=64)  # no FK: the task outlives its agent
    project_id: str | None = Field(default=None, foreign_key="project.id", index=True, max_length=64)
    runtime: str = Field(max_length=32)  # a preset (claude, codex, opencode, aider, demo) or a custom one
    prompt: str
    repo: str | None = Field(default=None, max_length=500)
    base_branch: str | None = Field(default=None, max_length=200)
    work_branch: str | None = Field(default=None, max_length=200)
    workspace: str | None = Field(default=None, max_length=1000)
    base_sha: str | None = Field(default=None, max_length=64)
    autonomy_level: int = 1
    status: str = Field(max_length=16)
    state: str = Field(max_length=16)  # what the agent does: working, idle, complete, failed (core.tasks.state)
    state_message: str = Field(default="", max_length=500)
    state_at: datetime = _ts()
    outcome: str | None = Field(default=None, max_length=32)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    session_ref: str | None = Field(default=None, max_length=200)  # the agent CLI's own session id
    turns: int = 0
    pending_inputs: list[str] = Field(default_factory=list, sa_type=JSON)  # follow-ups waiting for a turn
    control: str | None = Field(default=None, max_length=16)  # stop / pause / resume / delete, for the runner
    runner_id: str | None = Field(default=None, max_length=200)  # the runner process that holds it
    pid: int | None = None
    # the runner that holds its turn ("local", "kubernetes", "docker") and its unit there: a remote turn is found
    # again by them after a worker restart (core.tasks.nodes)
    runner_kind: str | None = Field(default=None, max_length=20)
    runner_unit: str | None = Field(default=None, max_length=300)
    log_count: int = 0
    log_snapshot: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    snapshot_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    decision_count: int = 0
    auto_resolved_count: int = 0
    callback_hash: str | None = Field(default=None, max_length=64)  # SHA-256 of this turn's SHEPHERD_TASK_TOKEN
    # the inbound item that created it (a Slack event id, a GitHub delivery): processing it again finds this task
    request_key: str | None = Field(default=None, max_length=200)
    news_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # its threads last told
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # sched-remind (issue 16): the stall watchdog (core.tasks.watchdog). When the agent last printed (the output
    # flusher keeps it, with the line), the silence last warned about (its start), and the last day of waiting on
    # people a note was posted for: once per silence, once per day of waiting, whichever process runs the job.
    output_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    stall_warned_since: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    waiting_noted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # sched-clean (issue 16): when clean-up pruned its workspace (core.housekeeping); a follow-up is refused after
    workspace_pruned_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # issue 17: the session (workstream) it belongs to, at most one, and its budget. A limit reached pauses the
    # work and asks people to extend it (core.tasks.budget); None is no limit. `cost_usd` is what the agent
    # reported spending (summed over turns, where the preset can read it), `run_seconds` the wall time of its
    # finished turns (the running turn's is counted from `started_at`).
    session_id: str | None = Field(default=None, max_length=64)
    max_turns: int | None = None
    max_minutes: float | None = None
    max_cost: float | None = None
    cost_usd: float | None = None
    run_seconds: float = 0.0
    # issue 17 (CloudCoding's invoke): until its first claim, only this runner may take it (the one whose process
    # holds the task's one-use GitHub token in memory: core.runners.run_tokens); and its agent runs the preset's
    # cheaper model where it has one
    pinned_runner: str | None = Field(default=None, max_length=200)
    cheap_model: bool = False
    # issue 19 (cloud coding containers): the promotion its workspace starts from (instead of a repository), and
    # where its agent sees that workspace (a container's workspacePath; None: the runner's own place)
    promotion_id: str | None = Field(default=None, max_length=40)
    mount_path: str | None = Field(default=None, max_length=300)


class Promotion(SQLModel, table=True):
    """A bundle of files promoted to a workspace (core.containers.promotions): a git repository whose first commit
    is the snapshot, kept under the data directory's promotions/<org>/<id>."""

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    source_kind: str = Field(max_length=40)
    project_id: str = Field(max_length=200)
    snapshot_id: str | None = Field(default=None, max_length=200)
    preferred_agent: str | None = Field(default=None, max_length=32)
    workspace_path: str = Field(max_length=300)  # where an agent sees it: /workspace/<project>
    base_sha: str = Field(max_length=64)  # the snapshot's commit
    file_count: int = 0
    total_bytes: int = 0
    created_by: str = Field(max_length=200)
    created_at: datetime = _ts()


class CodingContainer(SQLModel, table=True):
    """An agent run on a promoted workspace (the Eliza dialect's coding container): its work is a task."""

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    task_id: str = Field(index=True, max_length=64)  # no foreign key: a deleted task leaves a `stopped` container
    promotion_id: str = Field(max_length=40)
    agent: str = Field(max_length=32)
    workspace_path: str = Field(max_length=300)
    file_count: int = 0
    total_bytes: int = 0
    created_by: str = Field(max_length=200)
    created_at: datetime = _ts()


class ContainerSync(SQLModel, table=True):
    """One sync of a container's workspace (push, pull or roundtrip), as it was answered."""

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    container_id: str = Field(index=True, max_length=40)
    direction: str = Field(max_length=16)
    status: str = Field(max_length=16)
    base_revision: str | None = Field(default=None, max_length=200)
    changed: int = 0
    deleted: int = 0
    patches: int = 0
    created_by: str = Field(max_length=200)
    created_at: datetime = _ts()


class Session(SQLModel, table=True):
    """A workstream that groups tasks (Agentuity's coder sessions; a chat thread that ran several tasks).
    Its fields follow the Agentuity hub's session object; core.sessions owns its life, and its loop state
    (workflow mode `loop`: iterations toward a goal) is written only by core.sessions.loop."""

    __table_args__ = (
        Index("ix_session_org_activity", "org_id", "last_activity_at", "id"),
        Index("ix_session_org_status", "org_id", "status", "last_activity_at"),
    )

    id: str = Field(primary_key=True, max_length=64)  # sess_<hex>
    org_id: str = Field(foreign_key="org.id", max_length=64)
    label: str = Field(default="", max_length=200)
    task: str = ""  # the primary prompt
    default_agent: str | None = Field(default=None, max_length=32)  # a runtime preset
    project_id: str | None = Field(default=None, max_length=64)
    repos: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)  # Agentuity repo objects; [0] primary
    visibility: str = Field(default="private", max_length=16)  # private | organization | collaborate
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    skills: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    meta: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # the API's `metadata`
    env: dict[str, str] = Field(default_factory=dict, sa_type=JSON)  # allowlisted names only, never secrets
    workflow_mode: str = Field(default="standard", max_length=16)  # standard | loop
    status: str = Field(default="active", max_length=16)
    origin: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # where it began: channel, address, …
    workspace_id: str | None = Field(default=None, max_length=200)
    owner_id: str = Field(max_length=200)
    owner_name: str = Field(max_length=200)
    # loop mode: the settings ({goal, maxIterations, autoContinue, allowDetached}) and the state
    loop: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    loop_status: str | None = Field(default=None, max_length=16)
    loop_iteration: int = 0
    loop_summary: str | None = None
    loop_next_action: str | None = Field(default=None, max_length=1000)
    loop_checkpoint_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # the budget its tasks get (core.tasks.budget)
    max_turns: int | None = None
    max_minutes: float | None = None
    max_cost: float | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    last_activity_at: datetime = _ts()
    archived_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TaskLog(SQLModel, table=True):
    """A task's log: what people sent it (input) and what the agent printed (output), in order. No foreign key to
    the task (migration 0023): on PostgreSQL it cost half of storing each output line; a task's rows go with it in
    the transaction that deletes it (core.tasks.rows.delete_rows). A row of output holds the lines of one read of the
    agent's pipe, and its id is its last line's (core.tasks.loglines, migration 0024)."""

    __table_args__ = (Index("ix_tasklog_task", "task_id", "id"),)

    # 64 bits on PostgreSQL, whose sequence steps by core.tasks.loglines.LINES_PER_ROW; SQLite's rowid is 64 bits
    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"),
                                                          primary_key=True))
    task_id: str = Field(max_length=64)
    time: datetime = _ts()
    type: str = Field(max_length=8)  # input | output
    content: str  # its lines joined by newlines (one line: as it came, newlines and all)
    lines: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # how many lines it holds


class RunnerNode(SQLModel, table=True):
    """A live runner process. Its heartbeat tells others whether the tasks it holds are still running."""

    id: str = Field(primary_key=True, max_length=200)
    host: str = Field(max_length=200)
    pid: int
    started_at: datetime = _ts()
    heartbeat_at: datetime = _ts()
    # issue 19: its runner, and why that runner cannot start turns now (None: it can), from `Runner.ready()` at
    # announce and heartbeat: what a web process, which has no runner, answers the container routes' 503 with
    runner_kind: str | None = Field(default=None, max_length=20)
    not_ready: str | None = Field(default=None, max_length=500)


class Confirmation(SQLModel, table=True):
    """One gated action on one target, waiting for people (or decided by policy). See core.autonomy.confirmations."""

    __table_args__ = (
        UniqueConstraint("org_id", "code"),
        Index("ix_confirmation_status", "status", "expires_at"),
        Index("ix_confirmation_task", "task_id", "id"),
        Index("ix_confirmation_remind", "remind_at"),  # sched-remind: the reminders job's due rows
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    code: str = Field(max_length=8)  # what people type: K7P2
    task_id: str | None = Field(default=None, max_length=64)  # no FK: the record outlives the task
    agent_id: str | None = Field(default=None, max_length=64)
    project_id: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=64)
    risk: str = Field(max_length=16)
    level: int
    origin: str = Field(max_length=16)  # policy (Shepherd's own gate), agent (`shepherd ask`), person (a command)
    summary: str = Field(max_length=1000)
    target: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # repo, branch, head, base, …
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    plan_hash: str = Field(max_length=64)
    requester_id: str = Field(max_length=200)  # who asked: a user id, or a token's actor
    requester_name: str = Field(max_length=200)
    quorum: int = 1
    approvals: int = 0
    status: str = Field(max_length=16)  # pending, approved, rejected, expired, void
    decided_by: str | None = Field(default=None, max_length=200)
    decided_via: str | None = Field(default=None, max_length=32)  # console, slack, rest, policy, expiry, …
    decided_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    reason: str | None = Field(default=None, max_length=1000)
    # what Shepherd does with an approved action of its own: waiting, running, done, failed
    execution: str | None = Field(default=None, max_length=16)
    executor: str | None = Field(default=None, max_length=200)  # the runner executing it
    result: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    # sched-remind (issue 16): approver reminders (core.autonomy.reminders). The next reminder's due time (None:
    # none is due, decided or no time left before the expiry) and how many were posted (the n of each copy's key
    # `confirmation:<id>:reminder:<n>`, which the decision edits too).
    remind_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    reminders: int = 0


class Vote(SQLModel, table=True):
    """One person's vote on a confirmation; the unique key makes a second click of the same person a no-op."""

    __table_args__ = (
        UniqueConstraint("confirmation_id", "voter_id"),
        Index("ix_vote_voter", "voter_id", "at"),  # a person's last activity (hub users)
    )

    id: int | None = Field(default=None, primary_key=True)
    confirmation_id: str = Field(foreign_key="confirmation.id", ondelete="CASCADE", max_length=64)
    voter_id: str = Field(max_length=200)
    voter_name: str = Field(max_length=200)
    via: str = Field(max_length=32)
    approve: bool
    comment: str = Field(default="", max_length=1000)
    at: datetime = _ts()


SUBSCRIPTION_ROWS = "task_id IS NULL AND project_id IS NOT NULL"  # a Thread that is a project's approval channel


class Thread(SQLModel, table=True):
    """Where a conversation lives: a console user, a Slack channel+thread_ts, a Telegram chat, a GitHub
    issue. Bound to a task (its progress and prompts go there) or to a project (its approval channel).

    A thread may begin with a message of Shepherd's (a slash command's task thread in Slack): until the outbox
    has posted that message (the row keyed `opening`), `address` is the place it is posted at, and nothing
    else addressed to the thread goes out; posting it gives the thread its real address."""

    __table_args__ = (
        Index("ix_thread_task", "task_id"),
        Index("ix_thread_project", "project_id"),
        # one approval channel per place and project: subscribing twice, or from two replicas at once, is one
        Index("ux_thread_subscription", "org_id", "channel", "address", "project_id", unique=True,
              sqlite_where=text(SUBSCRIPTION_ROWS), postgresql_where=text(SUBSCRIPTION_ROWS)),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    channel: str = Field(max_length=32)
    address: str = Field(max_length=500)
    task_id: str | None = Field(default=None, max_length=64)
    project_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)  # the session its tasks belong to (issue 17)
    opening: str | None = Field(default=None, max_length=200)  # the key of the message it begins with, unposted
    # an approval channel unsubscribed: new prompts no longer go there, decisions of the ones it shows still do
    ended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = _ts()


class Outbox(SQLModel, table=True):
    """A message that must go out, written in the transaction of the change it tells about."""

    __table_args__ = (Index("ix_outbox_due", "status", "channel", "next_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(max_length=64)
    thread_id: str = Field(foreign_key="thread.id", ondelete="CASCADE", max_length=64)
    channel: str = Field(max_length=32)  # the thread's, copied so that the due-index finds a channel's rows
    address: str = Field(max_length=500)  # the thread's when written; "" while the thread waits for its address
    key: str = Field(max_length=200)  # which message: confirmation:<id>, task:<id>
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # a core.channels.outbox.Message
    status: str = Field(default="pending", max_length=16)  # pending, sent, failed
    attempts: int = 0
    next_at: datetime = _ts()
    claimed_by: str | None = Field(default=None, max_length=200)
    claimed_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts()
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class MessageRef(SQLModel, table=True):
    """The platform's id of a message Shepherd posted (Slack ts, Telegram message_id), kept so that a
    later change (a decision) edits that message in place."""

    __table_args__ = (UniqueConstraint("thread_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    thread_id: str = Field(foreign_key="thread.id", ondelete="CASCADE", max_length=64)
    key: str = Field(max_length=200)
    ref: str = Field(max_length=500)
    created_at: datetime = _ts()


class Delivery(SQLModel, table=True):
    """The inbound delivery ledger: one row per platform item (a Slack event_id or interaction, a GitHub
    delivery, a Telegram update), written before the item is acknowledged. A redelivery of a done or
    in-hand item does nothing; a failed or abandoned one (its process died) is processed again."""

    __table_args__ = (
        UniqueConstraint("source", "key"),
        Index("ix_delivery_due", "status", "next_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32)  # slack, github, telegram
    key: str = Field(max_length=200)  # the platform's id, e.g. event:Ev08ABC
    org_id: str = Field(max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # enough to process it again
    status: str = Field(default="received", max_length=16)  # received, done, failed
    attempts: int = 0
    redeliveries: int = 0  # copies the platform sent again (and we did not act on)
    next_at: datetime = _ts()  # received: the lease of whoever processes it; failed: when to try again
    error: str | None = Field(default=None, max_length=1000)
    received_at: datetime = _ts()
    done_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class HeldRequest(SQLModel, table=True):
    """A request from an author the trust gate did not trust (core.people.trust), held until a trusted person
    says `ok-to-run` in the same thread: the inbound item it came in (its payload stays in the delivery ledger)
    and where it was said. Released once: a second `ok-to-run` starts nothing more."""

    __table_args__ = (
        UniqueConstraint("source", "key"),
        Index("ix_heldrequest_place", "org_id", "channel", "address"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(max_length=64)
    channel: str = Field(max_length=32)  # the thread it was said in
    address: str = Field(max_length=500)
    source: str = Field(max_length=32)  # the delivery it came in (core.channels.ledger)
    key: str = Field(max_length=200)
    author: str = Field(max_length=200)  # who asked, as the channel names them
    created_at: datetime = _ts()
    released_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    released_by: str | None = Field(default=None, max_length=200)


class LinkCode(SQLModel, table=True):
    """A one-time code that joins a person's identity in another channel to this user (core.people.links). Only
    its SHA-256 is kept; it is good once, until `expires_at`."""

    __table_args__ = (Index("ix_linkcode_org", "org_id", "expires_at"),)

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    user_id: str = Field(foreign_key="user.id", ondelete="CASCADE", max_length=64)  # who asked for it
    code_hash: str = Field(max_length=64)
    channel: str = Field(max_length=32)  # where it was asked for: told there when it is used
    address: str = Field(max_length=500)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    used_by: str | None = Field(default=None, max_length=200)  # the identity that joined, channel:external id


class LinkAttempt(SQLModel, table=True):
    """A `link <code>` that named no live code: counted per person, so that codes cannot be guessed."""

    __table_args__ = (Index("ix_linkattempt_user", "org_id", "user_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(max_length=64)
    user_id: str = Field(max_length=64)  # no FK: the count outlives a user joined into another
    at: datetime = _ts()


# --- sched-digest (issue 16): a place's digest schedule, and the one-off timer of its next post -----------------


class Digest(SQLModel, table=True):
    """A place's digest (core.digests): its cron schedule and the due time of its next post (`next_fire_at`, the
    one-off timer a worker claims with FOR UPDATE SKIP LOCKED). One per place (`digest off` deletes it). `seen`
    is what the last digest showed, so that a digest with nothing new is not posted; `reported_until` is where
    the last one's "finished since" ended, so that no finish is reported twice or missed."""

    __table_args__ = (
        UniqueConstraint("org_id", "channel", "address"),
        Index("ix_digest_due", "next_fire_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", max_length=64)
    channel: str = Field(max_length=32)  # the place, as `subscribe` names it (CommandContext.place)
    address: str = Field(max_length=500)
    project_id: str | None = Field(default=None, max_length=64)  # a project-scoped place sees only its project
    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)  # the zone its cron reads in (SHEPHERD_TIMEZONE when set)
    created_by: str = Field(max_length=200)  # the actor who set it
    created_at: datetime = _ts()
    next_fire_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    last_fired_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_posted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    reported_until: datetime = _ts()
    seen: list[str] = Field(default_factory=list, sa_type=JSON)
# sched-core (issue 16): the scheduler's record of each job's runs.
class JobRun(SQLModel, table=True):
    """One run of a scheduled job at one fire time (core.schedule.runs), written BEFORE the job's work: the unique
    (job, fire_time) is how a second process, or a restart, learns the run is taken. A run with `finished_at` unset
    started and never finished (its process died mid-way). Not tenant data: the jobs are the deployment's."""

    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("job", "fire_time"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=64)
    fire_time: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    holder: str = Field(max_length=300)  # host:pid of the process that ran it
    started_at: datetime = _ts()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    ok: bool | None = Field(default=None)
    result: str | None = Field(default=None, max_length=500)
