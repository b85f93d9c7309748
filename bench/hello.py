"""The yardstick: a bare aiohttp hello-world, one process, the same event loop and server as Shepherd.

    python bench/hello.py PORT

Run by bench/run.py beside the real server; it answers `GET /` with a small JSON body.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def hello(_request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
