"""A throwaway PostgreSQL server for the benchmark, with production durability (fsync, synchronous_commit).

Unlike the test suite's cluster (fsync off, for speed), this one keeps PostgreSQL's durable defaults so
its writes pay the same price as SQLite's synchronous=FULL. As root, the server programs run as the
`postgres` user (initdb refuses root). Loopback only, on a private port and socket folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    pass


def bindir() -> Path | None:
    """Where initdb and pg_ctl are (the newest installed major version), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for path in reversed(candidates):
        if (Path(path) / "initdb").exists():
            return Path(path)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    root: Path
    port: int
    bin: Path
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return [*(["runuser", "-u", self.run_as, "--"] if self.run_as else []), *args]

    @classmethod
    def start(cls, root: Path) -> PgServer:
        programs = bindir()
        if programs is None:
            raise Unavailable("no PostgreSQL server programs (initdb): apt-get install postgresql")
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no `postgres` user to run initdb as") from None
            run_as = "postgres"
        root = root.resolve()  # the server runs elsewhere: relative paths would break
        root.mkdir(parents=True)
        root.chmod(0o755)
        if run_as:
            shutil.chown(root, run_as, run_as)
        server = cls(root=root, port=_free_port(), bin=programs, run_as=run_as)
        try:
            server._start()
        except (OSError, subprocess.SubprocessError) as exc:
            server.stop()
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        return server

    def _start(self) -> None:
        init = subprocess.run(
            self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync"),
            capture_output=True, text=True, timeout=120,
        )
        if init.returncode != 0:
            raise Unavailable(f"initdb failed: {init.stderr.strip()}")
        # PostgreSQL's defaults otherwise: fsync on, synchronous_commit on.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        started = subprocess.run(
            self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                      str(self.root / "log"), "-w", "-t", "60", "start"),
            capture_output=True, text=True, timeout=90,
        )
        if started.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise Unavailable(f"pg_ctl start failed: {started.stderr.strip()} {log[-2000:]}")

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run(
            self._cmd(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                      "-d", database, "-v", "ON_ERROR_STOP=1", "-qc", sql),
            check=True, capture_output=True, timeout=120,
        )

    def pids(self) -> list[int]:
        """The postmaster and all its children (backends, WAL writer, checkpointer…)."""
        try:
            master = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        found = [master]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                    capture_output=True, timeout=60,
                )
