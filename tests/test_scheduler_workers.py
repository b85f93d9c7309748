"""Two real `shepherd worker` processes on one PostgreSQL (issue 16's acceptance): one leads and runs the jobs, the
other waits; SIGKILL the leader and the other takes over within SHEPHERD_LEADER_TIMEOUT, and the jobs go on running
once per fire time (the `expiry` job every second here, recorded in job_run with the process that ran it; a
console's digest every 2 s, each fire time's posted once across the handover)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from bot.leader import asyncpg_dsn
from tests.procs import Home, stop, wait_for_line

TIMEOUT = 3  # SHEPHERD_LEADER_TIMEOUT, seconds


def digests_posted(url: str) -> list[str]:
    """The digests written to the outbox, by key (`digest:<id>:<fire time>`), oldest first."""
    async def read() -> list[str]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch("SELECT key FROM outbox WHERE key LIKE 'digest:%' ORDER BY id")
        finally:
            await conn.close()
        return [r["key"] for r in rows]

    return asyncio.run(read())


def job_runs(url: str) -> list[tuple[datetime, str]]:
    async def read() -> list[tuple[datetime, str]]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch("SELECT fire_time, holder FROM job_run WHERE job = 'expiry' ORDER BY fire_time")
        finally:
            await conn.close()
        return [(r["fire_time"], r["holder"]) for r in rows]

    return asyncio.run(read())


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def worker_homes(tmp_path: Path, pg_url: str) -> list[Home]:
    """Two workers' homes on one PostgreSQL, with a short leader timeout and expiry every second."""
    env = {"SHEPHERD_DATABASE_URL": pg_url, "SHEPHERD_LEADER_TIMEOUT": str(TIMEOUT), "SHEPHERD_EXPIRY_EVERY": "1",
           "SHEPHERD_DIGEST_EVERY": "1", "SHEPHERD_DIGEST_ALWAYS": "true"}  # a digest at every fire time
    homes = [Home(tmp_path / name, **env) for name in ("a", "b")]
    for home in homes:
        home.root.mkdir()
    return homes


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_one_leads_and_the_other_takes_over_when_it_is_killed(tmp_path: Path, pg_url: str) -> None:
    homes = worker_homes(tmp_path, pg_url)
    homes[0].run("console", "-c", "digest */2 * * * * *")  # the console's digest, every 2 s
    first = homes[0].start("worker")
    second = None
    try:
        wait_for_line(first, "leads now")
        second = homes[1].start("worker")
        wait_for_line(second, "background services started")
        me_first, me_second = f"{socket.gethostname()}:{first.pid}", f"{socket.gethostname()}:{second.pid}"
        wait_until(lambda: sum(h == me_first for _, h in job_runs(pg_url)) >= 3, 15, "the leader runs expiry")
        assert {h for _, h in job_runs(pg_url)} == {me_first}  # the follower runs nothing
        doctor = homes[1].run("doctor", check=False).stdout
        assert f"leader: {me_first} runs the scheduled jobs" in doctor, doctor

        before = len(digests_posted(pg_url))
        assert before >= 1, "the leader posts the digest"
        first.send_signal(signal.SIGKILL)
        first.wait()
        # the lock goes with the killed process's session; the follower's next try takes it
        wait_for_line(second, "leads now", timeout=TIMEOUT + 5)
        wait_until(lambda: sum(h == me_second for _, h in job_runs(pg_url)) >= 3, 15, "the new leader runs expiry")
        wait_until(lambda: len(digests_posted(pg_url)) >= before + 2, 15, "the new leader posts the digest")
    finally:
        out = stop(second) if second is not None else ""
        stop(first)
    runs = job_runs(pg_url)
    fire_times = [t for t, _ in runs]
    assert len(fire_times) == len(set(fire_times))  # no fire time run twice
    holders = [h for _, h in runs]
    handover = holders.index(me_second)
    assert set(holders[:handover]) == {me_first} and set(holders[handover:]) == {me_second}, runs  # one at a time
    assert "no longer leads" in out  # the survivor stopped its scheduler when it was stopped
    digests = digests_posted(pg_url)
    assert len(digests) == len(set(digests)), digests  # each fire time's digest posted once, across the handover


@pytest.mark.postgres
@pytest.mark.slow
def test_a_leader_alive_but_stuck_loses_the_lead_within_the_timeout(tmp_path: Path, pg_url: str) -> None:
    """A leader whose process is stopped (SIGSTOP; a blocked event loop is the same) checks nothing and runs no job,
    but its kernel still answers TCP keepalives: its idle session ends after the timeout, and the lock with it."""
    homes = worker_homes(tmp_path, pg_url)
    first = homes[0].start("worker")
    second = None
    try:
        wait_for_line(first, "leads now")
        first.send_signal(signal.SIGSTOP)
        second = homes[1].start("worker")
        wait_for_line(second, "leads now", timeout=TIMEOUT + 10)
        me_second = f"{socket.gethostname()}:{second.pid}"
        wait_until(lambda: any(h == me_second for _, h in job_runs(pg_url)), 15, "the new leader runs expiry")
        first.send_signal(signal.SIGCONT)
        wait_for_line(first, "no longer leads")  # it finds its session ended as soon as it runs again
    finally:
        first.send_signal(signal.SIGCONT)
        if second is not None:
            stop(second)
        stop(first)
    fire_times = [t for t, _ in job_runs(pg_url)]
    assert len(fire_times) == len(set(fire_times))  # no fire time run twice


@pytest.mark.postgres
def test_doctor_says_when_the_leaders_database_is_unreachable(tmp_path: Path, pg_url: str) -> None:
    bad = "postgresql://shepherd:hunter2-secret@127.0.0.1:1/shepherd"
    home = Home(tmp_path, SHEPHERD_DATABASE_URL=pg_url, SHEPHERD_LEADER_DATABASE_URL=bad)
    doctor = home.run("doctor", check=False)
    assert doctor.returncode == 1, doctor.stdout  # no process could lead: nothing scheduled would ever run
    assert "SHEPHERD_LEADER_DATABASE_URL postgresql://shepherd:********@127.0.0.1:1/shepherd UNREACHABLE" in \
        doctor.stdout, doctor.stdout
    assert "hunter2-secret" not in doctor.stdout + doctor.stderr
