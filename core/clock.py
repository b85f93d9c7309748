"""Time in one place: aware UTC datetimes and the ISO 8601 form the APIs speak."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Datetimes read back from SQLite are naive; they were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime, timespec: str = "seconds") -> str:
    """`2024-01-15T14:32:00Z`, seconds precision, as the seed documents show (`timespec="milliseconds"`:
    `2026-05-11T16:00:00.000Z`, Eliza's). (`isoformat` rather than `strftime`: a fifth of the time, and lists
    format two of these per row.)"""
    if value.tzinfo is not None:  # read back from PostgreSQL: already UTC, so only the zone is dropped
        value = value.replace(tzinfo=None) if value.tzinfo is UTC else value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec=timespec) + "Z"
