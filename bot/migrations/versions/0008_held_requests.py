"""held requests

A GitHub comment command from an author the trust gate does not trust runs nothing: it is held as a row until a
trusted person says `ok-to-run` in the same thread (Prow's /ok-to-test), so the hold survives a restart.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'heldrequest',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('org_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('author', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('released_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('source', 'key'),
    )
    op.create_index('ix_heldrequest_place', 'heldrequest', ['org_id', 'channel', 'address'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_heldrequest_place', table_name='heldrequest')
    op.drop_table('heldrequest')
