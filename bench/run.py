"""Shepherd's first benchmark: the agent API under load on loopback, against a bare aiohttp hello-world.

    make bench                         # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --store sqlite --duration 5
    .venv/bin/python bench/run.py --update-readme   # also put the table into bench/README.md

It starts the real server (`shepherd serve`, one process) on a fresh data folder with 10,000 agents,
and a bare aiohttp hello-world (bench/hello.py) in its own process, then drives each target with the
same wrk settings: GET /api/agents (page of 50, first and last page) and POST /api/agents/{id}/action,
three measured runs each after a warm-up (the hello-world first and again last). It prints a Markdown
table (the median run's requests/s, p50 and p99, and the ratios to the hello-world) and exits non-zero
if any measured request failed. Every process it starts is stopped on the way out, whatever happens.
Traffic goes to 127.0.0.1 only. See bench/README.md for the numbers and how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pgserver

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
README = BENCH / "README.md"
ORG = "default"  # the org `shepherd token create` makes and binds the token to
N_PROJECTS = 20
N_POST_AGENTS = 100  # the POST spreads over this many agents
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
START_MARK, END_MARK = "<!-- results:start -->", "<!-- results:end -->"


class BenchError(Exception):
    """A failure that ends the run with a one-line reason (exit 1)."""


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: int
    warmup: int
    rounds: int  # measured runs per target; the table shows the median one
    timeout: int = 10  # wrk's per-request timeout (s): slow answers count in the latency, not as errors

    def describe(self) -> str:
        return (f"wrk -t{self.threads} -c{self.connections} -d{self.duration}s --latency --timeout "
                f"{self.timeout}s, {self.rounds} times per target after a {self.warmup} s warm-up with the same "
                "settings")


# --- processes -----------------------------------------------------------------------------------


class Processes:
    """Every long-running process this run started, stopped in reverse order on the way out."""

    def __init__(self) -> None:
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self._running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for i, (_, p) in enumerate(self._running):
            if p is proc:
                del self._running[i]
                break
        _terminate(proc)

    def stop_all(self) -> None:
        while self._running:
            _, proc = self._running.pop()
            _terminate(proc)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cpu_seconds(pids: list[int], *, reaped_of: int | None = None) -> float:
    """User + system CPU time of these processes (all their threads), from /proc.

    reaped_of: also count the children that process has reaped (PostgreSQL's backends come and go).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        if pid == reaped_of:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / ticks


def machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, ticks stolen by the hypervisor) of the whole machine so far, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0  # user … steal (guest is inside user)


# --- HTTP helpers (setup and checks only; the load comes from wrk) -------------------------------


def http(method: str, url: str, *, token: str | None = None, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status, headers = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    ctype = headers.get("Content-Type", "")
    return status, headers, json.loads(raw) if raw and "json" in ctype else raw.decode(errors="replace")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{url}: the server exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} not ready after {READY_TIMEOUT:.0f} s:\n{tail(log)}")


_METRIC = re.compile(r'^shepherd_http_requests_total\{method="([^"]*)",route="([^"]*)",status="([^"]*)"\} (\S+)$')


def served(base: str) -> dict[tuple[str, str, str], float]:
    """Shepherd's own count of answers per (method, route, status), from /metrics."""
    _, _, text = http("GET", f"{base}/metrics")
    counts: dict[tuple[str, str, str], float] = {}
    for line in str(text).splitlines():
        m = _METRIC.match(line)
        if m:
            counts[(m[1], m[2], m[3])] = float(m[4])
    return counts


# --- wrk -----------------------------------------------------------------------------------------


@dataclass
class Watch:
    """How to watch a server while it is measured."""

    cpu: Callable[[], tuple[float, float | None]]  # cumulative CPU seconds: (app, database or None)
    statuses: Callable[[], dict[str, int]] | None = None  # answers per HTTP status on the route, from /metrics
    log: Path | None = None  # the server's log, to tell apart errors about clients that had gone


