"""approver reminders and the stall watchdog

A pending confirmation carries its next reminder's due time (`remind_at`, indexed: the reminders job claims the due
rows) and how many reminders were posted (`reminders`: each copy has its own message key, and the decision edits
them all). A task carries when its agent last printed (`output_at`), the silence it was last warned about
(`stall_warned_since`) and the last day of waiting on people it was told about (`waiting_noted_at`).

Pending confirmations made before this revision get no reminder (they expire within the policy's expiry anyway).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('confirmation', sa.Column('remind_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('confirmation', sa.Column('reminders', sa.Integer(), nullable=False, server_default='0'))
    op.create_index('ix_confirmation_remind', 'confirmation', ['remind_at'], unique=False)
    op.add_column('task', sa.Column('output_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('task', sa.Column('stall_warned_since', sa.DateTime(timezone=True), nullable=True))
    op.add_column('task', sa.Column('waiting_noted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+ too), not a batch copy: the task table's org-count triggers (0007)
    # would not survive SQLite's table rebuild
    for column in ('waiting_noted_at', 'stall_warned_since', 'output_at'):
        op.drop_column('task', column)
    op.drop_index('ix_confirmation_remind', table_name='confirmation')
    op.drop_column('confirmation', 'reminders')
    op.drop_column('confirmation', 'remind_at')
