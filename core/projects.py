"""Projects: a named repository (owner/name) with a default branch, inside one org."""

from __future__ import annotations

import re

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, NotFound, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.store.db import Database
from core.store.events import record
from core.store.models import Project as Project  # the record this service returns
from core.textcheck import name_text

PROJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
REPO = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$"
_NAME = re.compile(PROJECT_NAME)
_REPO = re.compile(REPO)
# git check-ref-format, the parts that matter for a name typed by a person (control characters included).
_BRANCH_BAD = re.compile(r"(^[-/.])|(\.\.)|([\s\x00-\x1f\x7f~^:?*\[\\])|(@\{)|(/$)|(\.lock$)|(\.$)|(//)")


def check_repo(repo: str) -> str:
    if not _REPO.match(repo):
        raise ValidationFailed(f"repo must be owner/name (like acme/api), got {repo!r}", code="INVALID_REPO")
    return repo


def check_branch(branch: str) -> str:
    if not branch or len(branch) > 200 or _BRANCH_BAD.search(branch):
        raise ValidationFailed(f"{branch!r} is not a valid branch name", code="INVALID_BRANCH")
    return branch


async def find_project(session: AsyncSession, org_id: str, ref: str) -> Project | None:
    """A project of the org by id, else by name: the one way every channel and dialect names a project
    (the console speaks in names, the CodeSpar seed's own example sends `"projectId": "proj-001"`)."""
    ref = (ref or "").strip()
    if not ref:
        return None
    project = await session.get(Project, ref)
    if project is not None and project.org_id == org_id:
        return project
    return (await session.exec(select(Project).where(Project.org_id == org_id, Project.name == ref))).first()


async def resolve_project(session: AsyncSession, org_id: str, ref: str) -> Project:
    """`find_project`, or 404 PROJECT_NOT_FOUND."""
    project = await find_project(session, org_id, ref)
    if project is None:
        raise NotFound(f"project {ref!r} not found", code="PROJECT_NOT_FOUND")
    return project


class Projects:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, principal: Principal, *, name: str, repo: str | None = None, default_branch: str | None = None
    ) -> Project:
        principal.require(Scope.WRITE, "creating a project")
        name = name_text((name or "").strip(), "the project name")
        if not _NAME.match(name):
            raise ValidationFailed(
                "a project name is 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit",
                code="INVALID_NAME",
            )
        repo = check_repo(repo.strip()) if repo else None
        branch = check_branch((default_branch or "main").strip())
        async with self.db.write() as session:
            clash = (
                await session.exec(
                    select(Project.id).where(Project.org_id == principal.org_id, Project.name == name)
                )
            ).first()
            if clash:
                raise Conflict(f"a project named {name!r} already exists ({clash})", code="PROJECT_EXISTS")
            project = Project(
                id=new_id("proj"), org_id=principal.org_id, name=name, repo=repo, default_branch=branch
            )
            session.add(project)
            await record(
                session, principal, "project", "project.created",
                payload={"projectId": project.id, "name": name, "repo": repo, "defaultBranch": branch},
            )
        return project

    async def list(self, principal: Principal) -> list[Project]:
        principal.require(Scope.READ, "listing projects")
        async with self.db.read() as session:
            rows = await session.exec(
                select(Project).where(Project.org_id == principal.org_id).order_by(col(Project.created_at))
            )
            return list(rows)

    async def get(self, principal: Principal, ref: str) -> Project:
        """A project by id or by name."""
        principal.require(Scope.READ, "reading a project")
        async with self.db.read() as session:
            return await resolve_project(session, principal.org_id, ref)

    async def of_repo(self, org_id: str, repo: str, *, default_branch: str = "main",
                      level: int | None = None) -> Project:
        """The project a repository Shepherd hears from belongs to (its oldest, if several name it); on first
        contact a new one, named after the repository, with its project agent at `level` (default: the
        agents' default, 1: Suggest). Safe to call from two processes at once: one project is made."""
        from core.agents import DEFAULT_LEVEL, AgentStatus  # core.agents reads projects: imported when used
        from core.clock import utcnow
        from core.store.models import Agent

        repo = check_repo(repo)
        branch = check_branch(default_branch or "main")
        for attempt in range(2):
            async with self.db.read() as session:
                found = (await session.exec(select(Project).where(Project.org_id == org_id, Project.repo == repo)
                                            .order_by(col(Project.created_at)).limit(1))).first()
            if found is not None:
                return found
            try:
                async with self.db.write() as session:
                    from core.people.orgs import ensure_org
                    from core.store.models import Org

                    await ensure_org(session, org_id)
                    # first contacts of one org, one at a time: the org's row is locked (PostgreSQL; SQLite's
                    # writers are one at a time already), then the repository looked for again. Without it, two
                    # processes that both read "no project yet" made two: the second found the short name taken
                    # by the first and fell back to owner-name (the name is unique, the repository is not)
                    await session.exec(select(Org.id).where(Org.id == org_id).with_for_update())
                    made = (await session.exec(select(Project).where(Project.org_id == org_id, Project.repo == repo)
                                               .order_by(col(Project.created_at)).limit(1))).first()
                    if made is not None:
                        return made
                    name = repo.split("/", 1)[1]
                    if (await session.exec(select(Project.id).where(Project.org_id == org_id,
                                                                    Project.name == name))).first():
                        name = repo.replace("/", "-")  # another project took the short name
                    project = Project(id=new_id("proj"), org_id=org_id, name=name, repo=repo,
                                      default_branch=branch)
                    session.add(project)
                    await session.flush()  # the agent's foreign key needs the project's row first
                    now = utcnow()
                    agent = Agent(id=new_id("agent-proj"), org_id=org_id, name=name, type="project",
                                  status=AgentStatus.ACTIVE, autonomy_level=DEFAULT_LEVEL if level is None else level,
                                  project_id=project.id, created_at=now, started_at=now, last_activity=now)
                    session.add(agent)
                    system = Principal.system(org_id, "shepherd")
                    await record(session, system, "project", "project.created",
                                 payload={"projectId": project.id, "name": name, "repo": repo, "defaultBranch": branch,
                                          "from": "first contact"})
                    await record(session, system, "agent", "agent.created", agent_id=agent.id,
                                 payload={"name": name, "type": "project", "autonomyLevel": agent.autonomy_level,
                                          "projectId": project.id})
                return project
            except Conflict:  # made at the same moment by another process (or a name clash): read again
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def agent_level(self, org_id: str, project_id: str) -> int:
        """The autonomy level of the project's agent: how far what its webhooks trigger may go without asking."""
        from core.agents import DEFAULT_LEVEL
        from core.store.models import Agent

        async with self.db.read() as session:
            level = (await session.exec(select(Agent.autonomy_level).where(
                Agent.org_id == org_id, Agent.project_id == project_id, Agent.type == "project"))).first()
        return DEFAULT_LEVEL if level is None else int(level)
