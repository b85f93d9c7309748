"""Where agents reach Shepherd for `shepherd ask`: the launcher on their PATH, and the listeners that serve
only the task-token routes.

- The launcher folder holds a `shepherd` that runs only `shepherd ask` (a copy of bot/ask.py, standard
  library only, run by the Python installation itself with -I): it works inside the sandbox, where neither
  Shepherd's source nor its virtualenv is in sight.
- A process that serves no web app (the console, a worker without SHEPHERD_PUBLIC_URL) listens on a
  loopback port for its own agents.
- With the sandbox on (no network inside), agents reach Shepherd through a Unix socket in a private
  folder, bound into each sandbox at core.runners.sandbox.SANDBOX_SOCKET.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
from pathlib import Path

from aiohttp import web

from core.runners.presets import PYTHON as BASE_PYTHON
from core.shepherd import Shepherd

ASK_SOURCE = Path(__file__).with_name("ask.py")
PYTHON = Path(BASE_PYTHON)  # the interpreter itself, not a virtualenv's link: a sandbox shows it and no more


def _write(path: Path, text: str, *, executable: bool = False) -> None:
    """Replace a file only when its text changes, atomically (agents may be running it this moment)."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    if executable:
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(path)


def write_launcher(folder: Path) -> Path:
    """A folder holding a `shepherd` that runs only `shepherd ask` and `shepherd loop`, put first on every agent's
    PATH: an agent can ask, whatever PATH the server was started with, and can run nothing else of Shepherd's."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "ask.py", ASK_SOURCE.read_text())
    _write(folder / "shepherd", (
        "#!/bin/sh\n# written by Shepherd: inside a task, agents call `shepherd ask` and `shepherd loop`\n"
        'case "$1" in ask|loop) ;; *) echo "shepherd: inside a task only \\`shepherd ask\\` and '
        '\\`shepherd loop\\` are available" >&2; exit 3;; esac\n'
        f'exec "{PYTHON}" -I "$(dirname "$0")/ask.py" "$@"\n'
    ), executable=True)
    return folder


def callback_app(shepherd: Shepherd) -> web.AppRunner:
    from bot.app import create_callback_app

    return web.AppRunner(create_callback_app(shepherd), access_log=None)


class CallbackSocket:
    """The task-token routes on a Unix socket in a folder only Shepherd's user can enter (short path: a
    socket's path is limited to about 100 bytes)."""

    def __init__(self, shepherd: Shepherd) -> None:
        self.shepherd = shepherd
        self.folder = Path(tempfile.mkdtemp(prefix="shepherd-ask-"))
        self.path = self.folder / "ask.sock"
        self._runner: web.AppRunner | None = None

    async def start(self) -> Path:
        self._runner = callback_app(self.shepherd)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()
        return self.path

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)
