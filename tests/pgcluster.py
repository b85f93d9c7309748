"""A throwaway PostgreSQL cluster for the suite: initdb into a temp dir, private port and socket dir.

initdb refuses to run as root, so as root the server programs run as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    pass


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for path in reversed(candidates):
        if (Path(path) / "initdb").exists():
            return Path(path)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ClusterUnavailable("no PostgreSQL server programs (initdb) found: apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    port: int
    bindir: Path
    run_as: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return [*prefix, *args]

    @classmethod
    def start(cls) -> Cluster:
        bindir = _bindir()
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable("running as root and no `postgres` user to run initdb as") from None
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="shepherd-pg-"))
        root.chmod(0o755)
        if run_as:
            shutil.chown(root, run_as, run_as)
        cluster = cls(root=root, port=_free_port(), bindir=bindir, run_as=run_as)
        data = root / "data"
        subprocess.run(
            cluster._cmd(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                         "--no-sync"),
            check=True, capture_output=True,
        )
        options = (
            f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        proc = subprocess.run(
            cluster._cmd(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                         "-w", "-t", "60", "start"),
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise ClusterUnavailable(f"pg_ctl start failed: {proc.stderr}{log}")
        return cluster

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"),
            capture_output=True,
        )
        # Removed by a process of its own that outlives the test run: the cluster holds a database per test (GBs of
        # files by the end), and removing them in the session's teardown took 40 s of the suite's time
        subprocess.Popen(["rm", "-rf", str(self.root)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
