"""a task's log rows without a foreign key to the task

Every output line is a row of `tasklog`, and on PostgreSQL the foreign key to `task` checked each one with a trigger
of its own (a SELECT ... FOR KEY SHARE of the task per row): half of what storing a line costs. COPY of 200,000 rows
took 108-132,000 rows a second with the key and 235,000 without (bench/README.md); in bench/tasks.py the output of a
hundred agents was stored at 72-75,000 rows a second while they ran, so the turns' ends waited for a backlog after
the last line (0.6-0.9 s), and at 133-156,000 without the key there was none.

What the key did is done by Shepherd itself: a task's rows go with it in the transaction that deletes it
(core.tasks.rows.delete_rows, the one place a task is deleted), and a running task is deleted only once its turn has
ended and its output is stored (core.tasks.ending). Lines of a task deleted while they were still buffered (a
runner taken for dead, say) are stored for no task and stay: every reader of the log asks for the rows of tasks
that exist, so none shows them. With the key, one such row would have failed every later flush of every task's
output (a flush keeps its rows for the next one).

SQLite's table is rebuilt without the key (its constraints cannot be dropped in place): one copy of the whole log,
in the migration's transaction (time on a large log, and disk for the second copy while it runs).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

_PG_KEY = "tasklog_task_id_fkey"  # PostgreSQL's name for the key of migration 0002


def _tasklog(keyed: bool) -> sa.Table:
    """The table as migration 0002 made it, with or without its key (SQLite's rebuild copies into this)."""
    return sa.Table(
        'tasklog', sa.MetaData(),
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('task_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('content', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        *([sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE')] if keyed else []),
        sa.PrimaryKeyConstraint('id'),
        sa.Index('ix_tasklog_task', 'task_id', 'id'),
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_PG_KEY, 'tasklog', type_='foreignkey')
    else:
        with op.batch_alter_table('tasklog', copy_from=_tasklog(keyed=False), recreate='always'):
            pass


def downgrade() -> None:
    # rows whose task is gone (a flush that raced a delete) would refuse the key: they go first
    op.execute("DELETE FROM tasklog WHERE NOT EXISTS (SELECT 1 FROM task WHERE task.id = tasklog.task_id)")
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(_PG_KEY, 'tasklog', 'task', ['task_id'], ['id'], ondelete='CASCADE')
    else:
        with op.batch_alter_table('tasklog', copy_from=_tasklog(keyed=True), recreate='always'):
            pass
