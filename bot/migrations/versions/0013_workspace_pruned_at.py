"""a task's workspace pruned by clean-up

Clean-up (core.housekeeping, issue 16) removes the workspaces of tasks finished long ago; the task keeps when it
did, so that its page says the workspace is gone and a follow-up is refused with that answer.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('task', sa.Column('workspace_pruned_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # in place (SQLite >= 3.35 drops a column itself): a batch copy of the table would lose its count triggers
    op.drop_column('task', 'workspace_pruned_at')
