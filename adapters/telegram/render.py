"""core.channels.outbox.Message -> a Telegram message in HTML parse mode, without I/O.

Every piece of text that reaches Telegram is escaped here exactly once (`escape`: agent output, names, prompts,
summaries, codes): nothing a person or an agent typed can open a tag, fake a link or break the parse (Telegram
refuses a message whose HTML it cannot parse). The only markup is Shepherd's own (<b>, <pre>, <code>), put
around text already escaped.

Telegram takes at most 4096 characters (counted after its HTML is parsed, in UTF-16 code units); the HTML is kept
within that before parsing, which is stricter. What does not fit is cut, output keeping its newest lines and
other text its beginning, and the cut says how much was left out and where to read all of it (`Message.more`,
e.g. `logs fix-auth-3f2a`).

An approval prompt (kind "confirmation", state pending) carries an inline keyboard Approve / Reject whose
callback_data is `<action>:<value>` (the contract with the inbound side: `approve:conf-…`), at most 64 bytes.
A decided prompt has no keyboard: its text, as core wrote it, says who decided, from where and when.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from core.channels.outbox import Button, Message

TEXT_MAX = 4096  # sendMessage / editMessageText: 1-4096 characters
CALLBACK_DATA_MAX = 64  # bytes, Telegram's limit for an inline button's callback_data
BUTTON_TEXT_MAX = 64  # a label; Telegram has no documented limit, but a longer one is unreadable on a phone
FIELD_MAX = 300  # one field's value shown
ACTIONS = ("approve", "reject")  # what a button may ask; the inbound side parses exactly these


def escape(text: str) -> str:
    """Telegram's HTML special characters (<, >, &), so that text shows as written."""
    return html.escape(text, quote=False)


def size(text: str) -> int:
    """A text's length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def callback_data(button: Button) -> str:
    """`<action>:<value>` for a button, or ValueError when Telegram would refuse it (over 64 bytes) or the inbound
    side would not understand it."""
    if button.action not in ACTIONS:
        raise ValueError(f"a button asking {button.action!r}: only {', '.join(ACTIONS)} are understood")
    data = f"{button.action}:{button.value}"
    if not button.value or len(data.encode()) > CALLBACK_DATA_MAX:
        raise ValueError(f"callback_data {data!r} is not 1-{CALLBACK_DATA_MAX} bytes")
    return data


@dataclass(frozen=True)
class Rendered:
    text: str  # HTML, within TEXT_MAX
    buttons: tuple[tuple[str, str], ...] = ()  # (label, callback_data), one row; empty: no keyboard


@dataclass(frozen=True)
class _Part:
    """A piece of the message: `raw` text, escaped and placed in `wrap`; `keep` says what survives a cut ("head":
    its beginning, "tail": its end, "": nothing is cut); parts are cut in the order of `order` (lowest first)."""

    raw: str
    wrap: tuple[str, str] = ("", "")
    keep: str = "head"
    order: int = 9
    code: bool = False  # core's `command` spans shown as <code> (a reply's text: not output, not a name)

    def html(self, raw: str | None = None) -> str:
        text = escape(self.raw if raw is None else raw)
        if self.code:  # escaping leaves backticks alone: a pair around text with no backtick is a code span
            text = _CODE.sub(r"<code>\1</code>", text)
        return f"{self.wrap[0]}{text}{self.wrap[1]}"


_CODE = re.compile(r"`([^`\n]+)`")


def _note(cut: int, more: str, lines: bool) -> str:
    what = f"{cut} earlier line{'s' if cut != 1 else ''}" if lines else f"{cut} characters"
    return f"… {what} not shown" + (f"; <code>{escape(more)}</code> shows all" if more else "")


def _largest(fits: Callable[[int], bool], high: int) -> int:
    """The largest n in [0, high] with fits(n) (fits is monotone: true up to some n)."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _shrunk(part: _Part, room: int, more: str) -> str:
    """`part` cut to at most `room` (as Telegram counts), with a note of what was left out."""
    raw = part.raw
    if part.keep == "tail":
        lines = raw.split("\n")

        def kept_lines(n: int) -> str:
            return _note(len(lines) - n, more, True) + "\n" + part.html("\n".join(lines[len(lines) - n:]))

        n = _largest(lambda k: size(kept_lines(k)) <= room, len(lines))
        if n:
            return kept_lines(n)

        def kept_end(k: int) -> str:  # one enormous last line: its end
            return _note(len(raw) - k, more, False) + "\n" + part.html(raw[len(raw) - k:])

        k = _largest(lambda c: size(kept_end(c)) <= room, len(raw))
        return kept_end(k) if k else _note(len(raw), more, False)[:max(0, room)]

    def kept_head(k: int) -> str:
        return part.html(raw[:k].rstrip()) + "\n" + _note(len(raw) - k, more, False)

    k = _largest(lambda c: size(kept_head(c)) <= room, len(raw))
    return kept_head(k) if k or size(kept_head(0)) <= room else ""


