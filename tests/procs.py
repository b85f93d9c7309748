"""Running `shepherd` as a user does: real processes in a directory of their own, talked to over HTTP."""

from __future__ import annotations

import codecs
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SHEPHERD = str(Path(sys.executable).parent / "shepherd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Home:
    """A working directory with its own settings, as a new user would have."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_")}
        self.env.update({"SHEPHERD_PORT": str(self.port), "SHEPHERD_LOG_LEVEL": "INFO", **env})

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([SHEPHERD, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"shepherd {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, command: str = "serve") -> subprocess.Popen[str]:
        proc = subprocess.Popen([SHEPHERD, command], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if command != "worker":
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if self.http("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not become ready in 30 s")

    def token(self, *scopes: str, user: str | None = None) -> str:
        """A new token's secret; with `user`, it acts for that person (only a person approves or rejects)."""
        who = ["--user", user] if user else []
        out = self.run("token", "create", *who, "--scopes", *(scopes or ("read", "write", "approve", "admin"))).stdout
        return out.strip().splitlines()[-1]

    def http(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


class _Unread:
    """What was read from a process's output and not yet looked at (the lines after the one waited for)."""

    def __init__(self) -> None:
        self.text = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")


_UNREAD: dict[int, _Unread] = {}


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    unread = _UNREAD.pop(proc.pid, None)
    return (unread.text if unread else "") + (out or "")


def wait_for_line(proc: subprocess.Popen[str], fragment: str, timeout: float = 30) -> str:
    """The output up to the first line with `fragment`. Read from the descriptor itself, not with readline: select
    cannot see lines already in the text stream's buffer, and a line that came in one chunk with the previous one
    was waited for in vain (a flaky SIGSTOP test)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    unread = _UNREAD.setdefault(proc.pid, _Unread())
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        while "\n" in unread.text:
            line, unread.text = unread.text.split("\n", 1)
            seen.append(line + "\n")
            if fragment in line:
                return "".join(seen)
        if time.monotonic() >= deadline:
            break
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:  # the process ended
                unread.text += unread.decoder.decode(b"", final=True)
                if "\n" not in unread.text:
                    break
                continue
            unread.text += unread.decoder.decode(chunk)
    raise AssertionError(f"no {fragment!r} in: {''.join(seen)}{unread.text}")
