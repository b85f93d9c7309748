"""approval channels and linked identities

`subscribe <project>` makes a place a project's approval channel: a Thread bound to the project, one per place and
project (a partial unique index), ended rather than deleted by `unsubscribe` (the prompts it shows still hear their
decisions). `link` gives a person a one-time code (only its hash kept) that joins their identity in another channel
to them; the wrong codes a person tries are counted, so that codes cannot be guessed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

SUBSCRIPTION_ROWS = "task_id IS NULL AND project_id IS NOT NULL"


def upgrade() -> None:
    op.add_column('thread', sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ux_thread_subscription', 'thread', ['org_id', 'channel', 'address', 'project_id'], unique=True,
                    sqlite_where=sa.text(SUBSCRIPTION_ROWS), postgresql_where=sa.text(SUBSCRIPTION_ROWS))
    op.create_table(
        'linkcode',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('org_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('used_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], ),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_linkcode_org', 'linkcode', ['org_id', 'expires_at'], unique=False)
    op.create_table(
        'linkattempt',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('org_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_linkattempt_user', 'linkattempt', ['org_id', 'user_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_linkattempt_user', table_name='linkattempt')
    op.drop_table('linkattempt')
    op.drop_index('ix_linkcode_org', table_name='linkcode')
    op.drop_table('linkcode')
    op.drop_index('ux_thread_subscription', table_name='thread')
    with op.batch_alter_table('thread') as batch:
        batch.drop_column('ended_at')
