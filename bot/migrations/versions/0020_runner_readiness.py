"""runner readiness on each runner node (issue 19)

A web process answers the container routes 503 when no runner can take containers: it cannot call a runner's
`ready()` itself (runners live in workers), so each node records its runner's kind and why it is not ready (None:
ready) at announce and heartbeat.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runnernode') as batch:
        batch.add_column(sa.Column('runner_kind', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('not_ready', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runnernode') as batch:
        batch.drop_column('not_ready')
        batch.drop_column('runner_kind')
