"""tasks pinned to the runner that holds their one-use GitHub token, and the cheaper model

Issue 17 (CloudCoding's invoke): a task started with a `github_token` is claimed only by the runner of the process
that received the token (it lives in that process's memory, never in the database) until its first claim; and a
task may ask its agent for the preset's cheaper model (`haiku`).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-13 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # in place: a batch copy of the task table would lose its count triggers
    op.add_column('task', sa.Column('pinned_runner', sa.String(200), nullable=True))
    op.add_column('task', sa.Column('cheap_model', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('task', 'cheap_model')
    op.drop_column('task', 'pinned_runner')
