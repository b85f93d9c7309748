"""One GitHub API call, bounded in time, and every way it can fail read once: the forge, the channel and the
credentials each turn a `GitHubCallFailed` into their own error (ForgeError, DeliveryError) without reading
gidgethub's exceptions again.

GitHub has two rate limits: the primary one (403 or 429 with `x-ratelimit-remaining: 0`, gidgethub's
RateLimitExceeded, until `x-ratelimit-reset`) and the secondary one (403 or 429 with `Retry-After`, while the
hourly quota still has room). Both come out as status 429 with `retry_after`: the caller waits, holding nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import gidgethub

from core.errors import ShepherdError

T = TypeVar("T")
TIMEOUT_S = 30.0
MESSAGE_MAX = 500
MASK = "********"


class GitHubCallFailed(ShepherdError):
    """A GitHub API call failed. `host_status` is GitHub's HTTP status (0: it could not be reached; 429: a rate
    limit, primary or secondary); transient when trying again later can help."""

    code = "GITHUB_CALL_FAILED"
    status = 502

    def __init__(self, message: str, host_status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after,
                         transient=host_status == 0 or host_status == 429 or host_status >= 500)
        self.host_status = host_status


def clean(text: str, secrets: Iterable[str] = ()) -> str:
    """GitHub's words, bounded, with every secret blanked should an error ever echo one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text[:MESSAGE_MAX] or "no message"


def seconds(value: str | None) -> float | None:
    """A Retry-After in seconds (GitHub sends whole seconds), or None when absent or unreadable."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


async def call(doing: str, request: Awaitable[T], *, secrets: Iterable[str] = (),
               timeout: float = TIMEOUT_S) -> T:  # noqa: ASYNC109 (bounds one awaitable given)
    """Await one request, bounded by `timeout`; every failure leaves as a GitHubCallFailed saying what was being
    done (`doing`) and GitHub's own words, never a secret."""
    try:
        return await asyncio.wait_for(request, timeout=timeout)
    except gidgethub.RateLimitExceeded as exc:
        reset = getattr(exc.rate_limit, "reset_datetime", None)
        wait = max(1.0, (reset - datetime.now(UTC)).total_seconds()) if reset is not None else None
        until = f" until {reset:%H:%M:%S} UTC" if reset is not None else ""
        raise GitHubCallFailed(f"{doing}: GitHub's rate limit is used up{until} ({clean(str(exc), secrets)})",
                               429, retry_after=wait) from None
    except gidgethub.HTTPException as exc:
        status, text = int(exc.status_code), clean(str(exc), secrets)
        retry_after = exc.headers.get("retry-after")
        if status in (403, 429) and (retry_after or "rate limit" in text.lower()):
            # A secondary (abuse) limit: GitHub says 403 or 429 and when to come back; either way, wait and retry.
            wait = f", retry after {retry_after} s" if retry_after else ""
            raise GitHubCallFailed(f"{doing}: GitHub's secondary rate limit{wait}: {text}", 429,
                                   retry_after=seconds(retry_after)) from None
        raise GitHubCallFailed(f"{doing}: GitHub answered {status}: {text}", status) from None
    except TimeoutError:
        raise GitHubCallFailed(f"{doing}: GitHub did not answer within {timeout:g} s", 0) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise GitHubCallFailed(f"{doing}: GitHub could not be reached ({type(exc).__name__})", 0) from None
    except gidgethub.GitHubException as exc:
        raise GitHubCallFailed(f"{doing}: {clean(str(exc), secrets)}", 0) from None
