"""Reading a pod's log as lines, across reconnects, without I/O: the kubelet's timestamps (`timestamps=true`)
tell which lines a new stream repeats, since `sinceSeconds` is whole seconds and a stream may drop anywhere."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def stamp_ns(text: str) -> int | None:
    """An RFC 3339 time with up to nanoseconds (what the kubelet writes) as integer nanoseconds since the epoch."""
    match = _STAMP.match(text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    when = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(when.astimezone(UTC).timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


@dataclass
class LogCursor:
    """Where the lines read so far end: the time of the last line and how many lines had exactly that time."""

    last_ns: int = 0
    at_last: int = 0
    _replay: int = 0  # lines of `last_ns` a new stream repeats before it brings anything new

    def since_seconds(self, now_s: float) -> int | None:
        """The `sinceSeconds` of a new stream: back to (a little before) the last line read."""
        if self.last_ns == 0:
            return None
        return max(1, math.ceil(now_s - self.last_ns / 1e9) + 1)

    def restart(self) -> None:
        """A new stream starts."""
        self._replay = self.at_last

    def take(self, raw: str) -> str | None:
        """The text of one line of a stream, or None when an earlier stream already gave it."""
        stamp, sep, text = raw.partition(" ")
        ns = stamp_ns(stamp) if sep else None
        if ns is None:  # no timestamp (a line that is only a timestamp is an empty line)
            ns = stamp_ns(raw)
            if ns is None:
                return raw
            text = ""
        if ns < self.last_ns:
            return None
        if ns == self.last_ns:
            if self._replay > 0:
                self._replay -= 1
                return None
            self.at_last += 1
            return text
        self.last_ns, self.at_last, self._replay = ns, 1, 0
        return text
