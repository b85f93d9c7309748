"""Jobs and their schedules: a number of seconds (an interval) or a cron string (core.schedule.cron: crontab's
5 fields, or 6 with seconds first), both in UTC.

Fire times come from APScheduler's trigger classes, here and in the live scheduler alike, so any process can say
when a job runs next. Intervals count from a fixed epoch rather than from a scheduler's start: every process
computes the same fire times, which is what makes (job, fire time) a run's identity across a failover.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from apscheduler.triggers.interval import IntervalTrigger

from core.errors import ShepherdError
from core.schedule import cron

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Schedule = float | str  # seconds, or a cron string
JobFn = Callable[[datetime], Awaitable[str]]  # a job: its fire time in, a one-line result out


@dataclass(frozen=True)
class Job:
    name: str
    schedule: Schedule
    run: JobFn
    setting: str = ""  # the setting its schedule comes from, for `schedules`


class BadSchedule(ShepherdError):
    code = "BAD_SCHEDULE"
    status = 400


def parse_schedule(value: object) -> Schedule:
    """A schedule as settings hold it: a positive number of seconds, or a cron string (minute hour day month
    weekday, UTC; or seconds first)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                cron.parse(text)
            except cron.CronError as exc:
                raise BadSchedule(f"{text!r}: a number of seconds or a cron string; {exc}") from None
            return " ".join(text.split())
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadSchedule(f"{value!r}: a schedule in seconds is a positive number")
    return seconds


def trigger(schedule: Schedule) -> Any:
    """APScheduler's trigger for a schedule (untyped: APScheduler 3 ships no types)."""
    if isinstance(schedule, str):
        return cron.parse(schedule).trigger  # crontab's weekdays (0 = Sunday), which CronTrigger counts from Monday
    return IntervalTrigger(seconds=schedule, start_date=EPOCH, timezone=UTC)


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire time strictly after `after`."""
    fire = cast(datetime | None, trigger(schedule).get_next_fire_time(None, after))
    if fire is not None and fire <= after:  # an interval trigger answers `after` itself when it falls on a beat
        fire = cast(datetime | None, trigger(schedule).get_next_fire_time(fire, fire))
    return fire


def describe(schedule: Schedule) -> str:
    if isinstance(schedule, str):
        return f"cron {schedule} (UTC)"
    return f"every {schedule:g} s"