@dataclass
class Measured:
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    not_2xx: int  # wrk's count of answers that were not 2xx/3xx
    socket_errors: int
    cpu_app: float | None = None  # % of one core over the measured run
    cpu_db: float | None = None
    server_statuses: dict[str, int] = field(default_factory=dict)  # what the server counted in the window
    client_gone: int = 0  # of the server's non-2xx: requests whose client had closed the connection
    rps_runs: list[float] = field(default_factory=list)  # every measured run's requests/s (rounds)
    stolen: float | None = None  # % of the machine's CPU time the hypervisor took elsewhere during the run
    runs: list[Measured] = field(default_factory=list)  # the single runs behind an aggregate

    @property
    def server_not_2xx(self) -> int:
        return sum(n for s, n in self.server_statuses.items() if not s.startswith("2"))

    @property
    def failed(self) -> bool:
        return self.not_2xx > 0 or self.socket_errors > 0 or self.server_not_2xx > self.client_gone


def wrk(load: Load, url: str, *, seconds: int, script: str, args: list[str], headers: list[str],
        env: dict[str, str] | None) -> dict[str, Any]:
    cmd = ["wrk", f"-t{load.threads}", f"-c{load.connections}", f"-d{seconds}s", "--latency",
           "--timeout", f"{load.timeout}s", "-s", script]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    if args:
        cmd += ["--", *args]
    try:
        proc = subprocess.run(cmd, cwd=BENCH, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 60} s against {url}") from None
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            result["raw"] = proc.stdout
            return result
    raise BenchError(f"wrk gave no result (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")


def settle(watch: Watch) -> dict[str, int]:
    """Wait (5 s at most) until the server has answered what wrk left in flight; return its counts."""
    if watch.statuses is None:
        time.sleep(0.5)
        return {}
    deadline = time.monotonic() + 5
    counts = watch.statuses()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        again = watch.statuses()
        if again == counts:
            break
        counts = again
    return counts


# A request whose client closed the connection before the server read its body: since 0fa5cda the app
# answers it 499 (nginx's "client closed request"); before, it logged this error and counted a 500.
GONE_STATUS = "499"
GONE = "ConnectionResetError: Connection lost"


@dataclass
class Target:
    """One row: what wrk sends where, and how the server is watched meanwhile."""

    name: str
    url: str
    watch: Watch
    script: str = "report.lua"
    args: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None

    def kw(self) -> dict[str, Any]:
        return {"script": self.script, "args": self.args, "headers": self.headers, "env": self.env}


def measure(load: Load, target: str, url: str, watch: Watch, *, script: str = "report.lua",
            args: list[str] | None = None, headers: list[str] | None = None,
            env: dict[str, str] | None = None) -> Measured:
    """Warm up, then `load.rounds` measured wrk runs; the run with the median requests/s stands for them."""
    return alternate(load, [Target(target, url, watch, script, args or [], headers or [], env)])[0]


def alternate(load: Load, targets: list[Target]) -> list[Measured]:
    """Each target warmed up, then `load.rounds` measured wrk runs of each, taking turns (Shepherd, its
    floor, Shepherd, its floor, ...), so that both meet the same moments of this shared machine. The run
    with the median requests/s stands for each target's runs.

    Each run also records the server's CPU time and its own count of answers per status; the counts and
    the client-gone errors are summed over the runs (and every run's answers are checked).
    """
    if load.warmup > 0:
        for t in targets:
            wrk(load, t.url, seconds=load.warmup, **t.kw())
    runs: list[list[Measured]] = [[] for _ in targets]
    for _ in range(load.rounds):
        for i, t in enumerate(targets):
            runs[i].append(_one_run(load, t.url, t.watch, t.kw()))
    out = []
    for t, its_runs in zip(targets, runs, strict=True):
        m = aggregate(t.name, its_runs)
        line = (f"  {t.name}: {m.rps:,.0f} req/s (runs: {', '.join(f'{r:,.0f}' for r in m.rps_runs)}), "
                f"p50 {m.p50_ms:.2f} ms, p99 {m.p99_ms:.2f} ms; wrk: {m.requests} answers, {m.not_2xx} non-2xx, "
                f"{m.socket_errors} socket errors")
        if t.watch.statuses:
            line += f"; server counted {m.server_statuses}"
            if m.server_not_2xx:
                line += f" ({m.client_gone} of them for clients that had gone)"
        print(line, flush=True)
        out.append(m)
    return out


