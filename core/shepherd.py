"""Shepherd's core as one object: what every channel and API talks to."""

from __future__ import annotations

from pathlib import Path

from core.agents import Agents
from core.autonomy.boards import ApprovalBoards
from core.autonomy.confirmations import Confirmations
from core.autonomy.policy import PolicyStore
from core.autonomy.questions import Questions
from core.autonomy.reminders import Reminders
from core.channels.ledger import Ledger
from core.channels.progress import Progress
from core.channels.subscriptions import Subscriptions
from core.containers.containers import Containers
from core.containers.promotions import Promotions
from core.containers.sync import Syncs
from core.digests.service import Digests
from core.housekeeping import Housekeeping, Retention
from core.overview import Overviews
from core.people.directory import Directory
from core.people.links import Links
from core.people.orgs import Orgs
from core.people.tokens import Tokens
from core.people.users import Users
from core.people.web_sessions import DEFAULT_TTL_S, WebSessions
from core.projects import Projects
from core.runners.presets import AgentCatalog
from core.runners.repos import RepoRules
from core.runners.run_tokens import RunTokens
from core.schedule.service import Scheduling
from core.sessions.history import SessionHistory
from core.sessions.invoke import Invocations
from core.sessions.loop import Loops
from core.sessions.service import Sessions
from core.store.db import Database
from core.store.events import Events
from core.tasks.follow import Pulse
from core.tasks.service import Tasks
from core.tasks.watchdog import IDLE_TIMEOUT_S, WAITING_NOTE_S, Watchdog
from core.wakeup import Wakeup


class Shepherd:
    """The core's services, wired together once. The wake-ups are how a change in this process reaches the
    service that acts on it at once (others find it at their next poll): `runs_due` for the task runner (a task
    to claim, a control, an approved action), `outbox_due` for the outbox dispatcher."""

    def __init__(
        self, db: Database, *, catalog: AgentCatalog | None = None, default_agent: str = "claude",
        workspace_root: Path | None = None, policies: PolicyStore | None = None, repos: RepoRules | None = None,
        outbox_due: Wakeup | None = None, runs_due: Wakeup | None = None, timezone: str = "UTC",
        digest_always: bool = False, remind_after_s: float = 600.0,
        idle_timeout_s: float = IDLE_TIMEOUT_S, stall_warn_s: float | None = None,
        waiting_note_s: float = WAITING_NOTE_S, retention: Retention | None = None,
        agent_env: tuple[str, ...] = (), web_session_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.db = db
        self.catalog = catalog or AgentCatalog()
        self.runs_due = runs_due or Wakeup()
        self.outbox_due = outbox_due or Wakeup()
        self.confirmations = Confirmations(db, policies, runs_due=self.runs_due, remind_after_s=remind_after_s)
        self.questions = Questions(db, self.confirmations)
        self.approval_boards = ApprovalBoards(db)  # the dashboard's approvals page
        self.tasks = Tasks(db, self.confirmations, runs_due=self.runs_due, runtimes=self.catalog.names,
                           default_runtime=default_agent, workspace_root=workspace_root, repos=repos)
        self.orgs = Orgs(db)
        self.agents = Agents(db)
        self.projects = Projects(db)
        self.tokens = Tokens(db)
        self.web_sessions = WebSessions(db, self.tokens, ttl_s=web_session_s)  # the dashboard's sign-ins (issue 20)
        # where people reach this deployment's web server (the `dashboard` command's links); set by the process
        self.public_url: str | None = None
        self.users = Users(db)
        self.links = Links(db, self.confirmations)
        self.subscriptions = Subscriptions(db)
        self.events = Events(db)
        self.ledger = Ledger(db)
        self.progress = Progress(db)
        self.overview = Overviews(db)
        self.digests = Digests(db, timezone=timezone, always=digest_always)
        # the scheduler's jobs of sched-remind (issue 16): `reminders` and `stalls`
        self.reminders = Reminders(db, self.confirmations)
        self.watchdog = Watchdog(db, idle_timeout_s=idle_timeout_s, warn_s=stall_warn_s, waiting_note_s=waiting_note_s)
        self.housekeeping = Housekeeping(db, self.tasks, retention)  # the `cleanup` job (issue 16)
        self.scheduling = Scheduling(db)
        self.loops = Loops(db, self.tasks, self.questions)  # a loop session's iterations toward its goal
        # workstreams that group tasks (issue 17); their env may set what agents are passed (SHEPHERD_AGENT_ENV)
        self.sessions = Sessions(db, self.tasks, agent_env=agent_env, loops=self.loops)
        # issue 17's live streams: this process's runner pulses when it stored output (followers read at once), and
        # one-use GitHub tokens of CloudCoding's invoke live here, in memory only
        self.output_written = Pulse()
        self.run_tokens = RunTokens()
        self.invocations = Invocations(db, self.tasks, self.sessions, self.run_tokens, self.catalog,
                                       self.output_written)
        self.history = SessionHistory(db)  # a session's replay and event history (issue 17)
        self.directory = Directory(db)  # the org's people to search (the hub's users, issue 17)
        # Eliza's cloud coding containers (issue 19): promoted bundles live beside the workspaces, in the data directory
        self.promotions = Promotions(db, workspace_root.parent / "promotions" if workspace_root is not None else None)
        self.containers = Containers(db, self.tasks, self.promotions)
        self.syncs = Syncs(db, self.promotions, workspace_root)  # a container's workspace, pushed and pulled
