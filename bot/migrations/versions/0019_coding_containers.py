"""cloud coding containers: promotions, containers, syncs (issue 19)

A promotion is a bundle of files kept as a git repository (its first commit the snapshot); a container is an
agent's task on a workspace made from one; a sync is one push, pull or roundtrip of a container's workspace. A
task may start from a promotion instead of a repository, and its agent may see its workspace at a given path.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-21 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'promotion',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('org_id', sa.String(64), sa.ForeignKey('org.id'), nullable=False),
        sa.Column('source_kind', sa.String(40), nullable=False),
        sa.Column('project_id', sa.String(200), nullable=False),
        sa.Column('snapshot_id', sa.String(200), nullable=True),
        sa.Column('preferred_agent', sa.String(32), nullable=True),
        sa.Column('workspace_path', sa.String(300), nullable=False),
        sa.Column('base_sha', sa.String(64), nullable=False),
        sa.Column('file_count', sa.Integer(), nullable=False),
        sa.Column('total_bytes', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(200), nullable=False),
        sa.Column('created_at', _TS, nullable=False),
    )
    op.create_index('ix_promotion_org_id', 'promotion', ['org_id'])
    op.create_table(
        'codingcontainer',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('org_id', sa.String(64), sa.ForeignKey('org.id'), nullable=False),
        sa.Column('task_id', sa.String(64), nullable=False),
        sa.Column('promotion_id', sa.String(40), nullable=False),
        sa.Column('agent', sa.String(32), nullable=False),
        sa.Column('workspace_path', sa.String(300), nullable=False),
        sa.Column('file_count', sa.Integer(), nullable=False),
        sa.Column('total_bytes', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(200), nullable=False),
        sa.Column('created_at', _TS, nullable=False),
    )
    op.create_index('ix_codingcontainer_org_id', 'codingcontainer', ['org_id'])
    op.create_index('ix_codingcontainer_task_id', 'codingcontainer', ['task_id'])
    op.create_table(
        'containersync',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('org_id', sa.String(64), sa.ForeignKey('org.id'), nullable=False),
        sa.Column('container_id', sa.String(40), nullable=False),
        sa.Column('direction', sa.String(16), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('base_revision', sa.String(200), nullable=True),
        sa.Column('changed', sa.Integer(), nullable=False),
        sa.Column('deleted', sa.Integer(), nullable=False),
        sa.Column('patches', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(200), nullable=False),
        sa.Column('created_at', _TS, nullable=False),
    )
    op.create_index('ix_containersync_org_id', 'containersync', ['org_id'])
    op.create_index('ix_containersync_container_id', 'containersync', ['container_id'])
    with op.batch_alter_table('task') as batch:
        batch.add_column(sa.Column('promotion_id', sa.String(40), nullable=True))
        batch.add_column(sa.Column('mount_path', sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('task') as batch:
        batch.drop_column('mount_path')
        batch.drop_column('promotion_id')
    op.drop_table('containersync')
    op.drop_table('codingcontainer')
    op.drop_table('promotion')
