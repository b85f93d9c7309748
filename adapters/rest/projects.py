"""Projects: /api/projects (Shepherd's own; the seeds embed a project in agent details)."""

from __future__ import annotations

from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, FieldError, Route
from core.clock import iso
from core.projects import PROJECT_NAME, REPO, Project


class ProjectOut(ApiModel):
    id: str
    name: str
    repo: str | None = None
    default_branch: str
    channels: list[str]
    created_at: str


class CreateProject(ApiModel):
    name: str = Field(pattern=PROJECT_NAME)
    repo: str | None = Field(None, pattern=REPO, description="GitHub repository, owner/name")
    default_branch: str = Field("main", min_length=1, max_length=200)


def project_out(p: Project) -> ProjectOut:
    return ProjectOut(
        id=p.id, name=p.name, repo=p.repo, default_branch=p.default_branch, channels=list(p.channels),
        created_at=iso(p.created_at),
    )


async def list_projects(req: ApiRequest) -> list[ProjectOut]:
    return [project_out(p) for p in await req.shepherd.projects.list(req.principal)]


async def get_project(req: ApiRequest) -> ProjectOut:
    return project_out(await req.shepherd.projects.get(req.principal, req.path("id")))


async def create_project(req: ApiRequest) -> ProjectOut:
    body: CreateProject = req.body
    project = await req.shepherd.projects.create(
        req.principal, name=body.name, repo=body.repo, default_branch=body.default_branch
    )
    return project_out(project)


_TAG = "projects"
ROUTES = [
    Route("GET", "/api/projects", list_projects, "List projects", response=list[ProjectOut],
          errors=(401, 403), tag=_TAG, operation_id="listProjects"),
    Route("POST", "/api/projects", create_project, "Create a project", response=ProjectOut, status=201,
          body=CreateProject, errors=(400, 401, 403, 409, 413), tag=_TAG, operation_id="createProject",
          field_errors={
              "repo": FieldError("INVALID_REPO", "repo must be owner/name, like acme/api"),
              "name": FieldError("INVALID_NAME", "a project name is 1-100 letters, digits, '.', '-' or '_', "
                                                 "starting with a letter or digit"),
          }),
    Route("GET", "/api/projects/{id}", get_project, "A project, by id or name", response=ProjectOut,
          errors=(401, 403, 404), tag=_TAG, operation_id="getProject"),
]
