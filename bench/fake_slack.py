"""The test suite's loopback Slack Web API (tests/fakes/slack_api.py) in a process of its own, for
bench/slack_ack.py: Shepherd posts its answers here, and the bench asks how many arrived and when.

    .venv/bin/python bench/fake_slack.py PORT_FILE

Writes "API_PORT BENCH_PORT" to PORT_FILE once both listen. The Web API (bot token xoxb-bench, the people
U0000-U0019 known to users.info) is on API_PORT; GET /answers on BENCH_PORT says how many answers were
posted (calls of chat.postMessage and chat.postEphemeral) and the CLOCK_MONOTONIC time of the first
and the last (time.monotonic(), which every process on the machine shares).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fakes.slack_api import FakeSlack  # noqa: E402

ANSWERS = ("chat.postMessage", "chat.postEphemeral")


async def main(port_file: Path) -> None:
    fake = FakeSlack(bot_token="xoxb-bench")
    fake.users.update({f"U{i:04d}": f"user{i}" for i in range(20)})
    seen = 0
    first = last = 0.0
    count = 0

    async def answers(_request: web.Request) -> web.Response:
        nonlocal seen, first, last, count
        calls = fake.calls
        for call in calls[seen:]:
            if call.method in ANSWERS:
                count += 1
                first = first or call.at
                last = call.at
        seen = len(calls)
        return web.json_response({"count": count, "first": first, "last": last, "calls": seen,
                                  "now": time.monotonic()})

    await fake.start()
    app = web.Application()
    app.router.add_get("/answers", answers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api_port = fake.base_url.rsplit(":", 1)[1]
    port_file.write_text(f"{api_port} {runner.addresses[0][1]}\n")  # noqa: ASYNC240 (once, at start)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
