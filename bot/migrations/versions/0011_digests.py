"""digests (issue 16, sched-digest)

`digest <cron>|off` gives a place (a Slack channel, a Telegram chat, a GitHub issue, a console) a status digest on
a cron schedule: one row per place, whose `next_fire_at` is the one-off timer a worker claims (FOR UPDATE SKIP
LOCKED) to post the digest and move the timer in one transaction.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'digest',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('org_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('project_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('cron', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_fire_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_fired_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_posted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('reported_until', sa.DateTime(timezone=True), nullable=False),
        sa.Column('seen', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('org_id', 'channel', 'address'),
    )
    op.create_index('ix_digest_due', 'digest', ['next_fire_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_digest_due', table_name='digest')
    op.drop_table('digest')
