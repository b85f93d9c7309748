"""A task's log as rows, and as the lines people read.

An agent's output is stored a row per read of its pipe, not a row per line: the lines one read gave (at one time)
are joined by newlines in one row, which says how many lines it holds (`lines`). A row per line cost the store a
heap tuple, an index entry and a WAL record for every ten bytes of output (bench/tasks.py: 200,500 rows for a
hundred agents, half of PostgreSQL's CPU); a row per read is a few hundred.

Every reader still sees lines, each with an id of its own: a row with id `r` holding `n` lines holds the lines
`r - n + 1` … `r` (its id is its last line's). Ids stay one sequence across a task's log and across tasks, so a
cursor ("after id X") means what it meant: the rows after X are those with an id above X, less the lines of the
first of them that are not. Each store keeps the ranges apart: PostgreSQL's sequence steps by LINES_PER_ROW
(migration 0024), SQLite's rows are written with their ids (core.tasks.output). Rows of one line (input, a line
read alone, the rows written before 0024) are what they were: their content is one entry, newlines and all.

A row holds at most LINES_PER_ROW lines and ROW_CHARS characters (a longer line alone). A page of lines is read from
the rows that hold it: the log pages, a follow's ticks and a session's replay read the rows' line counts first and
then only those rows (asking for as many rows as lines had read up to a thousand times the page); and readers make
only the lines they were asked for. A snapshot (core.tasks.snapshots) still reads its window of rows whole."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

LINES_PER_ROW = 1024  # PostgreSQL's tasklog_id_seq steps by this (migration 0024): a row's lines fit under its id
ROW_CHARS = 4096  # about one long line (core.runners.local.MAX_LINE_CHARS, and what is said of the cut)


def chunks(lines: list[str]) -> Iterator[list[str]]:
    """Lines read together, as the rows that store them: at most LINES_PER_ROW lines and ROW_CHARS characters
    (joined) each, a longer line alone."""
    start, size = 0, 0
    for at, line in enumerate(lines):
        if at > start and (at - start >= LINES_PER_ROW or size + len(line) >= ROW_CHARS):
            yield lines[start:at]
            start, size = at, 0
        size += len(line) + 1
    if start < len(lines):
        yield lines[start:]


def split(row_id: int, count: int, content: str) -> list[tuple[int, str]]:
    """A row's lines with their ids, oldest first."""
    if count <= 1:
        return [(row_id, content)]
    parts = content.split("\n")
    first = row_id - len(parts) + 1
    return list(zip(range(first, row_id + 1), parts, strict=True))


def last_line(count: int, content: str) -> str:
    """A row's last line."""
    return content.rsplit("\n", 1)[-1] if count > 1 else content


def enough(span: Sequence[Sequence[Any]], want: int, after: int | None) -> int:
    """Of rows' (id, lines), in the order they are read, the id of the row by which they hold `want` lines (those
    after the line `after`, reading forward; all of them with None), or of the last row when they hold fewer. A
    reader reads the counts first and then only the rows up to that one."""
    held = 0
    for row_id, count in span:
        held += count if after is None else min(count, int(row_id) - after)
        if held >= want:
            return int(row_id)
    return int(span[-1][0])
