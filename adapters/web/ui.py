"""What a dashboard page handler gets and gives: `UiRequest` (who is signed in, the core, the form already
CSRF-checked) and `UiRoute` (one row of a page module's `ROUTES`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from adapters.web.render import html, render_text
from core.errors import ValidationFailed
from core.people.access import Principal, Role, Scope, role_for_scopes
from core.shepherd import Shepherd

# the sections in the header, in order: (path, label)
NAV = (("/ui/", "Overview"), ("/ui/tasks", "Tasks"), ("/ui/approvals", "Approvals"), ("/ui/agents", "Agents"),
       ("/ui/sessions", "Sessions"))


@dataclass
class UiRequest:
    http: web.Request
    principal: Principal
    shepherd: Shepherd
    csrf: str  # the token every form of this session carries
    form: MultiDictProxy[str | bytes | bytearray | FileField] | None = None  # a POST's fields, after the CSRF check

    def path(self, name: str) -> str:
        return self.http.match_info[name]

    def query(self, name: str, default: str = "") -> str:
        return self.http.rel_url.query.get(name, default).strip()

    def field(self, name: str, default: str = "") -> str:
        """A form field as sent (stripped); `default` when absent."""
        if self.form is None:
            return default
        value = self.form.get(name, default)
        if not isinstance(value, str):
            raise ValidationFailed(f"{name} must be text", code="INVALID_FIELD")
        return value.strip()

    @property
    def role(self) -> Role:
        return role_for_scopes(self.principal.scopes)

    def can(self, scope: Scope) -> bool:
        return self.principal.can(scope)

    def context(self, **extra: Any) -> dict[str, Any]:
        """What every template sees: who is signed in, their CSRF token, the header's sections."""
        return {"principal": self.principal, "role": self.role.label, "csrf": self.csrf, "nav": NAV,
                "here": self.http.path, "can_write": self.can(Scope.WRITE), "can_approve": self.can(Scope.APPROVE),
                **extra}

    def render(self, template: str, *, status: int = 200, **extra: Any) -> web.Response:
        return html(render_text(self.http.app, template, **self.context(**extra)), status=status)

    def fragment(self, template: str, **extra: Any) -> str:
        """A part of a page, rendered for a live update (the same template the page includes)."""
        return render_text(self.http.app, template, **self.context(**extra))


def whole_number(text: str, most: int, *, code: str, message: str) -> int:
    """A query's count (a page, a limit) from 1 to `most`; `message` when it is none ("²" is a digit to
    str.isdigit() and no number to int(): isdecimal)."""
    if not text.isdecimal() or not 1 <= int(text) <= most:
        raise ValidationFailed(message, code=code)
    return int(text)


def see_other(location: str) -> web.Response:
    """After a form: go to `location` (303, so a reload does not post again)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


Page = Callable[[UiRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class UiRoute:
    method: str
    path: str
    handler: Page
    name: str = ""
    # a form that may be sent by a viewer too is still CSRF-checked; `stream` routes answer Server-Sent Events
    stream: bool = False
    patterns: dict[str, str] = field(default_factory=dict)
