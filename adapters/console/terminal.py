"""What the console prints: text a terminal shows as text and never obeys.

Everything the console prints may hold text from elsewhere: prompts, names, summaries, comments and the
agents' own output, some stored before Shepherd refused control characters at the door. An escape
sequence among them would move the cursor, recolour, retitle or clear the terminal of whoever reads it,
and a carriage return would print over what came before. So every control character but the line
break and the tab is shown escaped (ESC as `\\x1b`), on its way out, in one place.
"""

from __future__ import annotations

from typing import TextIO

from core.textcheck import is_control

_KEPT = frozenset("\n\t")


def _shown(ch: str) -> str:
    if ch in _KEPT or not is_control(ch):
        return ch
    return {"\r": "\\r", "\b": "\\b"}.get(ch, f"\\x{ord(ch):02x}")


def safe(text: str) -> str:
    """`text` with every control character other than LF and TAB written out as an escape."""
    if text.isprintable():
        return text
    return "".join(_shown(ch) for ch in text)


def emit(text: str, out: TextIO) -> None:
    print(safe(text), file=out, flush=True)
