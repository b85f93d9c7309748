"""One person across channels: `link` gives a one-time code, and `link <code>` said by the same person in another
channel joins the user they are there to the user who asked for the code.

The user who asked for the code stays; the other one is joined into it: their identities (and so every channel
that knew them), their tokens, the tasks they own, what they requested and their votes move over, and they are
removed. From then on the person is one owner, one requester and one voter (core.people.access): approving from
Slack and then from Telegram is one vote.

Roles: the joined user keeps the role of the user who asked for the code. When the other identity held a higher
role, it is kept only if an admin confirms it, and saying `link <code>` as an admin is that confirmation; anyone
else is told that an admin can raise it with `role`. So a code can never lift an identity above what an admin
gave it.

Codes: 8 characters of an unambiguous alphabet (about 40 bits), good for 10 minutes and once, only their SHA-256
kept, compared in constant time; a person gets a few wrong tries per 10 minutes. A code must be typed in another
channel than the one it was given in (one seen in a group chat is spent by the first try there), and the place it
was given in is told whose identity joined: whoever asked for a code sees if someone else used it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.confirmations import CODE_ALPHABET, Confirmations
from core.autonomy.plans import Status
from core.channels.conversations import bind_thread
from core.channels.outbox import REPLY_KEY, Message, enqueue
from core.clock import utcnow
from core.commands.grammar import Where
from core.errors import Forbidden, NotFound, ShepherdError, ValidationFailed
from core.ids import new_id
from core.people.access import Principal, Role, Scope
from core.store.db import Database
from core.store.events import record
from core.store.models import (
    ApiToken,
    Confirmation,
    Identity,
    LinkAttempt,
    LinkCode,
    SignInLink,
    Task,
    User,
    Vote,
    WebSession,
)

LINK_CODE_LENGTH = 8
LINK_TTL = timedelta(minutes=10)
MAX_WRONG_TRIES = 5  # per person, in LINK_TTL


class TooManyTries(ShepherdError):
    code = "TOO_MANY_LINK_TRIES"
    status = 429


@dataclass(frozen=True)
class LinkCodeIssued:
    code: str  # shown once, never stored
    expires_at: datetime


@dataclass(frozen=True)
class Linked:
    user: str  # the name of the one user the person now is
    role: str  # their role now
    joined: str  # the channel whose identity joined (where `link <code>` was said)
    into: str  # the channel the code was given in
    held: Role | None = None  # the higher role the joined identity had and did not keep (an admin may raise it)
    already: bool = False  # the two were one user already


def normal(code: str) -> str:
    """What people type, as the code: case, spaces and dashes do not matter."""
    return "".join(ch for ch in code.upper() if ch not in " -\t")


def _hash(code: str) -> str:
    return hashlib.sha256(normal(code).encode()).hexdigest()


def shown(code: str) -> str:
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def _user_of(principal: Principal, doing: str) -> str:
    principal.require_person(doing)
    if not principal.user_id:
        raise Forbidden(f"{doing} needs a Shepherd user: this principal is not one", code="NOT_A_USER")
    return principal.user_id


class Links:
    def __init__(self, db: Database, confirmations: Confirmations) -> None:
        self.db = db
        self.confirmations = confirmations  # a joined person's double vote is taken back: the prompt says so

    async def issue(self, principal: Principal, place: Where | None) -> LinkCodeIssued:
        """A new one-time code for the principal's user (their earlier unused codes are spent)."""
        principal.require(Scope.READ, "linking your identities")
        user_id = _user_of(principal, "linking identities")
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(LINK_CODE_LENGTH))
        now = utcnow()
        async with self.db.write() as session:
            await session.exec(update(LinkCode).where(
                col(LinkCode.user_id) == user_id, col(LinkCode.used_at).is_(None)).values(used_at=now))
            row = LinkCode(id=new_id("link"), org_id=principal.org_id, user_id=user_id, code_hash=_hash(code),
                           channel=place.channel if place else principal.channel,
                           address=place.address if place else "", created_at=now, expires_at=now + LINK_TTL)
            session.add(row)
            await record(session, principal, "user", "user.link_code_issued",
                         payload={"user": principal.name, "channel": row.channel})
        return LinkCodeIssued(shown(code), now + LINK_TTL)

    async def redeem(self, principal: Principal, code: str) -> Linked:
        """Join the principal's user (as this channel knows them) into the user who was given `code`."""
        principal.require(Scope.READ, "linking your identities")
        joining = _user_of(principal, "linking identities")
        if not normal(code).isalnum() or len(normal(code)) != LINK_CODE_LENGTH:
            raise ValidationFailed(f"a link code is {LINK_CODE_LENGTH} letters and digits, like "
                                   f"{shown('K7P2Q9XM')}: `link` in your other channel gives one",
                                   code="INVALID_LINK_CODE")
        now = utcnow()
        async with self.db.read() as session:
            known_here = (await session.exec(select(Identity.id).where(
                Identity.org_id == principal.org_id, Identity.user_id == joining,
                Identity.channel == principal.channel))).first()
            if known_here is None:
                raise Forbidden(
                    f"`link <code>` joins the account {principal.channel} knows you by, and {principal.channel} "
                    "acts as a user it names: say `link` here and `link <code>` in the chat instead",
                    code="NOT_A_CHANNEL_IDENTITY")
            wrong = (await session.exec(select(func.count()).select_from(LinkAttempt).where(
                LinkAttempt.org_id == principal.org_id, LinkAttempt.user_id == joining,
                col(LinkAttempt.at) > now - LINK_TTL))).one()
        if wrong >= MAX_WRONG_TRIES:
            raise TooManyTries(f"too many wrong link codes: try again in {LINK_TTL.seconds // 60} minutes")
        async with self.db.write() as session:
            row = await self._live(session, principal.org_id, code, now)
            if row is None:  # wrong, spent or expired: all alike, so that a guess learns nothing
                session.add(LinkAttempt(org_id=principal.org_id, user_id=joining, at=now))
                outcome: Linked | ShepherdError = NotFound(
                    f"no such link code, or it was used or has expired ({MAX_WRONG_TRIES - wrong - 1} tries left): "
                    "say `link` again in the channel you want to join", code="LINK_CODE_NOT_FOUND")
            else:
                outcome = await self._join(session, principal, row, joining, now)
        if isinstance(outcome, ShepherdError):
            raise outcome  # after the commit: the try is counted, a code typed where it was shown is spent
        return outcome

    @staticmethod
    async def _live(session: AsyncSession, org_id: str, code: str, now: datetime) -> LinkCode | None:
        """The unused, unexpired code `code` names, locked. Every live code of the org is compared, in constant
        time: how long it takes says nothing of how close a guess came."""
        wanted = _hash(code).encode()
        found = None
        rows = await session.exec(select(LinkCode).where(
            LinkCode.org_id == org_id, col(LinkCode.used_at).is_(None), col(LinkCode.expires_at) > now))
        for row in rows:
            if hmac.compare_digest(row.code_hash.encode(), wanted):
                found = row
        if found is None:
            return None
        # under the lock, again: two people typing it at once, one of them wins
        locked = (await session.exec(select(LinkCode).where(LinkCode.id == found.id).with_for_update()
                                     .execution_options(populate_existing=True))).first()
        return locked if locked is not None and locked.used_at is None else None

    async def _join(self, session: AsyncSession, principal: Principal, row: LinkCode, joining: str,
                    now: datetime) -> Linked | ShepherdError:
        """Join `joining` into the user of the live code `row` (locked), or the refusal to raise once committed."""
        if row.user_id == joining:
            if row.channel == principal.channel:
                return ValidationFailed("type the code in your other channel, not here: that joins the two",
                                        code="LINK_SAME_CHANNEL")
            row.used_at, row.used_by = now, f"{principal.channel}:{principal.name}"
            session.add(row)
            user = await session.get(User, joining)
            assert user is not None
            return Linked(user.name, user.role, principal.channel, row.channel, already=True)
        row.used_at, row.used_by = now, f"{principal.channel}:{principal.name}"[:200]
        session.add(row)
        if row.channel == principal.channel:  # a code seen in a shared chat is spent by the first try there
            return ValidationFailed(
                f"a link code is typed in another channel than the one it was given in ({row.channel}): this one "
                "is spent now, say `link` again", code="LINK_SAME_CHANNEL")
        # both users, in one order everywhere (by id), so that two links at once wait rather than deadlock
        users: dict[str, User] = {}
        for user_id in sorted((row.user_id, joining)):
            user = (await session.exec(select(User).where(User.id == user_id).with_for_update()
                                       .execution_options(populate_existing=True))).first()
            if user is None:
                return NotFound("that link code's user is gone: say `link` again", code="LINK_CODE_NOT_FOUND")
            users[user_id] = user
        keep, gone = users[row.user_id], users[joining]
        kept, theirs = Role.parse(keep.role), Role.parse(gone.role)
        held = None
        if theirs > kept:
            if principal.can(Scope.ADMIN):  # an admin says it: their confirmation that the person keeps it
                keep.role = theirs.label
            else:
                held = theirs
        await self._move(session, principal.org_id, gone.id, keep)
        session.add(keep)
        await session.flush()
        await session.delete(gone)
        await record(session, principal, "user", "user.linked", payload={
            "user": keep.name, "joined": gone.name, "channel": principal.channel, "into": row.channel,
            "role": keep.role, "held": held.label if held else None})
        if row.address:  # whoever asked for the code hears whose identity joined them
            thread = await bind_thread(session, principal.org_id, row.channel, row.address)
            text = f"{principal.channel} user {principal.name} is now linked to you ({keep.name}): one person, one vote"
            await enqueue(session, [thread], Message(key=new_id(REPLY_KEY), text=text, kind="reply"))
        return Linked(keep.name, keep.role, principal.channel, row.channel, held=held)

    async def _move(self, session: AsyncSession, org_id: str, gone: str, keep: User) -> None:
        """Everything of user `gone` becomes `keep`'s: identities, tokens, tasks, requests and votes."""
        for model, column in ((Identity, Identity.user_id), (ApiToken, ApiToken.user_id),
                              (LinkAttempt, LinkAttempt.user_id), (WebSession, WebSession.user_id),
                              (SignInLink, SignInLink.user_id)):
            await session.exec(update(model).where(col(column) == gone)
                               .values(user_id=keep.id))
        await session.exec(update(LinkCode).where(col(LinkCode.user_id) == gone)
                           .values(user_id=keep.id, used_at=utcnow()))
        await session.exec(update(Task).where(
            col(Task.org_id) == org_id, col(Task.owner_id) == gone).values(owner_id=keep.id, owner_name=keep.name))
        await session.exec(update(Confirmation).where(
            col(Confirmation.org_id) == org_id, col(Confirmation.requester_id) == gone)
            .values(requester_id=keep.id))
        votes = list(await session.exec(select(Vote).where(Vote.voter_id == gone)))
        for vote in votes:
            twin = (await session.exec(select(Vote).where(
                Vote.confirmation_id == vote.confirmation_id, Vote.voter_id == keep.id))).first()
            if twin is None:
                vote.voter_id = keep.id
                session.add(vote)
                continue
            # the same person voted twice, once from each channel: one vote, the first
            conf = await session.get(Confirmation, vote.confirmation_id, with_for_update=True)
            await session.delete(vote)
            if conf is not None and conf.status == Status.PENDING and vote.approve and twin.approve:
                conf.approvals = max(0, conf.approvals - 1)
                session.add(conf)
                await session.flush()
                await self.confirmations.announce(session, conf)
