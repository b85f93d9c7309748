"""The scheduler (issue 16): leader election on both stores, a job run once per fire time across schedulers that
share a database, misfires after downtime coalesced and logged, expiry as a job, `schedules`, and /readyz naming the
leader. Real stores, real APScheduler; jobs on sub-second intervals so that nothing sleeps through real minutes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update
from sqlmodel import col, select

from bot.app import create_app
from bot.leader import Elector, FileElector, PgElector, asyncpg_dsn
from bot.scheduler import Scheduler
from core.clock import utcnow
from core.commands.registry import build_registry
from core.people.access import Role
from core.schedule.runs import KEEP, JobRuns
from core.schedule.schedules import Job, next_fire
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Confirmation, JobRun
from tests.conftest import person
from tests.test_confirmations import ALICE, gate, pr_plan, started_task


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def run_until(scheduler: Scheduler, calls: list[datetime], n: int) -> None:
    """Runs `scheduler` until its jobs were called `n` times, then stops it."""
    await scheduler.start()
    try:
        await until(lambda: len(calls) >= n)
    finally:
        await scheduler.stop()


async def runs_of(db: Database, job: str) -> list[JobRun]:
    async with db.read() as session:
        return list(await session.exec(select(JobRun).where(col(JobRun.job) == job).order_by(col(JobRun.fire_time))))


class Flags:
    """An elector's hooks, recorded."""

    def __init__(self, elector: Elector, name: str) -> None:
        self.leads = False
        self.changes: list[str] = []
        elector.me = name

        async def elected() -> None:
            self.leads = True
            self.changes.append("elected")

        async def deposed() -> None:
            self.leads = False
            self.changes.append("deposed")

        elector.on_elected, elector.on_deposed = elected, deposed


def electors(db: Database, url: str, tmp_path: Path) -> tuple[Elector, Elector]:
    if db.is_sqlite:
        return FileElector(tmp_path / "leader.lock", timeout=1.5), FileElector(tmp_path / "leader.lock", timeout=1.5)
    return PgElector(url, db, timeout=1.5), PgElector(url, db, timeout=1.5)


# --- job runs ----------------------------------------------------------------------------------------------------


async def test_a_run_is_taken_once_and_its_outcome_kept(db: Database) -> None:
    runs = JobRuns(db)
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert await runs.begin("expiry", at, "a:1")
    assert not await runs.begin("expiry", at, "b:2")  # another process, or a restart: already run
    assert await runs.begin("cleanup", at, "b:2")  # another job at the same time is its own run
    started = (await runs.last())["expiry"]
    assert started.state == "running" and started.holder == "a:1"  # a crash now would leave it visible so
    await runs.finish("expiry", at, ok=True, result="expired 2 confirmations")
    done = (await runs.last())["expiry"]
    assert (done.state, done.result, done.holder) == ("ok", "expired 2 confirmations", "a:1")


async def test_the_runs_kept_per_job_stay_few(db: Database) -> None:
    runs = JobRuns(db)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(KEEP + 5):
        at = start + timedelta(seconds=i)
        assert await runs.begin("expiry", at, "a:1")
        await runs.finish("expiry", at, ok=True, result="nothing due")
    kept = await runs.recent("expiry", limit=1000)
    assert len(kept) == KEEP and kept[0].fire_time == start + timedelta(seconds=KEEP + 4)


# --- leader election ---------------------------------------------------------------------------------------------


async def test_one_leads_and_another_takes_over_when_it_stops(db: Database, db_url: str, tmp_path: Path) -> None:
    first, second = electors(db, db_url, tmp_path)
    a, b = Flags(first, "host-a:1"), Flags(second, "host-b:2")
    await first.start()
    await until(lambda: a.leads)
    await second.start()
    try:
        await asyncio.sleep(1)  # several of the follower's tries
        assert not b.leads and first.leads and not second.leads
        assert await second.leader() == "host-a:1" == await first.leader()
        await first.stop()
        assert a.changes == ["elected", "deposed"]
        await until(lambda: b.leads)
        assert await first.leader() == "host-b:2"
    finally:
        await second.stop()
        await first.stop()
    for _ in range(100):  # PostgreSQL ends the closed session (and its lock) a moment later
        if await first.leader() is None:
            break
        await asyncio.sleep(0.05)
    assert await first.leader() is None  # nobody leads


