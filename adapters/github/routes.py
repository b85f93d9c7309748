"""The routing table of GitHub webhooks: every (event, action) Shepherd acts on, in one place, with the reader
that turns its payload into an item (adapters/github/items.py). Like gidgethub's Router, the table is data; unlike
it, one reader per (event, action), so a payload is read once and means one thing.

The GitHub App manifest (manifests/github-app.yaml, adapters/github/manifest.py) is derived from this table: the
events it subscribes to and the permissions they need. An event missing here is acknowledged, recorded in the
delivery ledger and left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.github import items
from adapters.github.items import Item

Reader = Callable[[str, dict[str, Any]], Item | None]


@dataclass(frozen=True)
class Route:
    event: str
    actions: frozenset[str]
    reader: Reader
    permission: str  # the App permission the event needs (its manifest's `default_permissions` key)


ROUTES: tuple[Route, ...] = (
    # comment commands: `/shepherd …` or `@shepherd …` at the start of a line (an edit is not read again)
    Route("issue_comment", frozenset({"created"}), items.issue_comment, "issues"),
    Route("pull_request_review", frozenset({"submitted"}), items.review, "pull_requests"),
    Route("pull_request_review_comment", frozenset({"created"}), items.review_comment, "pull_requests"),
    # triggers
    Route("issues", frozenset({"labeled"}), items.labelled, "issues"),
    Route("pull_request", frozenset({"opened", "reopened", "ready_for_review"}), items.pull_opened, "pull_requests"),
    Route("check_run", frozenset({"completed"}), items.check_run, "checks"),
    Route("check_suite", frozenset({"completed"}), items.check_suite, "checks"),
    Route("workflow_run", frozenset({"completed"}), items.workflow_run, "actions"),
)
_TABLE: Mapping[tuple[str, str], Route] = {(r.event, a): r for r in ROUTES for a in r.actions}
EVENTS: tuple[str, ...] = tuple(sorted({r.event for r in ROUTES}))


def route(event: str, payload: dict[str, Any], key: str) -> Item | None:
    """The item of a delivery, or None when Shepherd leaves it alone."""
    found = _TABLE.get((event, payload.get("action") if isinstance(payload.get("action"), str) else ""))
    return found.reader(key, payload) if found is not None else None
