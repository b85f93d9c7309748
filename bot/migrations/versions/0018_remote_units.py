"""which runner holds a task's turn, and how to find its unit again (issue 18)

A remote turn (a Kubernetes Job, an exec in a Docker container) outlives the worker that started it: after a
restart the worker finds it by `runner_unit` and follows it instead of calling it interrupted.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-20 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.add_column(sa.Column('runner_kind', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('runner_unit', sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.drop_column('runner_unit')
        batch.drop_column('runner_kind')
