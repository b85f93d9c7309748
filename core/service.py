"""Shepherd's core as one object: what every channel and API talks to."""

from __future__ import annotations

from core.agents import Agents
from core.db import Database
from core.events import Events
from core.orgs import Orgs
from core.projects import Projects
from core.tokens import Tokens
from core.users import Users


class Shepherd:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.orgs = Orgs(db)
        self.agents = Agents(db)
        self.projects = Projects(db)
        self.tokens = Tokens(db)
        self.users = Users(db)
        self.events = Events(db)
