"""The template environment: autoescape on, a few filters for times and sizes, and the headers of every page."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from core.clock import as_utc, utcnow

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Only Shepherd's own scripts, styles and streams; no framing; forms post only here. Inline SVG charts are markup,
# not scripts or styles, so they need nothing more.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # pages show one person's org: no shared cache keeps them
}


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago (or, for a time to come, in how long), in the largest whole unit: `3 min ago`, `in 2 h`."""
    if value is None:
        return "—"
    delta = ((now or utcnow()) - as_utc(value)).total_seconds()
    future = delta < 0
    seconds = abs(delta)
    if seconds < 60:
        text = f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 86400:
        text = f"{int(seconds // 3600)} h"
    else:
        text = f"{int(seconds // 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def when(value: datetime | None) -> str:
    """A time as people read it: `14:05 UTC` today, `Nov 28 14:05 UTC` before."""
    if value is None:
        return "—"
    at = as_utc(value)
    return at.strftime("%H:%M UTC") if at.date() == utcnow().date() else at.strftime("%b %d %H:%M UTC")


def iso(value: datetime | None) -> str:
    return as_utc(value).isoformat(timespec="seconds") if value is not None else ""


def duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(ago=ago, when=when, iso=iso, duration=duration)
    return env


ENV = web.AppKey("ui_templates", jinja2.Environment)


def render_text(app: web.Application, template: str, **context: Any) -> str:
    return app[ENV].get_template(template).render(**context)


def html(body: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={**PAGE_HEADERS, **(headers or {})})
