"""a row of a task's log holds the lines of one read

An agent's output was a row per line: 200,500 rows for bench/tasks.py's hundred agents, each a heap tuple, an index
entry and a WAL record for about ten bytes of text, half of PostgreSQL's CPU in that run and most of SQLite's write
time. A row now holds the lines one read of the agent's pipe gave (joined by newlines) and says how many (`lines`,
1 for every row before: they keep their meaning, and their ids).

A row's id is its last line's, and its lines take the ids just below it (core.tasks.loglines), so the ids of lines
stay one sequence that cursors read by. On PostgreSQL the sequence now steps by 1024 (the most lines a row holds):
every row, of one line or many, has the ids below its own to itself. That needs 64-bit ids, so the column becomes
BIGINT: PostgreSQL rewrites the table and both its indexes once, in the migration's transaction, holding the table
locked meanwhile (time on a large log; stop the processes of the earlier version first: their cached statements and
their 32-bit ids do not survive the change).
SQLite's rowid is 64 bits already, and Shepherd writes its rows with their ids.

Down again, each row of several lines becomes a row per line, with the lines' own ids (so no cursor moves), and
PostgreSQL's sequence steps by 1 again, from where it was; the ids stay BIGINT (ids above 2^31 may have been given
out: the code of 0023 reads them as 32-bit, so a store that went past 2^31 cannot go back).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

_STEP = 1024  # core.tasks.loglines.LINES_PER_ROW when this was written


def upgrade() -> None:
    op.add_column('tasklog', sa.Column('lines', sa.Integer(), server_default='1', nullable=False))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.alter_column('tasklog', 'id', type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
        # the next row's lines all above every id given so far, and none at 0 or below: a row's id is never
        # under _STEP (MINVALUE), so even the first, of up to _STEP lines, has its lines from 1 on
        top = bind.execute(sa.text("SELECT greatest((SELECT max(id) FROM tasklog), "
                                   "(SELECT last_value FROM tasklog_id_seq), 0)")).scalar()
        op.execute(f"ALTER SEQUENCE tasklog_id_seq AS BIGINT INCREMENT BY {_STEP} MINVALUE {_STEP} START WITH {_STEP} "
                   f"RESTART WITH {int(top or 0) + _STEP}")


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, task_id, time, type, content FROM tasklog WHERE lines > 1")).all()
    for row_id, task_id, time, kind, content in rows:
        parts = content.split("\n")
        first = row_id - len(parts) + 1
        bind.execute(sa.text("INSERT INTO tasklog (id, task_id, time, type, content) VALUES (:id, :task, :time, :type, "
                             ":content)"), [{"id": first + i, "task": task_id, "time": time, "type": kind,
                                             "content": part} for i, part in enumerate(parts[:-1])])
        bind.execute(sa.text("UPDATE tasklog SET content = :content WHERE id = :id"), {"id": row_id,
                                                                                       "content": parts[-1]})
    if bind.dialect.name == "postgresql":
        op.execute("ALTER SEQUENCE tasklog_id_seq INCREMENT BY 1 NO MINVALUE START WITH 1")
        op.drop_column('tasklog', 'lines')
    else:
        with op.batch_alter_table('tasklog') as batch:
            batch.drop_column('lines')
