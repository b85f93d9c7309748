"""The scheduler as core sees it: the deployment's jobs, their runs, and who leads (for `schedules` and /readyz)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.schedule.leader import Leadership, NoElection
from core.schedule.runs import JobRuns, Run
from core.schedule.schedules import Job, next_fire
from core.store.db import Database


@dataclass(frozen=True)
class JobState:
    job: Job
    next_run: datetime | None
    last: Run | None


class Scheduling:
    def __init__(self, db: Database) -> None:
        self.runs = JobRuns(db)
        # Set by the process assembly (bot.scheduler.jobs, bot.leader): every process knows the jobs and can see
        # who leads, whether or not it leads itself.
        self.jobs: list[Job] = []
        self.leadership: Leadership = NoElection()

    async def states(self, now: datetime) -> list[JobState]:
        """Each job with its next fire time (from its schedule) and its latest run."""
        last = await self.runs.last()
        return [JobState(job, next_fire(job.schedule, now), last.get(job.name)) for job in self.jobs]
