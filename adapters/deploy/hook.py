"""core.autonomy.actions.DeployHook with aiohttp: a JSON POST to the deploy URL a project's policy names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from core.autonomy.actions import ActionError

TIMEOUT_S = 60.0
ANSWER_CHARS = 500


class HttpDeployHook:
    def __init__(self, session: aiohttp.ClientSession, *, timeout_s: float = TIMEOUT_S) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def post(self, url: str, facts: Mapping[str, Any], *, key: str) -> tuple[int, str]:
        try:
            async with self.session.post(url, json=dict(facts), headers={"Idempotency-Key": key},
                                         timeout=self.timeout) as resp:
                return resp.status, (await resp.text())[:ANSWER_CHARS]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ActionError(f"the deploy hook could not be reached: {type(exc).__name__}", transient=True) from None
