"""Conversations: the one way a channel talks to core.

A channel adapter (the console, Slack; Telegram and GitHub next) knows its platform and nothing of the store.
Everything else it asks here:

- `person`: who a channel's user is (their identity -> the Principal acting for them; first contact makes them);
- `task_at`: what a place (a `Where`: channel, address) is bound to: the task whose thread it is; `bind`;
- `command`: run a command said at a place, with its words as the channel read them (no quoting and reading
  again), in one unit of work with everything it causes: the command's effect, the thread a task it follows
  lives in (bound, or opened), its answer through the outbox, and the inbound item settled in the delivery
  ledger. One commit: an item is done exactly when its effect and its answer are written;
- `start`: start a task no command's words describe (a webhook's trigger, gated by the project agent's level);
- `vote`: a click on a confirmation's button, the same way; `reply`: say something at a place (through the
  outbox, the item it answers settled in the same commit); `settle`: an item there is nothing to do for.

Threads are bound here only (`bind_thread`, also for a task started from a thread, core.tasks.service). A place that is
not a thread (a Slack slash command's channel) gives a task it follows a new thread that begins with a message
(`Opening`): the thread is bound at once, with the address still unknown; the outbox posts its first message
and gives the thread its real address before anything else for it goes out (core.channels.outbox, bot/outbox.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import bindparam, tuple_
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from core.channels.outbox import REPLY_KEY, Message, addressed, enqueue, enqueue_rows, threads_for
from core.clock import utcnow
from core.commands.grammar import CommandRegistry, Reply, Where
from core.errors import ShepherdError
from core.ids import new_id
from core.people.access import Principal, Role
from core.store.models import HeldRequest, MessageRef, Task, Thread, table_of

if TYPE_CHECKING:
    from core.shepherd import Shepherd
    from core.tasks.service import TaskView

__all__ = ["Conversations", "Opening", "Received", "Start", "Where", "bind_thread", "followed", "open_thread"]


@dataclass(frozen=True)
class Received:
    """An inbound item recorded in the delivery ledger (core.channels.ledger), settled in the commit of its answer."""

    source: str  # slack, github, telegram
    key: str  # the platform's id of the item


@dataclass(frozen=True)
class Start:
    """A task to start at a place (`Conversations.start`): core.tasks.service.Tasks.create's words for it."""

    prompt: str
    project: str  # an id or name
    branch: str | None = None  # None: the project's default branch
    in_place: bool = False  # work on `branch` itself (a pull request's head): its end is a push there
    agent_type: str = "task"  # task, review or incident
    gate: str | None = None  # the action its start is, when no person asked (task.start, review.start)


def _none(address: str) -> bool:
    return False


@dataclass(frozen=True)
class Opening:
    """A thread that begins with a message: how a task followed from a place that is not a thread gets one. The
    outbox posts `text` at `address` (a place on the channel itself: a Slack channel and who asked); the channel
    says where the thread hanging from it is. `serves`: whether a thread the task has already (by its address)
    will do instead (a second `/shepherd send` in the same channel goes on in the same thread)."""

    address: str
    text: str
    serves: Callable[[str], bool] = _none


def followed(reply: Reply) -> str | None:
    """The task a command's reply says to follow (run, send), whose news the place should hear."""
    data = reply.data if isinstance(reply.data, dict) else {}
    return str(data["id"]) if reply.ok and data.get("follow") and data.get("id") else None


async def bind_thread(
    session: AsyncSession, org_id: str, channel: str, address: str, *, task_id: str | None = None,
    project_id: str | None = None, session_id: str | None = None,
) -> Thread:
    """The thread (channel, address) bound to a task or a project, or to nothing (a place answers are sent to);
    created once. A thread still waiting for its first message is not this place yet. `session_id`: the session
    the task's thread is bound to (core.sessions.threads), given when the thread is made for the task."""
    params = {"org": org_id, "channel": channel, "address": address, "task": task_id, "project": project_id}
    found = (await session.exec(_thread_query(bool(task_id), bool(project_id)), params=params)).first()
    if found is not None:
        return found
    thread = Thread(id=new_id("thr"), org_id=org_id, channel=channel, address=address, task_id=task_id,
                    project_id=project_id, session_id=session_id)
    session.add(thread)
    await session.flush()
    return thread


