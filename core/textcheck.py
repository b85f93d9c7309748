"""What text Shepherd accepts: one check for every name and every piece of free text, from every channel.

Text people and agents give Shepherd ends up in argv (a NUL there crashes the task: "embedded null
byte"), in the database (PostgreSQL stores no NUL), and on terminals and chat screens (an escape
sequence in a prompt rewrites the console of whoever reads it). So control characters are refused at
the door, with the field named: free text (prompts, inputs, summaries, comments, descriptions) keeps
line breaks and tabs, a name (of a task, an agent, a project, a token, a person) is one line and keeps
neither. Line endings are normalised first: a CR LF from a Windows client is a line break, not a
control character.
"""

from __future__ import annotations

import unicodedata

from core.errors import ValidationFailed

FREE_TEXT_ALLOWED = frozenset("\n\t")


def is_control(ch: str) -> bool:
    """C0, DEL and C1 (U+0080-U+009F: CSI is U+009B): what a terminal may obey rather than show."""
    return unicodedata.category(ch) == "Cc"


def without_controls(value: str, keep: frozenset[str] = frozenset("\t")) -> str:
    """`value` with every control character dropped but those in `keep` (text printed by others: an agent's
    output, a platform's display name)."""
    if value.isprintable():
        return value
    return "".join(ch for ch in value if ch in keep or not is_control(ch))


def _describe(ch: str) -> str:
    code = ord(ch)
    name = {0: "NUL", 0x1B: "ESC", 0x7F: "DEL", 0x0A: "a line break", 0x09: "a tab", 0x0D: "CR"}.get(code)
    return f"U+{code:04X}" + (f" ({name})" if name else "")


def _refuse(value: str, field: str, allowed: frozenset[str], what: str) -> str:
    for i, ch in enumerate(value):
        if is_control(ch) and ch not in allowed:
            raise ValidationFailed(
                f"{field} contains a control character, {_describe(ch)} at position {i + 1}: {what}",
                code="VALIDATION_ERROR",
            )
    return value


def free_text(value: str, field: str) -> str:
    """Free text as it is kept: line breaks normalised to LF; refused if it holds any other control
    character than LF and TAB."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _refuse(value, field, FREE_TEXT_ALLOWED,
                   "free text may hold line breaks and tabs, but no other control characters")


def name_text(value: str, field: str) -> str:
    """A name: one line, refused if it holds any control character (line breaks and tabs included)."""
    return _refuse(value, field, frozenset(), "a name is one line of printable text")


def optional_name(value: str | None, field: str) -> str | None:
    return None if value is None else name_text(value, field)


def clean_name(value: str) -> str:
    """A name given by a platform (a chat display name) that nobody can retype: control characters dropped."""
    return without_controls(value, frozenset())
