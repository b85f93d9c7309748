"""A digest's cron schedule, without I/O: reading what people type (standard crontab, 5 fields, or Shepherd's
6-field form with seconds first), and the fire times it gives.

APScheduler's CronTrigger computes the fire times. Three things are mended on the way in: a bad field is named in
the error (APScheduler's own message does not say which field), the day of the week is read as crontab reads it
(0 or 7 is Sunday), where CronTrigger numbers from Monday (`1` would be a Tuesday there), and a day of the month and
a day of the week both restricted fire on either, as crontab(5) says, where CronTrigger wants both (`0 9 1,15 * 1`
is the 1st, the 15th and every Monday; CronTrigger alone would wait for a Monday the 1st or the 15th).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from core.clock import as_utc
from core.errors import ValidationFailed

FIELDS_5 = ("minute", "hour", "day", "month", "day_of_week")
FIELDS_6 = ("second", *FIELDS_5)
_SPANS = {"second": "0-59", "minute": "0-59", "hour": "0-23", "day": "1-31", "month": "1-12 or jan-dec",
          "day_of_week": "0-7 or sun-sat (0 and 7 are Sunday)"}
_LABEL = {"day": "day of month", "day_of_week": "day of week"}
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_ITEM = re.compile(r"^(\*|[a-z]{3}|\d+)(?:-([a-z]{3}|\d+))?(?:/(\d+))?$")
MISSED_COUNTED = 1000  # missed fire times counted one by one; past this the walk jumps to the latest


class CronError(ValidationFailed):
    code = "INVALID_CRON"


@dataclass(frozen=True)
class Schedule:
    """A parsed cron expression in a time zone."""

    cron: str  # as typed, words joined by one space
    timezone: str
    trigger: BaseTrigger  # a CronTrigger, or two ORed (a day of the month or a day of the week)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment`, in UTC."""
        fire = self.trigger.get_next_fire_time(None, as_utc(moment) + timedelta(microseconds=1))
        if fire is None:  # a cron expression always has a next fire time; CronTrigger has no end date here
            raise CronError(f"`{self.cron}` never fires again")
        return as_utc(fire).astimezone(ZoneInfo("UTC"))

    def latest_due(self, due: datetime, now: datetime) -> tuple[datetime, int]:
        """The latest fire time in [due, now] (`due` is one, and is not after `now`) and how many earlier ones it
        stands for (missed: their digests coalesce into this one). Past MISSED_COUNTED the count is a lower bound."""
        fire, missed = as_utc(due), 0
        now = as_utc(now)
        while True:
            following = self.next_after(fire)
            if following > now:
                return fire, missed
            fire, missed = following, missed + 1
            if missed == MISSED_COUNTED:  # a long downtime on a fine schedule: jump close to now, then walk
                for back in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(days=32)):
                    near = self.next_after(now - back - timedelta(microseconds=1))
                    if fire < near <= now:
                        fire = near
                        break


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"unknown time zone {name!r}: use an IANA name like UTC or Europe/Berlin",
                               code="INVALID_TIMEZONE") from None


def _day_name(word: str, field: str) -> str:
    if word.isdigit():
        n = int(word)
        if n > 7:
            raise ValueError(field)
        return _DAYS[n % 7]
    if word not in _DAYS:
        raise ValueError(field)
    return word


def _days_of_week(value: str) -> str:
    """A crontab day-of-week field as the days CronTrigger understands (names: no numbering to get wrong)."""
    days: set[int] = set()
    for item in value.lower().split(","):
        m = _DOW_ITEM.match(item)
        if not m:
            raise ValueError(item)
        first, last, step = m.group(1), m.group(2), int(m.group(3) or 1)
        if step < 1:
            raise ValueError(item)
        if first == "*":
            if last:
                raise ValueError(item)
            start, end = 0, 6
        else:
            start = 7 if first == "7" and last else _DAYS.index(_day_name(first, item))  # `7-7`: Sunday, not every day
            end = (7 if last in ("7",) else _DAYS.index(_day_name(last, item))) if last else \
                (6 if m.group(3) else start)
            if end < start:
                raise ValueError(item)
        days.update(d % 7 for d in range(start, end + 1, step))
    # CronTrigger's own order (mon first); any order is accepted, this one reads well in logs
    return ",".join(_DAYS[d] for d in (1, 2, 3, 4, 5, 6, 0) if d in days)


def parse(cron: str, timezone: str = "UTC") -> Schedule:
    """`*/15 9-17 * * 1-5` (crontab: minute hour day-of-month month day-of-week) or the same with seconds first
    (`*/10 * * * * *`); a CronError names the field that is wrong."""
    words = cron.split()
    if len(words) not in (5, 6):
        raise CronError(f"a schedule is 5 fields (minute hour day-of-month month day-of-week, like `0 9 * * 1-5`) "
                        f"or 6 with seconds first (`*/10 * * * * *`); `{cron.strip()}` has {len(words)}")
    names = FIELDS_6 if len(words) == 6 else FIELDS_5
    tz = zone(timezone)
    values = dict(zip(names, words, strict=True))
    for name, value in values.items():
        try:
            if name == "day_of_week":
                values[name] = _days_of_week(value)
            CronTrigger(**{name: values[name]}, timezone=tz)
        except ValueError:
            label = _LABEL.get(name, name)
            raise CronError(f"the {label} field `{value}` is not valid: {label} is {_SPANS[name]}, with `*`, "
                            "`a-b`, `a,b` and `*/n`") from None
    if len(words) == 5:
        values["second"] = "0"
    try:
        trigger: BaseTrigger = CronTrigger(**values, timezone=tz)
        if not values["day"].startswith("*") and not words[-1].startswith("*"):  # both restricted: either fires
            trigger = OrTrigger([CronTrigger(**{**values, "day_of_week": "*"}, timezone=tz),
                                 CronTrigger(**{**values, "day": "*"}, timezone=tz)])
    except ValueError as exc:  # each field was fine alone; together they name no time (a 31st of February)
        raise CronError(f"`{cron.strip()}` names no time: {exc}") from None
    schedule = Schedule(" ".join(words), timezone, trigger)
    return schedule
