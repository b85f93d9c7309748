"""org counts over 64 slots on PostgreSQL

The triggers of migration 0007 add each insert and delete of an agent or a task to one of 8 rows of its org in
`orgcount`, the one its transaction id picks, and the row stays locked until the transaction ends. Eight slots were
too few for a burst: with 32 connections writing at once, a hundred tasks created together (each an agent and a
task row) waited 4.2 s in all on those locks (pg_stat_statements: 42 ms an agent INSERT, against 0.3 ms for the
task INSERT after it in the same transaction). Transactions that overlap mostly have nearby ids, so with 64 slots
up to 64 concurrent writers of one org rarely share a row (a transaction left open long can still meet a later one);
a total is still the sum of the org's slots (64 rows at most, read by primary key). SQLite has one writer at a time
and keeps its one slot.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 17:10:00
"""

from __future__ import annotations

from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def _function(slots: int) -> str:
    """0007's function with `slots` slots (a copy, not an import of 0007: a migration keeps doing what it did when it
    was written, whatever later revisions change)."""
    return f"""
CREATE OR REPLACE FUNCTION shepherd_orgcount() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_delta integer := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
    v_org text := CASE WHEN TG_OP = 'INSERT' THEN NEW.org_id ELSE OLD.org_id END;
    v_slot integer := (txid_current() % {slots})::integer;
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


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_function(64))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # (the rows in slots 8-63 stay: a total sums every slot of its org)
        bind.exec_driver_sql(_function(8))
