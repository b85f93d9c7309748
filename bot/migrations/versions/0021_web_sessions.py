"""the dashboard's sign-ins (issue 20)

A browser signs in at /ui/ with an API token and gets a session cookie; the row keeps only the SHA-256 of the
cookie's secret, the token it acts as (or, signed in by a one-time link from chat, the user), and when it expires.
Signing out deletes the row. `signinlink`: the one-time links `dashboard` gives in chat (only their hash).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-22 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'websession',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('org_id', sa.String(length=64), nullable=False),
        sa.Column('token_id', sa.String(length=64), nullable=True),
        sa.Column('user_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['org.id']),
        sa.ForeignKeyConstraint(['token_id'], ['apitoken.id']),
        sa.ForeignKeyConstraint(['user_id'], ['user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'signinlink',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('org_id', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['org_id'], ['org.id']),
        sa.ForeignKeyConstraint(['user_id'], ['user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('signinlink') as batch:
        batch.create_index(batch.f('ix_signinlink_org_id'), ['org_id'], unique=False)
        batch.create_index(batch.f('ix_signinlink_user_id'), ['user_id'], unique=False)
    with op.batch_alter_table('websession') as batch:
        batch.create_index(batch.f('ix_websession_org_id'), ['org_id'], unique=False)
        batch.create_index(batch.f('ix_websession_token_id'), ['token_id'], unique=False)
        batch.create_index(batch.f('ix_websession_user_id'), ['user_id'], unique=False)
        batch.create_index(batch.f('ix_websession_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_table('signinlink')
    op.drop_table('websession')
