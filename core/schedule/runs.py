"""Each run of a scheduled job at one fire time, recorded before the job works, so that it happens once.

The row (job, fire_time) is unique: the scheduler inserts it before calling the job, and a second insert (another
process that also thought it leads for a moment, a restart that fires the same time again) fails, which means
"already run": skip. A run whose process died mid-way stays visible as started and never finished; it is not run
again at that fire time (the next fire time does the job's work: every job is written to catch up).

The table keeps the last KEEP runs of each job (pruned as runs finish), so it stays small without a clean-up job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from core.clock import as_utc, utcnow
from core.errors import Conflict
from core.store.db import Database
from core.store.models import JobRun, table_of

KEEP = 50  # runs kept per job: enough to see a day of an hourly job, or the last minutes of a frequent one
RESULT_MAX = 500

RUNS = table_of(JobRun)


@dataclass(frozen=True)
class Run:
    job: str
    fire_time: datetime
    holder: str
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    result: str | None

    @property
    def state(self) -> str:
        """`ok`, `failed`, or `running` (which, long after its start, means its process died mid-way)."""
        if self.finished_at is None:
            return "running"
        return "ok" if self.ok else "failed"


class JobRuns:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, job: str, fire_time: datetime, holder: str) -> bool:
        """Takes the run of `job` at `fire_time` for `holder`: False when it was already taken (run, running,
        or died mid-way), and then the caller does not run it."""
        try:
            await self.db.change(RUNS.insert().values(
                job=job, fire_time=as_utc(fire_time), holder=holder, started_at=utcnow()).returning(RUNS.c.id))
        except Conflict:
            return False
        return True

    async def finish(self, job: str, fire_time: datetime, *, ok: bool, result: str) -> None:
        """The run's outcome (one line), and the job's oldest runs beyond KEEP dropped."""
        async with self.db.write() as session:
            conn = await session.connection()
            await conn.execute(update(RUNS).where(RUNS.c.job == job, RUNS.c.fire_time == as_utc(fire_time)).values(
                finished_at=utcnow(), ok=ok, result=result[:RESULT_MAX]))
            cutoff = (await conn.execute(select(RUNS.c.fire_time).where(RUNS.c.job == job)
                                         .order_by(RUNS.c.fire_time.desc()).offset(KEEP).limit(1))).scalar()
            if cutoff is not None:
                await conn.execute(delete(RUNS).where(RUNS.c.job == job, RUNS.c.fire_time <= cutoff))

    async def last(self) -> dict[str, Run]:
        """Each job's latest run (by fire time)."""
        latest = (select(RUNS.c.job, func.max(RUNS.c.fire_time).label("fire_time"))
                  .group_by(RUNS.c.job).subquery())
        rows = await self.db.rows(select(RUNS).join(
            latest, (RUNS.c.job == latest.c.job) & (RUNS.c.fire_time == latest.c.fire_time)))
        return {r.job: _run(r) for r in rows}

    async def recent(self, job: str, limit: int = KEEP) -> list[Run]:
        """A job's runs, newest first."""
        rows = await self.db.rows(select(RUNS).where(RUNS.c.job == job)
                                  .order_by(RUNS.c.fire_time.desc()).limit(limit))
        return [_run(r) for r in rows]


def _run(row: object) -> Run:
    r = row._mapping  # type: ignore[attr-defined]
    return Run(job=r["job"], fire_time=as_utc(r["fire_time"]), holder=r["holder"],
               started_at=as_utc(r["started_at"]),
               finished_at=as_utc(r["finished_at"]) if r["finished_at"] is not None else None,
               ok=r["ok"], result=r["result"])