@cache
def _thread_query(task: bool, project: bool) -> SelectOfScalar[Thread]:
    """bind_thread's query for one shape, built once (every answer to a command looks its thread up)."""
    query = select(Thread).where(Thread.org_id == bindparam("org"), Thread.channel == bindparam("channel"),
                                 Thread.address == bindparam("address"), col(Thread.opening).is_(None))
    query = query.where(Thread.task_id == bindparam("task")) if task else query.where(col(Thread.task_id).is_(None))
    if project:
        query = query.where(Thread.project_id == bindparam("project"))
    elif not task:  # a conversation's own thread (replies), not a project's approval channel
        query = query.where(col(Thread.project_id).is_(None))
    return query


async def open_thread(
    session: AsyncSession, org_id: str, channel: str, task_id: str, opening: Opening, *, key: str,
) -> Thread:
    """The task's thread on `channel` that `opening` would serve, or a new one bound to it that begins with the
    opening's message (outbox key `key`: the same item processed again finds this thread, and posts no second
    message)."""
    for thread in await threads_for(session, org_id, task_id=task_id):
        if thread.channel == channel and opening.serves(thread.address):
            return thread
    task = await session.get(Task, task_id)  # the task's session, if it has one, is the new thread's too
    thread = Thread(id=new_id("thr"), org_id=org_id, channel=channel, address=opening.address, task_id=task_id,
                    opening=key, session_id=task.session_id if task is not None else None)
    session.add(thread)
    await session.flush()
    await enqueue(session, [thread], Message(key=key, text=opening.text, kind="opening"))
    return thread


class _Answer(NamedTuple):
    org_id: str
    where: Where | None  # where it is said (None: only the item is settled)
    key: str  # its outbox key
    text: str
    item: Received | None


@dataclass(eq=False)
class _Later:
    """The answers of a batch's items (`Conversations.batch`), written together at its end. Only the task that runs
    the batch adds to them, and only while it runs: a task started meanwhile inherits the context, not the batch."""

    owner: asyncio.Task[object] | None = field(default_factory=asyncio.current_task)
    answers: list[_Answer] = field(default_factory=list)
    open: bool = True
    # who the batch's people are, read once for the items that come after one another: kept only while no item has
    # written (an item may change someone's role; one that only reads changes nothing)
    people: dict[tuple[str, str, str, bool], Principal] = field(default_factory=dict)

    def takes(self) -> bool:
        return self.open and self.owner is asyncio.current_task()


_LATER: ContextVar[_Later | None] = ContextVar("shepherd_batch_answers", default=None)
_T = table_of(Thread)
# the places' own threads (what `bind_thread` finds with no task and no project), for many places at once
_PLACES = core_select(_T.c.id, _T.c.org_id, _T.c.channel, _T.c.address, _T.c.opening).where(
    _T.c.opening.is_(None), _T.c.task_id.is_(None), _T.c.project_id.is_(None))


