"""The scheduler: the deployment's fixed jobs, run by APScheduler 3 on the elected leader only (bot.leader).

Its job store is the default in-memory one, never a shared one (APScheduler 3's stores are not made to be shared by
schedulers): every process knows the jobs from its settings (`jobs`), and the leader alone runs them. What makes a
run happen once is Shepherd's own record (core.schedule.runs): the run of a job at a fire time is inserted before the
job works, and a second insert of the same (job, fire time), from a process that led a moment ago or a restart,
finds it taken and skips. Fire times count from a fixed epoch (core.schedule.schedules), so two processes agree on
them.

A job is a core coroutine `run(now) -> str` (a one-line result, shown by `schedules`), safe to run in several
processes at once and after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.clock import iso, utcnow
from core.schedule.schedules import Job, next_fire, parse_schedule, trigger
from core.schedule.service import Scheduling
from core.wakeup import Wakeup

if TYPE_CHECKING:
    from bot.settings import Settings
    from core.shepherd import Shepherd

log = logging.getLogger(__name__)


def jobs(settings: Settings, shepherd: Shepherd) -> list[Job]:
    """The deployment's jobs, each with its schedule from settings (seconds or cron, UTC)."""
    return [
        Job("expiry", settings.expiry_every, shepherd.confirmations.expiry, "SHEPHERD_EXPIRY_EVERY"),
        Job("digests", settings.digest_every, shepherd.digests.post_due, "SHEPHERD_DIGEST_EVERY"),
        Job("reminders", settings.remind_every, shepherd.reminders.remind_due, "SHEPHERD_REMIND_EVERY"),
        Job("stalls", settings.stall_check_every(), shepherd.watchdog.warn_stalled, "SHEPHERD_STALL_EVERY"),
        Job("cleanup", parse_schedule(settings.cleanup_schedule), shepherd.housekeeping.clean_up,
            "SHEPHERD_CLEANUP_SCHEDULE"),
    ]


JOB_TIMEOUT_S = 900.0  # the longest one run of a job may take before it is recorded failed (the next fire time runs)


def _failure(exc: BaseException) -> str:
    """A failed run as `schedules` shows it, to operators of every org: the error's kind and first line only (a
    database error's later lines carry its statement and parameters, another org's data; the log has it all)."""
    if isinstance(exc, TimeoutError):
        return f"failed: timed out after {JOB_TIMEOUT_S:g} s"
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"failed: {type(exc).__name__}: {first}" if first else f"failed: {type(exc).__name__}"


def grace_for(leader_timeout: float) -> int:
    """How late a run may still start (APScheduler's misfire_grace_time; its default of 1 s drops a run that an
    event loop busy for a second delays). A run late by up to a failover (the leader timeout) and then some is
    still worth doing: the new leader catches it up; one later than that is logged as missed, and the next fire
    time does the work (every job looks at what is due, not at what it missed)."""
    return max(60, math.ceil(2 * leader_timeout))  # whole seconds: APScheduler takes an int


class _At:
    """A job as APScheduler's executor sees it, with the fire time it runs for as a keyword (APScheduler 3 does not
    pass it, and the fire time is the run's identity)."""

    def __init__(self, job: Any, fire_time: datetime) -> None:
        self._job = job
        self.kwargs = {**job.kwargs, "fire_time": fire_time}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


class _FireTimeExecutor(AsyncIOExecutor):  # type: ignore[misc]  (APScheduler 3 is untyped)
    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        for run_time in run_times:  # one: every job coalesces
            super()._do_submit_job(_At(job, run_time), [run_time])


