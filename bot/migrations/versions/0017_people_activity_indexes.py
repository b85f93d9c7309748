"""indexes for a person's last activity (the hub's users, issue 17)

`GET /hub/users` shows when each person was last active: the newest task they own and the newest vote they cast.
Without these indexes each page of users read every task of the org and every vote ever cast.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-13 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_task_org_owner', 'task', ['org_id', 'owner_id', 'created_at'])
    op.create_index('ix_vote_voter', 'vote', ['voter_id', 'at'])


def downgrade() -> None:
    op.drop_index('ix_vote_voter', 'vote')
    op.drop_index('ix_task_org_owner', 'task')
