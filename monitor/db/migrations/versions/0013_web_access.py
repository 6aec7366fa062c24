"""The local web app's passphrase hash (``web_access``, monitor/web/auth.py).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("passphrase_hash", sa.String(length=400), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_access")),
    )


def downgrade() -> None:
    op.drop_table("web_access")