def _assemble(parts: list[_Part], more: str) -> str:
    shown = [p.html() for p in parts if p.raw]
    parts = [p for p in parts if p.raw]
    joined = "\n\n".join(shown)
    if size(joined) <= TEXT_MAX:
        return joined
    for i in sorted((i for i, p in enumerate(parts) if p.keep), key=lambda i: parts[i].order):
        others = "\n\n".join(s for j, s in enumerate(shown) if j != i)
        room = TEXT_MAX - size(others) - 2
        shown[i] = _shrunk(parts[i], room, more)
        joined = "\n\n".join(s for s in shown if s)
        if size(joined) <= TEXT_MAX:
            return joined
    # unreachable with Shepherd's own messages (their fixed parts are short): all of it as plain text, cut
    return _shrunk(_Part("\n\n".join(p.raw for p in parts)), TEXT_MAX, more)


def _facts(fields: dict[str, str], skip: tuple[str, ...] = ()) -> str:
    return "\n".join(f"{k}: {v if len(v) <= FIELD_MAX else v[:FIELD_MAX] + ' …'}"
                     for k, v in fields.items() if k not in skip and v)


def _keyboard(message: Message) -> tuple[tuple[str, str], ...]:
    """The prompt's buttons; none when one of them could not be sent (the typed command still works)."""
    try:
        return tuple((b.label[:BUTTON_TEXT_MAX], callback_data(b)) for b in message.buttons)
    except ValueError:
        return ()


def render(message: Message) -> Rendered:
    """The HTML text (and the keyboard) of one message, for sendMessage and editMessageText alike."""
    more = message.more
    if message.kind == "confirmation":
        pending = message.state == "pending"
        parts = [_Part(message.text, ("<b>", "</b>") if pending else ("", ""), order=2),
                 _Part(_facts(message.fields), order=1)]
        critical = [b.confirm for b in message.buttons if b.confirm] if pending else []
        if critical:
            parts.append(_Part(f"⚠️ {critical[0]}", order=0))
        if pending and message.code:
            parts.append(_Part(f"or type /approve {message.code} or /reject {message.code} <reason>",
                               ("<i>", "</i>"), order=0))
        return Rendered(_assemble(parts, more), _keyboard(message) if pending else ())
    if message.kind == "progress":
        parts = [_Part(message.text, ("<b>", "</b>"), order=2),
                 _Part(" · ".join(f"{k}: {v}" for k, v in message.fields.items()
                                  if k not in ("task", "status") and v), order=1)]
        if message.detail:
            parts.append(_Part(message.detail, ("<pre>", "</pre>"), keep="tail", order=0))
        return Rendered(_assemble(parts, more))
    if message.kind == "outcome":
        parts = [_Part(message.text, ("<b>", "</b>"), order=2), _Part(_facts(message.fields, ("outcome",)), order=1)]
        if message.detail:
            parts.append(_Part(message.detail, ("<pre>", "</pre>"), keep="tail", order=0))
        text = _assemble(parts, more)
        if more:
            hint = f"<code>{escape(more)}</code> shows the whole log"
            if size(text) + 2 + size(hint) <= TEXT_MAX:
                text += "\n\n" + hint
        return Rendered(text)
    if message.kind == "digest":  # a bold headline, then each part under its bold title, as text
        headline = message.text.partition("\n")[0]
        parts = [_Part(headline, ("<b>", "</b>"), order=9)]
        parts += [_Part(body, (f"<b>{escape(title)}</b>\n", ""), order=i) for i, (title, body) in
                  enumerate(message.fields.items())]
        if not message.fields:
            parts.append(_Part(message.text.partition("\n")[2].strip(), order=0))
        return Rendered(_assemble(parts, more))
    # a command's reply, a notice: several lines read as a block, read from the top
    body = message.text.strip() or "…"
    multi_line = "\n" in body
    return Rendered(_assemble([_Part(body, ("<pre>", "</pre>") if multi_line else ("", ""), order=0,
                                     code=not multi_line)], more))
