"""Digests: `digest <cron>|off` in a place, and the job that posts the digests due.

A digest's next post is a row's due time (`Digest.next_fire_at`): the scheduler's job (`post_due`, every
SHEPHERD_DIGEST_EVERY seconds on the leader) claims the rows due with FOR UPDATE SKIP LOCKED and, in the same
transaction, writes the digest to the outbox and moves the due time past now. So a digest is posted once per fire
time whichever process runs the job, however often, and a crash before the commit leaves the row due for the next
run: nothing repeated, nothing lost. Fire times missed while nobody ran the job coalesce into one digest, for the
latest of them (logged with how many were skipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.channels.conversations import bind_thread
from core.channels.outbox import enqueue
from core.clock import as_utc, utcnow
from core.commands.grammar import Where
from core.digests.compose import gather, message
from core.errors import ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Scope
from core.projects import resolve_project
from core.schedule import cron as schedule
from core.store.db import Database
from core.store.events import record
from core.store.models import Digest, Project

log = logging.getLogger(__name__)

CLAIM_MAX = 20  # digests claimed per transaction: a run posts them in batches, each batch committed on its own
LISTED_MAX = 500


@dataclass(frozen=True)
class DigestView:
    """A place's digest, for `digest` and `schedules`."""

    id: str
    channel: str
    address: str
    cron: str
    timezone: str
    project: str | None
    next_fire_at: datetime
    last_fired_at: datetime | None
    last_posted_at: datetime | None

    @property
    def place(self) -> tuple[str, str]:
        return self.channel, self.address