class Conversations:
    """The conversation API over one core, with the command registry its channels run."""

    def __init__(self, shepherd: Shepherd, registry: CommandRegistry) -> None:
        self.shepherd = shepherd
        self.registry = registry
        self.db = shepherd.db

    # --- who and what ------------------------------------------------------------------------------

    async def person(self, org_id: str, channel: str, external_id: str, *, name: str, default_role: Role,
                     admin: bool = False) -> Principal:
        """Who a channel's user is in Shepherd; first contact makes them a user with `default_role` and `name`
        (the platform's name for them). `admin`: the deployment names them an admin."""
        later = _LATER.get()
        known = later.people if later is not None and later.takes() else None  # this batch's, read once each
        key = (org_id, channel, external_id, admin)
        if known is not None and key in known:
            return known[key]
        principal = await self.shepherd.users.principal_for(org_id, channel, external_id, display_name=name,
                                                            default_role=default_role, admin=admin)
        if known is not None:
            known[key] = principal
        return principal

    async def name_of(self, org_id: str, channel: str, external_id: str) -> str | None:
        """The Shepherd name of a channel's user, if Shepherd has met them."""
        return await self.shepherd.users.name_of(org_id, channel, external_id)

    async def names(self, principal: Principal) -> list[str]:
        """The names of the people of the principal's org."""
        return [user.name for user, _ in await self.shepherd.users.list(principal)]

    async def task_at(self, org_id: str, where: Where) -> str | None:
        """The task whose thread `where` is (the newest, if several were), or None."""
        async with self.db.read() as session:
            return (await session.exec(
                select(Task.id).join(Thread, col(Thread.task_id) == col(Task.id)).where(
                    Thread.org_id == org_id, Thread.channel == where.channel, Thread.address == where.address,
                    col(Thread.opening).is_(None))
                .order_by(col(Thread.created_at).desc()).limit(1)
            )).first()

    async def task_of_message(self, org_id: str, where: Where, ref: str) -> str | None:
        """The task one of whose messages at `where` is the platform message `ref` (a Telegram message_id): a
        reply to it is that task's next turn. None when the message is no task's."""
        async with self.db.read() as session:
            return (await session.exec(
                select(Thread.task_id).join(MessageRef, col(MessageRef.thread_id) == col(Thread.id)).where(
                    Thread.org_id == org_id, Thread.channel == where.channel, Thread.address == where.address,
                    col(Thread.task_id).is_not(None), MessageRef.ref == ref)
                .order_by(col(Thread.created_at).desc()).limit(1)
            )).first()

    async def bind(self, org_id: str, where: Where, task_id: str) -> None:
        """Bind a place to a task: the task's news and prompts come there too."""
        async with self.db.write() as session:
            await bind_thread(session, org_id, where.channel, where.address, task_id=task_id)

    # --- acting --------------------------------------------------------------------------------------

    async def reply(self, org_id: str, where: Where, text: str, *, item: Received | None = None) -> None:
        """Say something at a place through the outbox (not a command's answer: `command` answers itself), with
        the item it answers settled in the same commit."""
        await self._say(org_id, where, text, item)
        self._committed(runner=False)

    async def command(
        self, principal: Principal, said: str | Sequence[str], *, where: Where | None = None,
        answer: Where | None = None, opening: Opening | None = None, item: Received | None = None,
        place: Where | None = None,
    ) -> Reply:
        """Run a command and everything it causes, in one commit; returns its reply.

        `said`: what was typed (split shell-like) or words already split. `where`: the thread it was said in, if
        any (a task it starts binds it; in a task's thread the task may go unsaid). `answer`: where its reply goes
        through the outbox (None: the caller shows it itself, as the console does). `opening`: when `where` is no
        thread, how a task the command follows gets one (its reply then goes there). `item`: the inbound item it
        came in, settled in the same commit (and the key a repeat of it acts once by). `place`: the place it was
        said in as a whole, when that is not `where` (a Slack channel, for a slash command or a mention in a
        thread): what `subscribe` makes an approval channel, where `link` tells who used its code."""
        async with self.db.unit() as unit:
            reply = await self.registry.run(self.shepherd, principal, said, where=where,
                                            request_key=item.key if item else None, place=place)
            acted = unit.wrote  # the command changed something (not only read)
            task = followed(reply)
            if answer is not None and opening is not None and task is not None:
                async with self.db.write() as session:
                    key = f"opening:{item.key}" if item else new_id("opening")
                    thread = await open_thread(session, principal.org_id, answer.channel, task, opening, key=key)
                    await self._answer(session, principal.org_id, answer, thread, reply.text, item)
            elif answer is not None or item is not None:
                await self._say(principal.org_id, answer, reply.text, item)
        self._committed(runner=acted)
        return reply

    async def start(
        self, principal: Principal, start: Start, *, where: Where, request: str, item: Received | None,
        say: Callable[[TaskView], str],
    ) -> TaskView | None:
        """Start a task that no command's words describe (what a webhook asks for: a review, an incident; a
        comment's run on a pull request's own branch) with `where` as its thread, and answer there with `say`'s
        words for it (or the error), in one commit with `item` settled. Keyed by `request`: asked again (another
        delivery of the same request), it finds the same task and edits the same answer. None: refused."""
        async with self.db.unit():
            view: TaskView | None = None
            for attempt in range(2):
                try:
                    view = await self.shepherd.tasks.create(
                        principal, prompt=start.prompt, project=start.project, branch=start.branch,
                        thread=(where.channel, where.address), request_key=request, agent_type=start.agent_type,
                        gate=start.gate, in_place=start.in_place)
                    text = say(view)
                    break
                except ShepherdError as exc:
                    # CONFLICT: another delivery of the same request (a second failed check of one commit)
                    # made its task at the same moment; asked again, the request finds that task
                    if exc.code == "CONFLICT" and not attempt:
                        continue
                    view, text = None, f"error: {exc.message}"
                    break
            async with self.db.write() as session:
                thread = await bind_thread(session, principal.org_id, where.channel, where.address)
                await enqueue(session, [thread], Message(key=f"{REPLY_KEY}:{request}", text=text, kind="reply"))
                if item is not None:
                    await self.shepherd.ledger.settle(session, item.source, item.key)
        self._committed(runner=True)
        return view

    async def vote(
        self, principal: Principal, confirmation: str, *, approve: bool, via: str, answer: Where | None = None,
        item: Received | None = None,
    ) -> Reply:
        """A vote from a button: counted (the decision is announced by core wherever the prompt shows), or
        refused, the refusal answered at `answer`; in one commit with the item settled. Returns what happened (or
        why not), for a channel that tells the voter directly (Telegram's answer to a callback query)."""
        async with self.db.unit() as unit:
            try:
                result = await self.shepherd.confirmations.vote(principal, confirmation, approve=approve, via=via)
                refusal, said = None, result.text
            except ShepherdError as exc:
                refusal = said = f"error: {exc.message}"
            acted = unit.wrote
            answer = answer if refusal else None
            if answer is not None or item is not None:
                await self._say(principal.org_id, answer, refusal or "", item)
        self._committed(runner=acted)
        return Reply(said, ok=refusal is None)

    async def batch(self, work: Sequence[Callable[[], Awaitable[object]]]) -> list[Exception | None]:
        """Several inbound items' work (each a call of this API: `command`, `vote`, `reply`, `settle`) in one
        commit: work that raises undoes only its own writes (a savepoint, begun at the item's first write), and
        its exception comes back in its place (None: done). The answers and the settled items of the whole batch
        are written together at its end (one INSERT, one UPDATE), in the order of the items; an item that only
        reads (`status`) writes nothing before then, and until an item writes, reads outside the transaction
        (core.store.unit.Unit.item). A burst of items then
        costs one commit (on SQLite one fsync) instead of one per item. Work that must ask a remote host (a
        person's name) asks before: what runs here may hold the store's write lock. A failed commit raises, and
        nothing of the batch is written: the caller does the items again, one at a time."""
        errors: list[Exception | None] = []
        later, wrote = _Later(), False
        token = _LATER.set(later)
        try:
            async with self.db.unit() as unit:
                for job in work:
                    taken = len(later.answers)
                    try:
                        async with unit.item():
                            await job()
                            if unit.wrote:
                                wrote = True
                                later.people.clear()
                        errors.append(None)
                    except Exception as exc:
                        del later.answers[taken:]  # its answer goes with the rest of its work
                        later.people.clear()
                        errors.append(exc)
                later.open = False
                if later.answers:
                    await self._answers(await unit.begin(), later.answers)
        finally:
            _LATER.reset(token)
        self._committed(runner=wrote)  # the one wake-up: its items gave none (their rows could not be seen yet)
        return errors

    async def hold(self, org_id: str, where: Where, author: str, text: str, *, item: Received) -> None:
        """An untrusted author's request (core.people.trust): nothing runs; it is kept as a row until a trusted
        person releases it (`held`, `released`), `text` is said at `where`, and the item settled: one commit."""
        async with self.db.write() as session:
            known = (await session.exec(select(HeldRequest.id).where(
                HeldRequest.source == item.source, HeldRequest.key == item.key))).first()
            if known is None:
                session.add(HeldRequest(org_id=org_id, channel=where.channel, address=where.address,
                                        source=item.source, key=item.key, author=author[:200]))
            await self._answer(session, org_id, where, None, text, item)
        self._committed(runner=False)

    async def held(self, org_id: str, where: Where) -> list[Received]:
        """The requests held at `where` and not yet released, oldest first."""
        async with self.db.read() as session:
            rows = await session.exec(select(HeldRequest).where(
                HeldRequest.org_id == org_id, HeldRequest.channel == where.channel,
                HeldRequest.address == where.address, col(HeldRequest.released_at).is_(None),
            ).order_by(col(HeldRequest.id)))
            return [Received(row.source, row.key) for row in rows]

    async def released(self, org_id: str, items: Sequence[Received], by: str) -> None:
        """Held requests that have now run (after their release by `by`): never run again by another release."""
        if not items:
            return
        async with self.db.write() as session:
            for item in items:
                row = (await session.exec(select(HeldRequest).where(
                    HeldRequest.org_id == org_id, HeldRequest.source == item.source,
                    HeldRequest.key == item.key))).first()
                if row is not None and row.released_at is None:
                    row.released_at, row.released_by = utcnow(), by[:200]
                    session.add(row)

    async def settle(self, item: Received) -> None:
        """An item there is nothing to do for: done."""
        await self.shepherd.ledger.done(item.source, item.key)

    async def _say(self, org_id: str, answer: Where | None, text: str, item: Received | None) -> None:
        """An answer at `answer` (keyed by its item: processing the item again edits it rather than posting a
        second one) and its item settled: written now, or, inside a batch, with the batch's other answers at its
        end, in the same commit."""
        later = _LATER.get()
        if later is not None and later.takes():
            key = f"{REPLY_KEY}:{item.key}" if item else new_id(REPLY_KEY)
            later.answers.append(_Answer(org_id, answer, key, text, item))
            return
        async with self.db.write() as session:
            await self._answer(session, org_id, answer, None, text, item)

    async def _answers(self, session: AsyncSession, answers: Sequence[_Answer]) -> None:
        """A batch's answers: the places' threads read in one statement (the few new ones bound), the outbox rows
        written in one INSERT, the items settled in one UPDATE."""
        places = sorted({(a.org_id, a.where.channel, a.where.address) for a in answers if a.where is not None})
        threads: dict[tuple[str, str, str], object] = {}
        if places:
            conn = await session.connection()
            for row in await conn.execute(_PLACES.where(tuple_(_T.c.org_id, _T.c.channel, _T.c.address).in_(places))):
                threads.setdefault((row.org_id, row.channel, row.address), row)
            for place in places:
                if place not in threads:
                    threads[place] = await bind_thread(session, *place)
        now = utcnow()
        await enqueue_rows(session, [
            addressed(threads[(a.org_id, a.where.channel, a.where.address)], a.key,
                      Message(key=a.key, text=a.text, kind="reply").to_json(), now)
            for a in answers if a.where is not None])
        await self.shepherd.ledger.settle_many(session, [(a.item.source, a.item.key) for a in answers if a.item])

    async def _answer(self, session: AsyncSession, org_id: str, answer: Where | None, thread: Thread | None,
                      text: str, item: Received | None) -> None:
        if answer is not None:
            thread = thread or await bind_thread(session, org_id, answer.channel, answer.address)
            # keyed by the item: processing it again edits this answer rather than posting a second one
            key = f"{REPLY_KEY}:{item.key}" if item else new_id(REPLY_KEY)
            await enqueue(session, [thread], Message(key=key, text=text, kind="reply"))
        if item is not None:
            await self.shepherd.ledger.settle(session, item.source, item.key)

    def _committed(self, *, runner: bool) -> None:
        """What a unit wrote is visible to other connections only now: the outbox looks at once, and so does a
        runner in this process when the command changed something (a wake-up a service gave inside the unit
        came before its rows could be seen). Inside a batch, the batch's own commit is that moment: an item's
        wake-up would send the outbox looking before anything is there (every item of a burst, a look each)."""
        later = _LATER.get()
        if later is not None and later.takes():
            return
        self.shepherd.outbox_due()
        if runner:
            self.shepherd.runs_due()
