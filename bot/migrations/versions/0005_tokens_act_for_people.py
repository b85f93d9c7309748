"""tokens act for people

A token now acts for a user (`token create --user`, `--name` its alias), and a token of nobody never
decides. Tokens made before were all of nobody: each spoke as its name (`token:me`). So that nobody who
could approve yesterday is locked out today, every token named by someone (`--name me`) is bound to the
org's user of that name (made with the role its scopes need, if there is none), and what its name owned,
requested and voted as `token:<name>` becomes that user's. Tokens left with the default name `api` were
one shared voter whoever held them: they stay tokens of nobody.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:30:00
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_ROLE_OF_SCOPE = {"read": ("viewer", 10), "write": ("operator", 20), "approve": ("approver", 30),
                  "admin": ("admin", 40)}


def _role(scopes: list[str]) -> str:
    found = [_ROLE_OF_SCOPE[s] for s in scopes if s in _ROLE_OF_SCOPE]
    return max(found, key=lambda r: r[1], default=("viewer", 10))[0]


def upgrade() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    token = sa.Table("apitoken", meta, autoload_with=bind)
    user = sa.Table("user", meta, autoload_with=bind)
    task = sa.Table("task", meta, autoload_with=bind)
    conf = sa.Table("confirmation", meta, autoload_with=bind)
    vote = sa.Table("vote", meta, autoload_with=bind)
    named: dict[tuple[str, str], list[str]] = {}
    for org_id, name, scopes in bind.execute(
        sa.select(token.c.org_id, token.c.name, token.c.scopes)
        .where(token.c.user_id.is_(None), token.c.name != "api")
    ):
        named.setdefault((org_id, name), []).extend(s for s in scopes.split(",") if s)
    for (org_id, name), scopes in named.items():
        user_id = bind.execute(sa.select(user.c.id).where(user.c.org_id == org_id, user.c.name == name)).scalar()
        if user_id is None:
            user_id = f"user-{secrets.token_hex(6)}"
            bind.execute(sa.insert(user).values(id=user_id, org_id=org_id, name=name, role=_role(scopes),
                                                created_at=datetime.now(UTC)))
        bind.execute(sa.update(token).where(token.c.org_id == org_id, token.c.name == name,
                                            token.c.user_id.is_(None)).values(user_id=user_id))
        old = f"token:{name}"
        bind.execute(sa.update(task).where(task.c.org_id == org_id, task.c.owner_id == old)
                     .values(owner_id=user_id))
        bind.execute(sa.update(conf).where(conf.c.org_id == org_id, conf.c.requester_id == old)
                     .values(requester_id=user_id))
        # a vote is one per person and confirmation: one already counted for the user keeps its place
        already = sa.select(vote.c.confirmation_id).where(vote.c.voter_id == user_id).scalar_subquery()
        mine = sa.select(conf.c.id).where(conf.c.org_id == org_id).scalar_subquery()
        bind.execute(sa.update(vote).where(vote.c.voter_id == old, vote.c.confirmation_id.in_(mine),
                                           vote.c.confirmation_id.not_in(already)).values(voter_id=user_id))


def downgrade() -> None:
    # Which tokens were bound by this step is not recorded; binding them stays harmless under 0004's code.
    pass
