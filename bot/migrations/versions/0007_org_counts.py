"""org counts kept by triggers

A page of agents or tasks answers with the total that match (X-Total-Count). Counting the table on every
page made a page's cost grow with the table; the totals now live in `orgcount`, kept in the transaction of
every insert and delete by triggers, which no code path can forget (a task's agent, a cascade, a script) and
which stay exact across processes. On PostgreSQL each transaction adds to the slot its transaction id picks,
one row per org and transaction, so concurrent writers rarely queue on one row's lock and cannot deadlock
over slots; SQLite has one writer at a time and one slot. An org's count is the sum of its slots.

A status filter's page of tasks (Coder's q=status:active) reads `ix_task_org_status`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_TABLES = {"agent": "agents", "task": "tasks"}  # counted table -> its column in orgcount
SLOTS = 8

_PG_FUNCTION = f"""
CREATE FUNCTION shepherd_orgcount() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_delta integer := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
    v_org text := CASE WHEN TG_OP = 'INSERT' THEN NEW.org_id ELSE OLD.org_id END;
    v_slot integer := (txid_current() % {SLOTS})::integer;
BEGIN
    IF TG_TABLE_NAME = 'agent' THEN
        INSERT INTO orgcount AS c (org_id, slot, agents, tasks) VALUES (v_org, v_slot, v_delta, 0)
        ON CONFLICT (org_id, slot) DO UPDATE SET agents = c.agents + v_delta;
    ELSE
        INSERT INTO orgcount AS c (org_id, slot, agents, tasks) VALUES (v_org, v_slot, 0, v_delta)
        ON CONFLICT (org_id, slot) DO UPDATE SET tasks = c.tasks + v_delta;
    END IF;
    RETURN NULL;
END $$
"""


def _sqlite_trigger(table: str, column: str, op_name: str) -> str:
    row, delta = ("NEW", "+ 1") if op_name == "INSERT" else ("OLD", "- 1")
    start = "1" if op_name == "INSERT" else "-1"
    other = "tasks" if column == "agents" else "agents"
    return (
        f"CREATE TRIGGER orgcount_{table}_{op_name.lower()} AFTER {op_name} ON {table} BEGIN "
        f"INSERT INTO orgcount (org_id, slot, {column}, {other}) VALUES ({row}.org_id, 0, {start}, 0) "
        f"ON CONFLICT (org_id, slot) DO UPDATE SET {column} = {column} {delta}; END"
    )


def upgrade() -> None:
    op.create_table(
        'orgcount',
        sa.Column('org_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('slot', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('agents', sa.Integer(), nullable=False),
        sa.Column('tasks', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('org_id', 'slot'),
    )
    # not in batch mode: a batch that copies the table would drop the triggers made below
    op.create_index('ix_task_org_status', 'task', ['org_id', 'status', 'created_at', 'id'], unique=False)
    bind = op.get_bind()
    # What exists now, counted once; the triggers keep it from here (the migration is one transaction).
    bind.exec_driver_sql(
        "INSERT INTO orgcount (org_id, slot, agents, tasks) "
        "SELECT org_id, 0, SUM(a), SUM(t) FROM ("
        " SELECT org_id, 1 AS a, 0 AS t FROM agent UNION ALL SELECT org_id, 0 AS a, 1 AS t FROM task"
        ") AS x GROUP BY org_id"
    )
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_PG_FUNCTION)
        for table in _TABLES:
            bind.exec_driver_sql(f"CREATE TRIGGER orgcount_{table} AFTER INSERT OR DELETE ON {table} "
                                 "FOR EACH ROW EXECUTE FUNCTION shepherd_orgcount()")
    else:
        for table, column in _TABLES.items():
            for op_name in ("INSERT", "DELETE"):
                bind.exec_driver_sql(_sqlite_trigger(table, column, op_name))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in _TABLES:
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS orgcount_{table} ON {table}")
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS shepherd_orgcount()")
    else:
        for table in _TABLES:
            for op_name in ("insert", "delete"):
                bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS orgcount_{table}_{op_name}")
    op.drop_index('ix_task_org_status', table_name='task')
    op.drop_table('orgcount')
