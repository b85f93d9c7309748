"""What every runner's handle keeps of a turn, whatever the engine: its clock (running time with pauses left out,
against the hard timeout; silence since its last output, against the idle timeout) and its output cut into lines.

Engines have no idle timeout, and not all enforce a hard one as Shepherd counts it (pauses left out), so each
handle watches its turn with a `TurnClock` and ends the unit itself when `due` says so.
"""

from __future__ import annotations

import asyncio
import time

from core.runners import ExitReason

WATCH_INTERVAL_S = 0.1
LATE_S = 0.5  # a look this much later than asked: the loop itself was held up


class TurnClock:
    def __init__(self, *, idle_s: float, hard_s: float, ran_s: float = 0.0, paused: bool = False) -> None:
        now = time.monotonic()
        self.idle_s, self.hard_s = idle_s, hard_s
        self.started = now - ran_s  # a turn found again after a restart has run for a while already
        self.last_output = now
        self.paused_at: float | None = now if paused else None
        self.paused_total = 0.0

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def output(self) -> None:
        """The agent printed (or is silent for a reason Shepherd knows: it waits for people)."""
        self.last_output = time.monotonic()

    def running(self, now: float | None = None) -> float:
        """Seconds the turn has run, pauses left out."""
        now = time.monotonic() if now is None else now
        paused = self.paused_total + ((now - self.paused_at) if self.paused_at is not None else 0.0)
        return now - self.started - paused

    def pause(self) -> None:
        if self.paused_at is None:
            self.paused_at = time.monotonic()

    def resume(self) -> None:
        if self.paused_at is not None:
            now = time.monotonic()
            self.paused_total += now - self.paused_at
            self.paused_at = None
            self.last_output = now  # silence while frozen is not idleness

    def due(self) -> ExitReason | None:
        """The limit the turn has passed, if any (a paused turn passes none)."""
        if self.paused:
            return None
        now = time.monotonic()
        if self.running(now) > self.hard_s:
            return ExitReason.HARD_TIMEOUT
        if now - self.last_output > self.idle_s:
            return ExitReason.IDLE_TIMEOUT
        return None

    async def watch(self, interval_s: float = WATCH_INTERVAL_S) -> ExitReason:
        """Returns once the turn has passed a limit: which one. A look that comes far later than asked (Shepherd's
        own event loop was held up: a busy machine) judges nothing: the output that arrived meanwhile is read
        first, and the next look judges."""
        looked = time.monotonic()
        while True:  # a poll: the limits move with the clock, no event says when one is passed
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            late, looked = now - looked > interval_s + LATE_S, now
            if not late and (reason := self.due()) is not None:
                return reason