class Digests:
    def __init__(self, db: Database, *, timezone: str = "UTC", always: bool = False) -> None:
        schedule.zone(timezone)  # a bad SHEPHERD_TIMEZONE fails at start, not at the first digest
        self.db = db
        self.timezone = timezone
        self.always = always  # SHEPHERD_DIGEST_ALWAYS: post "all quiet" too

    # --- the command ---------------------------------------------------------------------------------

    async def set(self, principal: Principal, place: Where, cron: str, *, project: str | None = None,
                  now: datetime | None = None) -> DigestView:
        """Give `place` a digest on `cron` (replacing the one it has). A GitHub issue's digest sees its
        repository's project only; elsewhere `project` scopes it, or it sees the org."""
        principal.require(Scope.WRITE, "setting a digest")
        parsed = schedule.parse(cron, self.timezone)
        now = as_utc(now or utcnow())
        first = parsed.next_after(now)
        async with self.db.write() as session:
            project_id = await self._scope(session, principal.org_id, place, project)
            row = await self._find(session, principal.org_id, place)
            if row is None:
                row = Digest(id=new_id("dig"), org_id=principal.org_id, channel=place.channel, address=place.address,
                             cron=parsed.cron, created_by=principal.actor, next_fire_at=first, reported_until=now)
            row.cron, row.timezone, row.project_id, row.next_fire_at = parsed.cron, parsed.timezone, project_id, first
            row.created_by = principal.actor
            session.add(row)
            await record(session, principal, "digest", "digest.set",
                         payload={"channel": place.channel, "address": place.address, "cron": parsed.cron,
                                  "timezone": parsed.timezone, "projectId": project_id})
            await session.flush()
            return await self._view(session, row)

    async def off(self, principal: Principal, place: Where) -> DigestView | None:
        """Stop `place`'s digest; returns the one it had, if any."""
        principal.require(Scope.WRITE, "stopping a digest")
        async with self.db.write() as session:
            row = await self._find(session, principal.org_id, place)
            if row is None:
                return None
            view = await self._view(session, row)
            await session.delete(row)
            await record(session, principal, "digest", "digest.off",
                         payload={"channel": place.channel, "address": place.address, "cron": row.cron})
            return view

    async def show(self, principal: Principal, place: Where) -> DigestView | None:
        principal.require(Scope.READ, "reading a digest")
        async with self.db.read() as session:
            row = await self._find(session, principal.org_id, place)
            return None if row is None else await self._view(session, row)

    async def list(self, principal: Principal) -> list[DigestView]:
        """Every digest of the org, soonest first (for `schedules`)."""
        principal.require(Scope.READ, "listing digests")
        async with self.db.read() as session:
            rows = list(await session.exec(select(Digest).where(Digest.org_id == principal.org_id)
                                           .order_by(col(Digest.next_fire_at), col(Digest.id)).limit(LISTED_MAX)))
            return [await self._view(session, r) for r in rows]

    # --- the job -------------------------------------------------------------------------------------

    async def post_due(self, now: datetime) -> str:
        """Post every digest due at `now` (one message per digest, for its latest missed fire time); safe in
        several processes at once. Returns a line for `schedules`."""
        now = as_utc(now)
        posted = quiet = 0
        while True:
            async with self.db.write() as session:
                query = select(Digest).where(col(Digest.next_fire_at) <= now) \
                    .order_by(col(Digest.next_fire_at), col(Digest.id)).limit(CLAIM_MAX)
                if not self.db.is_sqlite:  # SQLite's writers are one at a time already
                    query = query.with_for_update(skip_locked=True)
                due = list(await session.exec(query))
                for row in due:
                    if await self._fire(session, row, now):
                        posted += 1
                    else:
                        quiet += 1
            if len(due) < CLAIM_MAX:
                break
        if not posted and not quiet:
            return "nothing due"
        result = f"posted {posted} digest{'s' if posted != 1 else ''}"
        return result + (f", {quiet} with nothing new not posted" if quiet else "")

    async def _fire(self, session: AsyncSession, row: Digest, now: datetime) -> bool:
        """Post `row`'s digest for its latest fire time up to `now` (if there is news, or always) and move its due
        time past `now`, in the caller's transaction. Whether it posted."""
        try:
            parsed = schedule.parse(row.cron, row.timezone)
        except ValidationFailed as exc:  # a zone gone from this host's tz database: say so, and stop retrying
            log.error("digest %s at %s:%s cannot be read (%s): left off", row.id, row.channel, row.address, exc)
            row.next_fire_at = schedule.parse("0 0 1 1 *").next_after(now)
            session.add(row)
            return False
        fire, missed = parsed.latest_due(as_utc(row.next_fire_at), now)
        if missed:
            log.warning("digest %s at %s:%s: %s%d fire time(s) missed before %s, coalesced into one", row.id,
                        row.channel, row.address, "over " if missed >= schedule.MISSED_COUNTED else "", missed,
                        fire.isoformat())
        snap = await gather(session, row, now)
        # the place's first digest always comes ("all quiet" when there is nothing): whoever set it sees it works
        news = self.always or row.last_posted_at is None or snap.news(row.seen)
        if news:
            thread = await bind_thread(session, row.org_id, row.channel, row.address)
            local = fire.astimezone(schedule.zone(row.timezone))
            await enqueue(session, [thread], message(row, snap, fire, _zone_label(row.timezone, local), local))
            row.last_posted_at = fire
        row.last_fired_at = fire
        row.next_fire_at = parsed.next_after(now)
        row.reported_until = now
        row.seen = snap.keys()
        session.add(row)
        return news

    # --- helpers -------------------------------------------------------------------------------------

    @staticmethod
    async def _find(session: AsyncSession, org_id: str, place: Where) -> Digest | None:
        return (await session.exec(select(Digest).where(
            Digest.org_id == org_id, Digest.channel == place.channel, Digest.address == place.address))).first()

    @staticmethod
    async def _scope(session: AsyncSession, org_id: str, place: Where, project: str | None) -> str | None:
        """The project a place's digest covers: the one named; for a GitHub issue, its repository's (an issue is
        read by whoever reads the repository: it is told of that project's tasks and no other's); else None."""
        named = (await resolve_project(session, org_id, project)).id if project else None
        if place.channel != "github":
            return named
        repo = place.address.split("#", 1)[0]
        found = list(await session.exec(select(Project.id).where(Project.org_id == org_id, Project.repo == repo)
                                        .order_by(col(Project.created_at))))
        if not found:
            raise ValidationFailed(f"no project has the repository {repo}: `project create <name> --repo {repo}` "
                                   "makes one", code="PROJECT_NOT_FOUND")
        if named is not None and named not in found:  # a public issue must not be told of another project's work
            raise ValidationFailed(f"a digest in an issue of {repo} covers that repository's project only: "
                                   f"`--project {project}` is another", code="PROJECT_NOT_HERE")
        return named or found[0]

    @staticmethod
    async def _view(session: AsyncSession, row: Digest) -> DigestView:
        name = None
        if row.project_id:
            name = (await session.exec(select(Project.name).where(Project.id == row.project_id))).first()
        return DigestView(row.id, row.channel, row.address, row.cron, row.timezone, name, as_utc(row.next_fire_at),
                          as_utc(row.last_fired_at) if row.last_fired_at else None,
                          as_utc(row.last_posted_at) if row.last_posted_at else None)


def _zone_label(timezone: str, local: datetime) -> str:
    return "UTC" if timezone == "UTC" else (local.tzname() or timezone)
