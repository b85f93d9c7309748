"""Operations endpoints: liveness, readiness (checks the database, says who leads), Prometheus metrics, the API
description."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field

from adapters.rest.framework import METRICS, ApiModel, ApiRequest, Route
from core.errors import Unavailable

OPENAPI = web.AppKey("openapi_document", bytes)


class Health(ApiModel):
    status: str


class Ready(ApiModel):
    status: str
    database: str
    leader: str | None = Field(None, description="the process that runs the scheduled jobs, host:pid (null: none)")
    leads: bool = Field(False, description="whether this process is the leader")


async def healthz(req: ApiRequest) -> Health:
    return Health(status="ok")


async def readyz(req: ApiRequest) -> Ready:
    try:
        await req.shepherd.db.ping()
    except Exception as exc:  # any failure to reach the store means "not ready", with the reason
        raise Unavailable(f"database unreachable: {type(exc).__name__}", code="NOT_READY") from None
    leadership = req.shepherd.scheduling.leadership
    try:
        leader = await leadership.leader()
    except Exception:  # who leads is information, not readiness: the database answered
        leader = None
    return Ready(status="ready", database=req.shepherd.db.dialect, leader=leader, leads=leadership.leads)


async def metrics(req: ApiRequest) -> web.Response:
    body = generate_latest(req.http.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(req: ApiRequest) -> web.Response:
    return web.Response(body=req.http.app[OPENAPI], content_type="application/json")


_TAG = "operations"
ROUTES = [
    Route("GET", "/healthz", healthz, "Liveness: the process answers", response=Health, auth=False, tag=_TAG,
          operation_id="healthz"),
    Route("GET", "/readyz", readyz, "Readiness: the database answers", response=Ready, errors=(503,),
          auth=False, tag=_TAG, operation_id="readyz"),
    Route("GET", "/metrics", metrics, "Prometheus metrics", auth=False, tag=_TAG, produces="text/plain",
          operation_id="metrics"),
    Route("GET", "/openapi.json", openapi, "This API's OpenAPI document", auth=False, tag=_TAG,
          produces="application/json", operation_id="openapi"),
]