def aggregate(target: str, runs: list[Measured]) -> Measured:
    """The run with the median requests/s stands for them all; counts and errors are summed."""
    statuses: dict[str, int] = {}
    for r in runs:
        for status, n in r.server_statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    return dataclasses.replace(
        sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2],
        target=target,
        rps_runs=[r.rps for r in runs],
        not_2xx=sum(r.not_2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        requests=sum(r.requests for r in runs),
        server_statuses=statuses,
        client_gone=sum(r.client_gone for r in runs),
        runs=runs,
    )


def _one_run(load: Load, url: str, watch: Watch, kw: dict[str, Any]) -> Measured:
    before = settle(watch)
    log_from = watch.log.stat().st_size if watch.log else 0
    (app0, db0), t0, (all0, steal0) = watch.cpu(), time.monotonic(), machine_ticks()
    r = wrk(load, url, seconds=load.duration, **kw)
    (app1, db1), wall, (all1, steal1) = watch.cpu(), time.monotonic() - t0, machine_ticks()
    after = settle(watch)
    statuses = {s: n - before.get(s, 0) for s, n in after.items() if n - before.get(s, 0)}
    gone = statuses.get(GONE_STATUS, 0)
    if watch.log:
        with watch.log.open("rb") as f:
            f.seek(log_from)
            gone += f.read().decode(errors="replace").count(GONE)
    return Measured(
        target="",
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        requests=r["requests"],
        not_2xx=r["err_status"],
        socket_errors=r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"],
        cpu_app=100 * (app1 - app0) / wall,
        cpu_db=100 * (db1 - db0) / wall if db0 is not None and db1 is not None else None,
        server_statuses=statuses,
        client_gone=gone,
        stolen=100 * (steal1 - steal0) / (all1 - all0) if all1 > all0 else None,
    )


# --- the seed ------------------------------------------------------------------------------------


