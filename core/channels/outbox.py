"""The `Channel` port and the outbox: how a change reaches the threads that must hear about it.

A change someone must hear about (a confirmation asked, a decision) writes outbox rows addressed to
threads, in the transaction of the change itself: if the change commits, the message will go out; if it
rolls back, no message claims otherwise. A dispatcher (bot/outbox.py) delivers rows through the Channel of
their thread (console now; Slack and Telegram implement the same port), retries without dropping, and keeps
each message's platform ref (MessageRef) so that a later row with the same key edits that message in place.
A thread may begin with a message of its own (`Channel.open`, core.channels.conversations.Opening): rows for it wait
until that message is posted and the thread has its address. Threads are bound in core.channels.conversations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import false, insert, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.errors import ShepherdError
from core.store.models import MessageRef, Outbox, Thread, table_of


class RowStatus(StrEnum):
    """Where an outbox row stands."""

    PENDING = "pending"  # to be delivered (now, or at its next_at)
    SENT = "sent"  # delivered, or superseded by a newer version of the same message
    FAILED = "failed"  # refused for good (the chat is gone): kept, never dropped silently


@dataclass(frozen=True)
class Button:
    label: str
    action: str  # approve | reject
    value: str  # the opaque id the click carries back (a confirmation id)
    style: str = ""  # primary | danger
    confirm: str | None = None  # ask "are you sure?" first (critical actions)


REPLY_KEY = "reply"  # the keys of answers to the person who said something begin with it


@dataclass(frozen=True)
class Message:
    """What a channel renders: plain text any channel can show, plus structure richer ones use."""

    key: str  # the message's identity: a second Message with this key in a thread edits the first
    text: str
    kind: str = "notice"  # notice | reply | confirmation | progress (a task's status) | outcome (a turn's end) | digest
    # (a digest: `text` is all of it, its first line the headline; `fields` its parts, title -> lines)
    state: str = ""  # for confirmations: pending, approved, rejected, expired, void
    fields: dict[str, str] = field(default_factory=dict)
    buttons: tuple[Button, ...] = ()
    code: str = ""  # a confirmation's code, for channels that print `approve K7P2`
    detail: str = ""  # preformatted text shown under the message (output lines); channels may cut it
    more: str = ""  # where to read all of it when a channel has to cut the text, e.g. `logs fix-auth-3f2a`
    task: str = ""  # the id of the task it is news of: a channel may gather a task's news in one place (GitHub)

    def to_json(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict copies every value deeply, a third of a millisecond for each answer
        return {"key": self.key, "text": self.text, "kind": self.kind, "state": self.state, "fields": dict(self.fields),
                "buttons": [asdict(b) for b in self.buttons], "code": self.code, "detail": self.detail,
                "more": self.more, "task": self.task}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        buttons = tuple(Button(**b) for b in data.get("buttons", ()))
        return cls(**{**data, "buttons": buttons})


class DeliveryError(ShepherdError):
    """A channel could not deliver. Transient unless `permanent` (the chat is gone: trying again cannot help,
    and the row is kept as failed); `retry_after` is the platform's word on when to try again."""

    code = "DELIVERY_FAILED"
    status = 502

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message, retry_after=retry_after, transient=not permanent)


class Channel(Protocol):
    name: str  # console, slack, telegram, github
    progress: bool  # whether it shows tasks' progress messages (the console follows tasks by itself)
    pace_s: float  # the least time between two edits in one conversation (0: none)

    def pace_key(self, address: str) -> str:
        """The conversation an address belongs to for pacing edits (a Slack channel, a Telegram chat)."""
        ...

    def accepts(self, address: str) -> bool:
        """Whether this process delivers to `address` (a console delivers only to its own user)."""
        ...

    async def post(self, address: str, message: Message) -> str:
        """Post a new message; returns its platform ref (for later updates)."""
        ...

    async def update(self, address: str, ref: str, message: Message) -> None:
        """Replace the content of the message `ref` in place."""
        ...

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        """Post the message a new thread begins with at `address` (a place on the channel itself, not a thread);
        returns its platform ref and the address of the thread that hangs from it."""
        ...


async def threads_for(
    session: AsyncSession, org_id: str, *, task_id: str | None = None, project_id: str | None = None,
    key: str | None = None,
) -> list[Thread]:
    """Who must see news of a task: its own threads, and its project's approval channels (core.channels.
    subscriptions). An approval channel since unsubscribed still hears of a message it shows (`key`): a decision
    edits the prompt there too. A place that is both a task's thread and an approval channel (a Telegram chat) is
    told once, in the task's thread."""
    clauses = []
    if task_id:
        clauses.append(col(Thread.task_id) == task_id)
    if project_id:
        showing = select(MessageRef.thread_id).where(MessageRef.key == key).union(
            select(Outbox.thread_id).where(Outbox.key == key)) if key else None
        live = col(Thread.ended_at).is_(None)
        shows = col(Thread.id).in_(showing) if showing is not None else false()
        clauses.append((col(Thread.project_id) == project_id) & col(Thread.task_id).is_(None) & (live | shows))
    if not clauses:
        return []
    query = select(Thread).where(Thread.org_id == org_id, or_(*clauses))
    threads = list(await session.exec(query.order_by(col(Thread.created_at), col(Thread.id))))
    own = {(t.channel, t.address) for t in threads if t.task_id}
    return [t for t in threads if t.task_id or (t.channel, t.address) not in own]


_OUTBOX = table_of(Outbox)
_ENQUEUE = insert(_OUTBOX)


async def enqueue(session: AsyncSession, threads: list[Thread], message: Message) -> int:
    """Outbox rows for `message` to every thread, in the caller's transaction. To a thread that waits for its
    first message to be posted, only that message is addressed; the rest wait for the thread's address."""
    payload, now = message.to_json(), utcnow()
    return await enqueue_rows(session, [addressed(t, message.key, payload, now) for t in threads])


def addressed(thread: Any, key: str, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The outbox row of a message (its `key` and JSON `payload`) to a thread (a Thread, or a row of its columns
    id, org_id, channel, address, opening), for `enqueue_rows`."""
    return {"org_id": thread.org_id, "thread_id": thread.id, "channel": thread.channel, "key": key,
            "payload": payload, "status": RowStatus.PENDING.value, "attempts": 0, "next_at": now, "created_at": now,
            "address": "" if thread.opening is not None and thread.opening != key else thread.address}


async def enqueue_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Outbox rows (`addressed`) written in the caller's transaction with one Core INSERT (every answer to a
    command writes one: an ORM object per row cost more to build and flush than the statement); the session's
    pending objects (a thread just made) are flushed first, as the rows name them."""
    if not rows:
        return 0
    await session.flush()
    await (await session.connection()).execute(_ENQUEUE, rows)
    return len(rows)
