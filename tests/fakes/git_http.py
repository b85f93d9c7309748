"""A git host on loopback over git's "dumb" HTTP protocol: plain files of bare repositories, served by the
standard library. It records every request's headers, and answers 401 under /private/ (so that a client
with credentials at hand would offer them)."""

from __future__ import annotations

import functools
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


class _Handler(SimpleHTTPRequestHandler):
    host: GitHttp

    def do_GET(self) -> None:
        self.host.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path.startswith("/private/"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class GitHttp:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[dict[str, str]] = []
        handler = type("Handler", (_Handler,), {"host": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    def publish(self, bare: Path) -> None:
        """Make a bare repository under `root` fetchable over dumb HTTP."""
        subprocess.run(["git", "update-server-info"], cwd=bare, check=True)

    def __enter__(self) -> GitHttp:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
