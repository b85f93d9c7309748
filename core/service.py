"""Shepherd's core as one object: what every channel and API talks to."""

from __future__ import annotations

from pathlib import Path

from core.agents import Agents
from core.confirmations import Confirmations
from core.db import Database
from core.events import Events
from core.ledger import Ledger
from core.orgs import Orgs
from core.policy import PolicyStore
from core.progress import Progress
from core.projects import Projects
from core.repos import RepoRules
from core.runners.presets import AgentCatalog
from core.tasks import Tasks
from core.tokens import Tokens
from core.users import Users
from core.wakeup import Wakeup


class Shepherd:
    def __init__(
        self, db: Database, *, catalog: AgentCatalog | None = None, default_agent: str = "claude",
        workspace_root: Path | None = None, policies: PolicyStore | None = None, repos: RepoRules | None = None,
        outbox_due: Wakeup | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog or AgentCatalog()
        self.tasks = Tasks(db, runtimes=self.catalog.names)
        self.tasks.default_runtime = default_agent
        self.tasks.workspace_root = workspace_root
        self.tasks.repos = repos or RepoRules()
        self.orgs = Orgs(db)
        self.agents = Agents(db)
        self.projects = Projects(db)
        self.tokens = Tokens(db)
        self.users = Users(db)
        self.events = Events(db)
        self.confirmations = Confirmations(db, policies)
        self.ledger = Ledger(db)
        self.progress = Progress(db)
        # rows just written go out now, not at the next poll, when an outbox dispatcher in this process awaits it
        # (it is given this wake-up, bot/outbox.py)
        self.outbox_due = outbox_due or Wakeup()
        self.tasks.confirmations = self.confirmations