@pytest.mark.postgres
async def test_a_leader_whose_connection_is_killed_stops_at_once_and_another_takes_over(
    pg_url: str, tmp_path: Path,
) -> None:
    db = Database(pg_url)
    first, second = PgElector(pg_url, db, timeout=1.5), PgElector(pg_url, db, timeout=1.5)
    a, b = Flags(first, "host-a:1"), Flags(second, "host-b:2")
    try:
        await first.start()
        await until(lambda: a.leads)
        await second.start()
        conn = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:  # what an operator (or a network partition ending the session) does to the leader's session
            killed = await conn.fetchval("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE application_name = 'shepherd leader host-a:1'")
        finally:
            await conn.close()
        assert killed
        await until(lambda: not a.leads)  # the scheduler goes off with the connection
        assert a.changes[:2] == ["elected", "deposed"]
        await until(lambda: b.leads)
        assert await first.leader() == "host-b:2"
    finally:
        await first.stop()
        await second.stop()
        await db.dispose()


@pytest.mark.postgres
async def test_a_follower_that_cannot_reach_the_locks_database_says_so(
    pg_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong SHEPHERD_LEADER_DATABASE_URL: no process can ever lead, and no job runs; that is a warning, not a
    debug line (the password never in it)."""
    db = Database(pg_url)
    elector = PgElector("postgresql://shepherd:hunter2-secret@127.0.0.1:1/shepherd", db, timeout=1.5)
    flags = Flags(elector, "host-a:1")
    caplog.set_level(logging.DEBUG, logger="bot.leader")
    try:
        await elector.start()
        await until(lambda: len([r for r in caplog.records if r.name == "bot.leader"]) >= 3)
    finally:
        await elector.stop()
        await db.dispose()
    said = [r for r in caplog.records if r.name == "bot.leader"]
    warned = [r.getMessage() for r in said if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "host-a:1: lock connection failed" in warned[0], warned  # once, not every try
    assert not flags.leads and all("hunter2-secret" not in r.getMessage() for r in said)


# --- the scheduler -----------------------------------------------------------------------------------------------


def counting_job(name: str, every: float, calls: list[datetime]) -> Job:
    async def run(now: datetime) -> str:
        calls.append(now)
        return f"call {len(calls)}"

    return Job(name, every, run)


async def test_two_schedulers_on_one_database_run_each_fire_time_once(shepherd: Shepherd) -> None:
    calls: list[datetime] = []
    shepherd.scheduling.jobs = [counting_job("tick", 0.2, calls)]
    one = Scheduler(shepherd.scheduling, holder="host-a:1", grace_s=60)
    two = Scheduler(shepherd.scheduling, holder="host-b:2", grace_s=60)
    await one.start()
    await two.start()  # both think they lead: the record keeps each run to one of them
    try:
        await until(lambda: len(calls) >= 6)
    finally:
        await one.stop()
        await two.stop()
    await asyncio.sleep(0.3)  # a run in flight ends
    rows = await runs_of(shepherd.db, "tick")
    assert len(rows) == len(calls)  # every fire time: one call, by whichever scheduler took it
    assert len({r.fire_time for r in rows}) == len(rows)
    assert all(r.ok and r.result and r.result.startswith("call ") for r in rows if r.finished_at)


async def test_a_misfire_after_downtime_is_one_run_and_logged(
    shepherd: Shepherd, caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[datetime] = []
    shepherd.scheduling.jobs = [counting_job("tick", 1, calls)]
    now = utcnow()
    last = now - timedelta(seconds=10)  # the last run, then ten fire times without a scheduler (a failover)
    assert await shepherd.scheduling.runs.begin("tick", last, "host-gone:9")
    scheduler = Scheduler(shepherd.scheduling, holder="host-a:1", grace_s=60)
    with caplog.at_level(logging.INFO, logger="bot.scheduler"):
        await run_until(scheduler, calls, 1)
    rows = await runs_of(shepherd.db, "tick")
    assert rows[0].holder == "host-gone:9"
    caught_up = rows[1]  # the ten missed fire times are one run, at the latest of them
    assert now - timedelta(seconds=1) <= caught_up.fire_time.replace(tzinfo=UTC) <= now + timedelta(seconds=1)
    assert len(rows) <= 3, rows  # not ten
    assert any("tick" in r.message and "missed" in r.message and "one run" in r.message for r in caplog.records)


async def test_runs_missed_past_the_grace_time_are_logged_and_skipped(
    shepherd: Shepherd, caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[datetime] = []
    shepherd.scheduling.jobs = [counting_job("tick", 1, calls)]
    last = utcnow() - timedelta(minutes=10)
    assert await shepherd.scheduling.runs.begin("tick", last, "host-gone:9")
    scheduler = Scheduler(shepherd.scheduling, holder="host-a:1", grace_s=2)
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        await run_until(scheduler, calls, 1)
    rows = await runs_of(shepherd.db, "tick")
    assert all(r.fire_time.replace(tzinfo=UTC) > utcnow() - timedelta(seconds=10) for r in rows[1:])
    first_missed = next_fire(1.0, last)
    assert first_missed is not None
    # Shepherd's own warning (APScheduler may add one of its own when a slow machine makes a run outlast its 1 s
    # interval: "maximum number of running instances reached", which is not what this test is about)
    [warning] = [r.message for r in caplog.records if r.levelno == logging.WARNING and r.name == "bot.scheduler"]
    assert "tick" in warning and "missed" in warning and first_missed.isoformat()[:19] in warning


async def test_a_failing_job_is_recorded_and_the_next_fire_time_runs(shepherd: Shepherd) -> None:
    calls: list[datetime] = []

    async def flaky(now: datetime) -> str:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("the disk is full")
        return "fine"

    shepherd.scheduling.jobs = [Job("flaky", 0.2, flaky)]
    scheduler = Scheduler(shepherd.scheduling, holder="host-a:1", grace_s=60)
    await scheduler.start()
    try:
        for _ in range(500):  # the second run recorded as finished (stopped between its call and its record, it
            # would read "interrupted")
            rows = await runs_of(shepherd.db, "flaky")
            if len(rows) >= 2 and rows[1].finished_at is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        await scheduler.stop()
    assert (rows[0].ok, rows[0].result) == (False, "failed: RuntimeError: the disk is full")
    assert rows[1].ok and rows[1].result == "fine"


async def test_a_hung_job_times_out_and_a_failure_shows_only_its_first_line(
    shepherd: Shepherd, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.scheduler

    monkeypatch.setattr(bot.scheduler, "JOB_TIMEOUT_S", 0.3)
    calls: list[datetime] = []

    async def stuck(now: datetime) -> str:  # a lock wait that never ends
        calls.append(now)
        await asyncio.Event().wait()
        return "never"

    async def leaky(now: datetime) -> str:  # a database error: its statement and parameters on later lines
        calls.append(now)
        raise RuntimeError("(psycopg.errors.LockNotAvailable) could not obtain lock\n[SQL: SELECT secret FROM t]\n"
                           "[parameters: ('globex-private',)]")

    shepherd.scheduling.jobs = [Job("stuck", 0.2, stuck), Job("leaky", 0.2, leaky)]
    scheduler = Scheduler(shepherd.scheduling, holder="host-a:1", grace_s=60)
    await scheduler.start()
    try:
        for _ in range(500):
            done = [r for job in ("stuck", "leaky") for r in await runs_of(shepherd.db, job) if r.finished_at]
            if {r.job for r in done} == {"stuck", "leaky"}:
                break
            await asyncio.sleep(0.02)
    finally:
        await scheduler.stop()
    stuck_run = next(r for r in done if r.job == "stuck")
    assert (stuck_run.ok, stuck_run.result) == (False, "failed: timed out after 0.3 s")
    leaky_run = next(r for r in done if r.job == "leaky")
    assert leaky_run.result == "failed: RuntimeError: (psycopg.errors.LockNotAvailable) could not obtain lock"


async def test_expiry_is_a_job_that_rejects_confirmations_on_time(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    soon = utcnow() + timedelta(minutes=5)
    async with shepherd.db.write() as session:
        await session.exec(update(Confirmation).where(col(Confirmation.id) == conf.id).values(expires_at=soon))
    assert await shepherd.confirmations.expiry(soon - timedelta(seconds=1)) == "nothing due"
    assert await shepherd.confirmations.expiry(soon) == "expired 1 confirmation"  # a controlled clock, no sleeping
    assert (await shepherd.confirmations.get(ALICE, conf.code)).status == "expired"


# --- who leads, as people see it -------------------------------------------------------------------------------


async def test_schedules_lists_each_job_its_next_run_last_result_and_the_leader(
    shepherd: Shepherd, tmp_path: Path,
) -> None:
    calls: list[datetime] = []
    shepherd.scheduling.jobs = [counting_job("tick", 0.2, calls),
                                Job("cleanup", "17 * * * *", counting_job("x", 1, []).run)]
    elector = FileElector(tmp_path / "leader.lock", timeout=1.5)
    shepherd.scheduling.leadership = elector
    scheduler = Scheduler(shepherd.scheduling, holder=elector.me, grace_s=60)
    elector.on_elected, elector.on_deposed = scheduler.start, scheduler.stop
    await elector.start()
    try:
        await until(lambda: len(calls) >= 1)
        await asyncio.sleep(0.1)
        reply = await build_registry().run(shepherd, person(Role.OPERATOR), "schedules")
        refused = await build_registry().run(shepherd, person(Role.VIEWER), "schedules")
    finally:
        await elector.stop()
    assert reply.ok, reply.text
    lines = reply.text.splitlines()
    assert lines[0].split() == ["JOB", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN", "RESULT"]
    tick = next(line for line in lines if line.startswith("tick"))
    assert "every 0.2 s" in tick and "ago (ok)" in tick and "call " in tick
    cleanup = next(line for line in lines if line.startswith("cleanup"))
    assert "cron 17 * * * * (UTC)" in cleanup and ":17:00Z" in cleanup and "never" in cleanup
    assert lines[-1] == f"leader: {elector.me} runs these jobs"
    jobs = {j["job"]: j for j in reply.data["jobs"]}
    assert jobs["cleanup"]["last_run"] is None and jobs["cleanup"]["next_run"].endswith(":17:00Z")
    assert jobs["tick"]["last_run"]["holder"] == elector.me and reply.data["leader"] == elector.me
    assert not refused.ok  # the deployment's insides are for operators


async def test_readyz_names_the_leader_and_whether_this_process_leads(shepherd: Shepherd, tmp_path: Path) -> None:
    elector = FileElector(tmp_path / "leader.lock", timeout=1.5) if shepherd.db.is_sqlite else \
        PgElector(str(shepherd.db.url), shepherd.db, timeout=1.5)
    shepherd.scheduling.leadership = elector
    async with TestClient(TestServer(create_app("unused", shepherd=shepherd))) as client:
        async with client.get("/readyz") as resp:
            nobody = await resp.json()
        await elector.start()
        try:
            await until(lambda: elector.leads)
            async with client.get("/readyz") as resp:
                leading = await resp.json()
        finally:
            await elector.stop()
    assert (nobody.get("leader"), nobody["leads"]) == (None, False)  # the API leaves out what is null
    assert (leading["leader"], leading["leads"]) == (elector.me, True)


# --- the deployment's jobs, from settings ---------------------------------------------------------------------


def test_the_deployment_runs_issue_16s_five_jobs_on_their_settings(shepherd: Shepherd, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from bot.scheduler import jobs
    from bot.settings import Settings

    monkeypatch.setenv("SHEPHERD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHEPHERD_CLEANUP_SCHEDULE", "0 3 * * 0")  # crontab's Sunday
    monkeypatch.setenv("SHEPHERD_REMIND_EVERY", "7")
    made = {j.name: j for j in jobs(Settings(), shepherd)}
    assert list(made) == ["expiry", "digests", "reminders", "stalls", "cleanup"]
    assert made["reminders"].schedule == 7 and made["reminders"].setting == "SHEPHERD_REMIND_EVERY"
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    assert next_fire(made["cleanup"].schedule, saturday) == datetime(2026, 3, 8, 3, 0, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(("value", "says"), [("17 * * *", "has 4"), ("0 25 * * *", "hour field `25`"),
                                             ("-5", "positive"), ("hourly", "5 fields")])
def test_a_bad_cleanup_schedule_is_refused_when_settings_are_read(value: str, says: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from bot.settings import Settings

    monkeypatch.setenv("SHEPHERD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHEPHERD_CLEANUP_SCHEDULE", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert says in str(caught.value)


def test_silences_are_looked_for_often_enough_to_warn_before_the_idle_timeout(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    from pydantic import ValidationError

    from bot.settings import Settings

    monkeypatch.setenv("SHEPHERD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHEPHERD_TASK_IDLE_TIMEOUT", "60")  # warned after 30 s of silence: looked for every 10 s
    assert (Settings().stall_warn_s(), Settings().stall_check_every()) == (30, 10)
    monkeypatch.setenv("SHEPHERD_TASK_IDLE_TIMEOUT", "3600")
    assert (Settings().stall_warn_s(), Settings().stall_check_every()) == (1800, 30)
    monkeypatch.setenv("SHEPHERD_STALL_WARN", "3600")  # a warning that would come with the timeout, or after it
    with pytest.raises(ValidationError, match="must be below SHEPHERD_TASK_IDLE_TIMEOUT"):
        Settings()


async def test_a_console_campaigns_only_on_sqlite_where_it_may_be_the_one_process(
    shepherd: Shepherd, tmp_path: Path,
) -> None:
    from bot.background import Background
    from bot.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=str(shepherd.db.url), leader_timeout=1.5)
    console = Background(settings, shepherd, callback_url="http://127.0.0.1:9", platforms=False)
    await console.start()
    try:
        if shepherd.db.is_sqlite:  # alone with its database: it runs the jobs (confirmations still expire)
            await until(lambda: console.elector is not None and console.elector.leads)
        else:  # beside a deployment's workers it would take the lead in a restart's gap, in a terminal that closes
            await asyncio.sleep(0.5)
            assert console.elector is None and "leader" not in [s.name for s in console._started]
    finally:
        await console.stop()


def test_processes_on_one_sqlite_database_meet_at_one_lock_whatever_their_data_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.leader import lock_file

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = lock_file("sqlite+aiosqlite:///a/shepherd.db", tmp_path / "one")
    absolute = lock_file(f"sqlite+aiosqlite:///{tmp_path}/a/shepherd.db", tmp_path / "two")
    assert relative == absolute == (tmp_path / "a" / "shepherd.db.leader.lock").resolve()


def test_doctor_shows_the_stall_settings_in_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import Settings

    monkeypatch.setenv("SHEPHERD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHEPHERD_TASK_IDLE_TIMEOUT", "60")
    shown = Settings().masked()
    assert shown["SHEPHERD_STALL_WARN"] == "30 (half of SHEPHERD_TASK_IDLE_TIMEOUT)"
    assert shown["SHEPHERD_STALL_EVERY"] == "10"


async def test_a_run_cut_short_by_the_schedulers_stop_is_recorded_interrupted_and_logs_no_traceback(
    sqlite_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Found in the suite: a server stopping while a job ran logged APScheduler's 'raised an exception' with a
    CancelledError traceback, as if the job had failed."""
    db = Database(sqlite_url)
    shepherd = Shepherd(db)
    began = asyncio.Event()

    async def slow(now: datetime) -> str:
        began.set()
        await asyncio.sleep(30)
        return "never"

    shepherd.scheduling.jobs = [Job("slow", 0.2, slow)]
    scheduler = Scheduler(shepherd.scheduling, holder="host-a:1", grace_s=60)
    try:
        with caplog.at_level(logging.INFO):
            await scheduler.start()
            await asyncio.wait_for(began.wait(), 10)
            await scheduler.stop()
            await until(lambda: any("interrupted" in r.message for r in caplog.records))
        [run] = await runs_of(db, "slow")
        assert run.ok is False and "interrupted" in (run.result or "")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "no failure logged"
    finally:
        await db.dispose()