async def seed(db_url: str, n: int) -> list[str]:
    """Insert n agents (and a few projects) straight into the store, oldest first; return ids to POST to.

    A mix like a busy org's: a project agent per project, a coordinator now and then, and task, review,
    deploy and incident agents, a third of them attached to a project (the list joins projects).
    """
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    from core.agents import AgentStatus
    from core.store.db import Database
    from core.store.models import Agent, Project

    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(seconds=n + 60)
    projects = [
        Project(id=f"proj-bench{i:02d}", org_id=ORG, name=f"bench-{i:02d}", repo=f"example/bench-{i:02d}",
                channels=["slack:#bench", "github"], created_at=base)
        for i in range(N_PROJECTS)
    ]
    kinds = ("task", "review", "deploy", "incident")
    agents: list[dict[str, Any]] = []
    post_to: list[str] = []
    for i in range(n):
        created = base + timedelta(seconds=i)
        project_id: str | None = None
        if i < N_PROJECTS:
            kind, prefix, project_id = "project", "proj", projects[i].id
        elif i % 500 == 0:
            kind, prefix = "coordinator", "coord"
        else:
            kind = prefix = kinds[i % len(kinds)]
            if i % 3 == 0:
                project_id = projects[i % N_PROJECTS].id
        agent = Agent(
            id=f"agent-{prefix}-{i:06x}", org_id=ORG, name=f"{kind}-{i}", type=kind,
            status=AgentStatus.IDLE if i % 4 == 1 else AgentStatus.ACTIVE, autonomy_level=1 + i % 3,
            project_id=project_id, task=f"fix issue #{i}" if kind == "task" else None,
            created_at=created, started_at=created, last_activity=created, messages_processed=i % 97,
        )
        agents.append(agent.model_dump())
        if kind == "task":
            post_to.append(agent.id)
    db = Database(db_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(SQLModel.metadata.tables["project"]), [p.model_dump() for p in projects])
            await conn.execute(insert(SQLModel.metadata.tables["agent"]), agents)
    finally:
        await db.dispose()
    step = max(1, len(post_to) // N_POST_AGENTS)
    return post_to[::step][:N_POST_AGENTS]


# --- one store -----------------------------------------------------------------------------------


def shepherd_cmd() -> list[str]:
    script = Path(sys.executable).parent / "shepherd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def store_env(store: str, folder: Path) -> tuple[dict[str, str], str, pgserver.PgServer | None]:
    """The environment, database URL and (PostgreSQL) throwaway server of one store's run under `folder`."""
    if store == "sqlite":
        return (clean_env(SHEPHERD_DATA_DIR=str(folder / "data")), f"sqlite:///{folder / 'data' / 'shepherd.db'}",
                None)
    pg = pgserver.PgServer.start(folder / "pg")
    pg.psql("CREATE DATABASE shepherd")
    db_url = pg.url("shepherd")
    return clean_env(SHEPHERD_DATA_DIR=str(folder / "data"), SHEPHERD_DATABASE_URL=db_url), db_url, pg


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without its SHEPHERD_* settings (no stray DATABASE_URL), plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_")}
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    try:
        proc = subprocess.run([*shepherd_cmd(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        raise BenchError(f"shepherd {' '.join(args)} did not finish within 120 s") from None
    if proc.returncode != 0:
        raise BenchError(f"shepherd {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def bench_store(store: str, load: Load, agents: int, procs: Processes, root: Path, *, healthz: bool = False
                ) -> tuple[list[Measured], list[Pair]]:
    """Set up one store with `agents` agents, serve it, and measure the three API targets, each in turns
    with its floor (bench/floor.py: the same work by hand, on the same database).

    healthz: also measure GET /healthz, Shepherd's route with no token and no database (its framework's cost).
    """
    folder = root / store
    folder.mkdir()
    pg = None
    try:
        env, db_url, pg = store_env(store, folder)
        if pg is not None:
            run_cli(["migrate"], env, folder)
        port = free_port()
        env.update(SHEPHERD_PORT=str(port), SHEPHERD_HOST="127.0.0.1", SHEPHERD_LOG_LEVEL="WARNING")
        token = run_cli(["token", "create", "--scopes", "read", "write", "approve", "admin", "--name", "bench"],
                        env, folder).strip().splitlines()[-1]
        t0 = time.monotonic()
        post_ids = asyncio.run(seed(db_url, agents))
        if pg is not None:
            pg.psql("VACUUM ANALYZE", "shepherd")  # the steady state autovacuum reaches by itself
        print(f"[{store}] seeded {agents:,} agents in {time.monotonic() - t0:.1f} s", flush=True)

        log = folder / "serve.log"
        server = procs.start(f"shepherd serve ({store})", [*shepherd_cmd(), "serve"], env=env, cwd=folder, log=log)
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/readyz", server, log)
        check_api(base, token, agents, post_ids[0])
        floor_log = folder / "floor.log"
        floor_port = free_port()
        floor = procs.start(f"floor ({store})", [sys.executable, str(BENCH / "floor.py"), str(floor_port), db_url],
                            env=clean_env(), cwd=folder, log=floor_log)
        floor_base = f"http://127.0.0.1:{floor_port}"
        wait_ready(f"{floor_base}/readyz", floor, floor_log)
        check_api(floor_base, token, agents, post_ids[0])
        check_same(base, floor_base, token, agents, post_ids[0])

        def db_cpu() -> float | None:
            if pg is None:
                return None
            pids = pg.pids()
            return cpu_seconds(pids, reaped_of=pids[0] if pids else None)

        def watch(method: str, route: str) -> Watch:
            def statuses() -> dict[str, int]:
                return {s: int(n) for (m, r, s), n in served(base).items() if m == method and r == route}
            return Watch(cpu=lambda: (cpu_seconds([server.pid]), db_cpu()), statuses=statuses, log=log)

        floor_watch = Watch(cpu=lambda: (cpu_seconds([floor.pid]), db_cpu()))
        auth = [f"Authorization: Bearer {token}"]
        last = max(0, agents - 50)
        results = [measure(load, "GET /healthz (Shepherd, no token, no database)", f"{base}/healthz",
                           watch("GET", "/healthz"))] if healthz else []
        pairs: list[Pair] = []
        post = {"script": "post_action.lua", "args": post_ids, "env": {"BENCH_TOKEN": token}}
        for name, path, method, route, kw in (
            ("GET /api/agents?limit=50", "/api/agents?limit=50", "GET", "/api/agents", {"headers": auth}),
            (f"GET /api/agents?limit=50&offset={last}", f"/api/agents?limit=50&offset={last}", "GET", "/api/agents",
             {"headers": auth}),
            ("POST /api/agents/{id}/action", "", "POST", "/api/agents/{id}/action", post),
        ):
            ours, bare = alternate(load, [
                Target(f"{name} ({store})", base + path, watch(method, route), **kw),  # type: ignore[arg-type]
                Target(f"{name} ({store}, floor)", floor_base + path, floor_watch, **kw),  # type: ignore[arg-type]
            ])
            results += [ours, bare]
            pairs.append(Pair(name, store, ours, bare))
        for name, proc, its_log in (("shepherd serve", server, log), ("the floor", floor, floor_log)):
            procs.stop(proc)
            if proc.returncode not in (0, -signal.SIGTERM):
                print(f"  note: {name} exited with {proc.returncode}:\n{tail(its_log)}")
        return results, pairs
    finally:
        if pg is not None:
            pg.stop()


@dataclass
class Pair:
    """A Shepherd row and its floor's, measured in turns in the same run."""

    target: str
    store: str
    ours: Measured
    floor: Measured

    @property
    def ratio(self) -> float:
        return self.ours.rps / self.floor.rps


def check_same(base: str, floor_base: str, token: str, agents: int, agent_id: str) -> None:
    """The floor answers what Shepherd answers (the same agents, fields and total; uptime may tick)."""
    for query in ("limit=50", f"limit=50&offset={max(0, agents - 50)}"):
        (_, h1, ours), (_, h2, bare) = (http("GET", f"{b}/api/agents?{query}", token=token) for b in (base, floor_base))
        def strip(page: Any) -> Any:
            return [{k: v for k, v in a.items() if k != "uptime"} for a in page]
        if strip(ours) != strip(bare) or h1.get("X-Total-Count") != h2.get("X-Total-Count"):
            raise BenchError(f"the floor's page differs from Shepherd's ({query}):\n{ours[:2]}\n{bare[:2]}")
    body = {"action": "set_autonomy", "params": {"level": 3}}
    answers = [http("POST", f"{b}/api/agents/{agent_id}/action", token=token, body=body)[2] for b in (base, floor_base)]
    if sorted(answers[0]) != sorted(answers[1]) or answers[1].get("previousLevel") != 3:
        raise BenchError(f"the floor's action answer differs from Shepherd's: {answers}")


def check_api(base: str, token: str, agents: int, agent_id: str) -> None:
    """One request per target by hand: the load must hit real pages and valid actions, not errors."""
    status, headers, body = http("GET", f"{base}/api/agents?limit=50", token=token)
    if status != 200 or not isinstance(body, list) or len(body) != 50:
        raise BenchError(f"GET /api/agents?limit=50 gave {status}: {str(body)[:300]}")
    if headers.get("X-Total-Count") != str(agents):
        raise BenchError(f"X-Total-Count is {headers.get('X-Total-Count')}, expected {agents}")
    status, _, body = http("GET", f"{base}/api/agents?limit=50&offset={max(0, agents - 50)}", token=token)
    if status != 200 or not isinstance(body, list) or len(body) != min(50, agents):
        raise BenchError(f"last page gave {status}: {str(body)[:300]}")
    status, _, body = http("POST", f"{base}/api/agents/{agent_id}/action", token=token,
                           body={"action": "set_autonomy", "params": {"level": 2}})
    if status != 200:
        raise BenchError(f"POST /api/agents/{agent_id}/action gave {status}: {body}")


class Hello:
    """The yardstick, measured at the start and again at the end of the run: on a shared machine the
    two together are a fairer reference than either alone. Its process idles in between."""

    TARGET = "hello-world (bare aiohttp)"

    def __init__(self, procs: Processes, root: Path) -> None:
        port = free_port()
        log = root / "hello.log"
        self.proc = procs.start("hello-world", [sys.executable, str(BENCH / "hello.py"), str(port)],
                                env=clean_env(), cwd=root, log=log)
        self.url = f"http://127.0.0.1:{port}/"
        wait_ready(self.url, self.proc, log)
        self.runs: list[Measured] = []

    def measure(self, load: Load, when: str) -> None:
        watch = Watch(cpu=lambda: (cpu_seconds([self.proc.pid]), None))
        self.runs += measure(load, f"{self.TARGET}, {when}", self.url, watch).runs

    def result(self) -> Measured:
        return aggregate(f"{self.TARGET}, measured first and last", self.runs)


# --- report --------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit of the Shepherd code being measured (the checkout `core` is imported from)."""
    import core

    repo = Path(core.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "core", "adapters", "bot"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return f"{repo} (not a git checkout)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    wrk_version = wrk_version.removeprefix("wrk").strip()
    import aiohttp

    return {
        "commit": code_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({cpu})" if cpu else str(os.cpu_count()),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "wrk": wrk_version,
    }


def table(results: list[Measured], hello: Measured, load: Load, info: dict[str, str]) -> str:
    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.0f} %"

    lines = [
        "| target | requests/s | range of runs | p50 | p99 | req/s vs hello | p50 vs hello "
        "| CPU app / db | stolen |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    everything = [hello, *results]
    for m in everything:
        cpu = pct(m.cpu_app) + (f" / {pct(m.cpu_db)}" if m.cpu_db is not None else "")
        ratio = m.rps / hello.rps
        lines.append(
            f"| {m.target} | {m.rps:,.0f} | {min(m.rps_runs):,.0f}–{max(m.rps_runs):,.0f} | {m.p50_ms:.2f} ms | "
            f"{m.p99_ms:.2f} ms | "
            f"{ratio:.4f}{f' (1/{1 / ratio:,.0f})' if ratio < 0.5 else ''} | {m.p50_ms / hello.p50_ms:.1f}× | {cpu} | "
            f"{pct(m.stolen)} |"
        )
    not_2xx, socket_errors = sum(m.not_2xx for m in everything), sum(m.socket_errors for m in everything)
    server_total = sum(sum(m.server_statuses.values()) for m in results)
    server_bad = sum(m.server_not_2xx for m in results)
    gone = sum(min(m.client_gone, m.server_not_2xx) for m in results)
    server = f"Shepherd's own /metrics counted {server_total:,} answers on the measured routes in the same windows"
    if server_bad == 0:
        server += ", all 2xx."
    else:
        server += (f", {server_bad} of them not 2xx, {gone} of which were requests whose client had already "
                   "closed the connection (wrk stopping at the end of a run) before the server read their body "
                   f"(status {GONE_STATUS}, or before 0fa5cda a 500 logged as `{GONE}`)")
        server += "." if gone == server_bad else f"; {server_bad - gone} were real failures."
    lines += [
        "",
        f"Load: {load.describe()}; one target at a time, against a server started for the run.",
        f"wrk received {sum(m.requests for m in everything):,} answers: {not_2xx} non-2xx, {socket_errors} socket "
        "errors" + (" (every answer it got was a success)." if not_2xx + socket_errors == 0 else " — FAILURES."),
        server,
        f"Each row is the run with the median requests/s out of {load.rounds} ({2 * load.rounds} for the "
        "hello-world, half of them first, half last); the next column is the range over those runs. "
        "CPU: user + system time of the server process over that run, in % of one core "
        "(db: all PostgreSQL processes); wrk runs on the same 2 cores. Stolen: the share of the machine's CPU "
        "time its hypervisor gave to others during that run (/proc/stat steal); when it is high, so is the noise.",
        "",
        "Code and machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
    ]
    return "\n".join(lines)


# The targets (13): Shepherd's requests/s as a share of its floor's, at least.
TARGETS = {"GET /api/agents?limit=50": 1.0, "POST /api/agents/{id}/action": 0.8}


def peers_table(pairs: list[Pair]) -> str:
    """Shepherd against its floor, row by row: the figure the issue's targets are about."""
    lines = [
        "| target | store | Shepherd req/s | floor req/s | ratio | target | Shepherd p50 / p99 | floor p50 / p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in pairs:
        goal = TARGETS.get(p.target, TARGETS["GET /api/agents?limit=50"] if p.target.startswith("GET") else None)
        mark = "" if goal is None else f">= {goal:.1f}x " + ("met" if p.ratio >= goal else "**not met**")
        lines.append(
            f"| {p.target} | {p.store} | {p.ours.rps:,.0f} | {p.floor.rps:,.0f} | {p.ratio:.2f}x | {mark} | "
            f"{p.ours.p50_ms:.1f} / {p.ours.p99_ms:.1f} ms | {p.floor.p50_ms:.1f} / {p.floor.p99_ms:.1f} ms |")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    doc = README.read_text()
    if START_MARK not in doc or END_MARK not in doc:
        raise BenchError(f"{README} has no {START_MARK} … {END_MARK} block to replace")
    head, rest = doc.split(START_MARK, 1)
    _, foot = rest.split(END_MARK, 1)
    README.write_text(f"{head}{START_MARK}\n{text}\n{END_MARK}{foot}")
    print(f"wrote the table into {README}")


# --- main ----------------------------------------------------------------------------------------


@contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    root.chmod(0o755)
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--store", choices=("all", "sqlite", "postgres"), default="all",
                   help="all: SQLite, then PostgreSQL if its server programs are installed (default)")
    p.add_argument("--agents", type=int, default=10_000, help="agents stored (default 10000)")
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="measured runs per target, median shown (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--update-readme", action="store_true", help="put the table into bench/README.md")
    p.add_argument("--keep", action="store_true", help="keep bench/.work/run-*/ (logs, databases)")
    args = p.parse_args(argv)
    if (args.agents < 200 or not 1 <= args.duration <= 120 or not 1 <= args.rounds <= 9
            or not 1 <= args.threads <= args.connections):
        p.error("need --agents >= 200, 1 <= --duration <= 120, 1 <= --rounds <= 9, 1 <= --threads <= --connections")

    if shutil.which("wrk") is None:
        print("bench: wrk is not installed; it is the load generator this benchmark uses.\n"
              "       install it with: apt-get install wrk   (Debian/Ubuntu; `brew install wrk` on macOS)",
              file=sys.stderr)
        return 2

    stores = ["sqlite", "postgres"] if args.store == "all" else [args.store]
    if "postgres" in stores and pgserver.bindir() is None:
        if args.store == "postgres":
            print("bench: no PostgreSQL server programs (initdb): apt-get install postgresql", file=sys.stderr)
            return 2
        print("PostgreSQL server programs not found: measuring SQLite only (apt-get install postgresql)")
        stores.remove("postgres")

    load = Load(threads=args.threads, connections=args.connections, duration=args.duration, warmup=args.warmup,
                rounds=args.rounds)
    # A SIGTERM (or Ctrl-C) unwinds through the finally blocks below, so no server is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    print(f"Shepherd benchmark: {args.agents:,} agents, stores {', '.join(stores)}; {load.describe()}", flush=True)
    procs = Processes()
    results: list[Measured] = []
    pairs: list[Pair] = []
    try:
        with work_dir(args.keep) as root:
            try:
                yardstick = Hello(procs, root)
                yardstick.measure(load, "first")
                for store in stores:
                    try:
                        rows, its_pairs = bench_store(store, load, args.agents, procs, root,
                                                      healthz=store == stores[0])
                        results += rows
                        pairs += its_pairs
                    except pgserver.Unavailable as exc:
                        if args.store != "all":
                            raise
                        print(f"[{store}] skipped: PostgreSQL could not start: {exc}", flush=True)
                yardstick.measure(load, "again at the end")
                hello = yardstick.result()
            finally:
                procs.stop_all()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except pgserver.Unavailable as exc:
        print(f"bench: PostgreSQL could not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130

    report = peers_table(pairs) + "\n\n" + table(results, hello, load, info)
    print()
    print(report)
    failed = [m.target for m in [hello, *results] if m.failed]
    if failed:
        print(f"bench: requests failed in: {', '.join(failed)}"
              + ("; bench/README.md left as it was" if args.update_readme else ""), file=sys.stderr)
        return 1
    if args.update_readme:
        update_readme(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
