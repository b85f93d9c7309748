"""sessions (workstreams that group tasks) and task budgets

Issue 17: a session groups tasks (the Agentuity hub's coder sessions; a chat thread that ran several tasks) and
may run in loop mode; a task belongs to at most one session; a thread is bound to the session of the tasks it
runs; an event may be a session's own. A task (or a session, for its tasks) may carry a budget of turns, minutes
and dollars, with what it has used so far.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'session',
        sa.Column('id', sa.String(64), primary_key=True),
        sa.Column('org_id', sa.String(64), sa.ForeignKey('org.id'), nullable=False),
        sa.Column('label', sa.String(200), nullable=False),
        sa.Column('task', sa.String(), nullable=False),
        sa.Column('default_agent', sa.String(32), nullable=True),
        sa.Column('project_id', sa.String(64), nullable=True),
        sa.Column('repos', sa.JSON(), nullable=False),
        sa.Column('visibility', sa.String(16), nullable=False),
        sa.Column('tags', sa.JSON(), nullable=False),
        sa.Column('skills', sa.JSON(), nullable=False),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.Column('env', sa.JSON(), nullable=False),
        sa.Column('workflow_mode', sa.String(16), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('origin', sa.JSON(), nullable=False),
        sa.Column('workspace_id', sa.String(200), nullable=True),
        sa.Column('owner_id', sa.String(200), nullable=False),
        sa.Column('owner_name', sa.String(200), nullable=False),
        sa.Column('loop', sa.JSON(), nullable=True),
        sa.Column('loop_status', sa.String(16), nullable=True),
        sa.Column('loop_iteration', sa.Integer(), nullable=False),
        sa.Column('loop_summary', sa.String(), nullable=True),
        sa.Column('loop_next_action', sa.String(1000), nullable=True),
        sa.Column('loop_checkpoint_at', _TS, nullable=True),
        sa.Column('max_turns', sa.Integer(), nullable=True),
        sa.Column('max_minutes', sa.Float(), nullable=True),
        sa.Column('max_cost', sa.Float(), nullable=True),
        sa.Column('created_at', _TS, nullable=False),
        sa.Column('updated_at', _TS, nullable=False),
        sa.Column('last_activity_at', _TS, nullable=False),
        sa.Column('archived_at', _TS, nullable=True),
    )
    op.create_index('ix_session_org_activity', 'session', ['org_id', 'last_activity_at', 'id'])
    op.create_index('ix_session_org_status', 'session', ['org_id', 'status', 'last_activity_at'])
    # in place: a batch copy of the task table would lose its count triggers
    op.add_column('task', sa.Column('session_id', sa.String(64), nullable=True))
    op.add_column('task', sa.Column('max_turns', sa.Integer(), nullable=True))
    op.add_column('task', sa.Column('max_minutes', sa.Float(), nullable=True))
    op.add_column('task', sa.Column('max_cost', sa.Float(), nullable=True))
    op.add_column('task', sa.Column('cost_usd', sa.Float(), nullable=True))
    op.add_column('task', sa.Column('run_seconds', sa.Float(), nullable=False, server_default='0'))
    op.create_index('ix_task_session', 'task', ['session_id', 'created_at'])
    op.add_column('thread', sa.Column('session_id', sa.String(64), nullable=True))
    op.add_column('event', sa.Column('session_id', sa.String(64), nullable=True))
    op.create_index('ix_event_task', 'event', ['task_id', 'id'])
    op.create_index('ix_event_session', 'event', ['session_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_event_session', 'event')
    op.drop_index('ix_event_task', 'event')
    op.drop_column('event', 'session_id')
    op.drop_column('thread', 'session_id')
    op.drop_index('ix_task_session', 'task')
    for name in ('run_seconds', 'cost_usd', 'max_cost', 'max_minutes', 'max_turns', 'session_id'):
        op.drop_column('task', name)
    op.drop_index('ix_session_org_status', 'session')
    op.drop_index('ix_session_org_activity', 'session')
    op.drop_table('session')