class Scheduler:
    """Runs `scheduling.jobs` while started: start it when this process becomes the leader, stop it the moment
    it stops being it."""

    name = "scheduler"

    def __init__(
        self, scheduling: Scheduling, *, holder: str, grace_s: int, outbox_due: Wakeup | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.scheduling = scheduling
        self.holder = holder
        self.grace_s = grace_s
        self.outbox_due = outbox_due
        self.clock = clock
        self._aps: Any = None

    @property
    def running(self) -> bool:
        return self._aps is not None

    async def start(self) -> None:
        if self._aps is not None:
            return
        aps = AsyncIOScheduler(timezone=UTC, executors={"default": _FireTimeExecutor()})
        aps.add_listener(self._missed, EVENT_JOB_MISSED)
        now = self.clock()
        last = await self.scheduling.runs.last()
        for job in self.scheduling.jobs:
            resume: dict[str, Any] = {}
            prior = last.get(job.name)
            if prior is not None:
                resume_at = self._resume_at(job, prior.fire_time, now)
                if resume_at is not None:
                    resume["next_run_time"] = resume_at
            # coalesce: fire times missed while the loop was busy, or while no process led, are one run (each job
            # does what is due now, so running it once per missed time would repeat work and messages).
            # max_instances 1: a slow run is never overlapped by the next.
            aps.add_job(self._run, trigger(job.schedule), args=(job,), kwargs={"fire_time": None}, id=job.name,
                        name=job.name, misfire_grace_time=self.grace_s, coalesce=True, max_instances=1, **resume)
        aps.start()
        self._aps = aps
        log.info("scheduler started: %s", ", ".join(f"{j.name} ({j.schedule})" for j in self.scheduling.jobs))

    async def stop(self) -> None:
        """At once (wait=False): a run in progress is cancelled; its record shows it started and never finished,
        and its work is whole transactions, so the next leader's run does what it left."""
        if self._aps is None:
            return
        aps, self._aps = self._aps, None
        aps.shutdown(wait=False)
        log.info("scheduler stopped")

    def _resume_at(self, job: Job, last_fire: datetime, now: datetime) -> datetime | None:
        """Where a job picks up after a time without a scheduler (a failover, a restart): the fire times since its
        last recorded run are handed to APScheduler as misfires (coalesced into one run, or logged as missed past
        the grace time); those older than the grace time are logged here, not walked one by one."""
        first = next_fire(job.schedule, last_fire)
        if first is None or first > now:
            return None
        horizon = now - timedelta(seconds=self.grace_s)
        if first < horizon:
            log.warning("scheduler: job %s missed its runs from %s until %s (no scheduler ran; past the grace time "
                        "of %gs): the next run does what is due", job.name, iso(first), iso(horizon), self.grace_s)
            return next_fire(job.schedule, horizon)
        log.info("scheduler: job %s missed its runs since %s (no scheduler ran): one run now for them all",
                 job.name, iso(first))
        return first

    def _missed(self, event: JobExecutionEvent) -> None:
        log.warning("scheduler: job %s missed its run at %s (started too late: more than %gs, the grace time); the "
                    "next run does what is due", event.job_id, iso(event.scheduled_run_time), self.grace_s)

    async def _run(self, job: Job, fire_time: datetime | None) -> None:
        assert fire_time is not None, "the executor passes each run's fire time"  # _FireTimeExecutor
        runs = self.scheduling.runs
        try:
            begun = await runs.begin(job.name, fire_time, self.holder)
        except asyncio.CancelledError:  # stopped (no longer the leader, shutting down) before it began: not run
            log.info("scheduler: job %s at %s not begun: the scheduler stopped", job.name, iso(fire_time))
            return
        if not begun:
            log.info("scheduler: job %s at %s was run already: skipped", job.name, iso(fire_time))
            return
        try:
            async with asyncio.timeout(JOB_TIMEOUT_S):  # a job stuck on a lock wait would hold all its fire times
                result = await job.run(self.clock())
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)
            if not interrupted:
                log.exception("scheduler: job %s at %s failed", job.name, iso(fire_time))
            with contextlib.suppress(BaseException):
                await runs.finish(job.name, fire_time, ok=False, result="interrupted: no longer the leader"
                                  if interrupted else _failure(exc))
            if interrupted:
                # APScheduler logs whatever a job raises as a failure with its traceback: a run cut short by the
                # scheduler's own stop is not one (its record says it was interrupted)
                log.info("scheduler: job %s at %s interrupted: the scheduler stopped", job.name, iso(fire_time))
            return
        try:
            await runs.finish(job.name, fire_time, ok=True, result=result)
        except asyncio.CancelledError:  # stopped while recording a run that did its work: begun, never finished
            log.info("scheduler: job %s at %s done, its record cut short: the scheduler stopped", job.name,
                     iso(fire_time))
            return
        log.debug("scheduler: job %s at %s: %s", job.name, iso(fire_time), result)
        if self.outbox_due is not None:
            self.outbox_due()  # what the job wrote to the outbox goes out now
