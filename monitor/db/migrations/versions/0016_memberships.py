"""An operator's admin role in further organisations (``memberships``): the web app's
organisation switcher (docs/web.md, "Organisations").

On PostgreSQL the table gets row-level security keyed on ``app.org_id`` like ``subjects``
(migration 0012): an organisation's number shows only its own memberships, ``none`` (the
household) none, unset or empty every row.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels = None
depends_on = None

_SETTING = "current_setting('app.org_id', true)"
_POLICY = f"coalesce({_SETTING}, '') = '' OR organisation_id::text = {_SETTING}"


def upgrade() -> None:
    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_memberships_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_memberships_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint(
            "operator_id", "organisation_id", name=op.f("uq_memberships_operator_id")
        ),
    )
    op.create_index(
        op.f("ix_memberships_operator_id"), "memberships", ["operator_id"], unique=False
    )
    op.create_index(
        op.f("ix_memberships_organisation_id"), "memberships", ["organisation_id"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE "memberships" ENABLE ROW LEVEL SECURITY')
        op.execute('ALTER TABLE "memberships" FORCE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY org_scope ON "memberships" USING ({_POLICY}) WITH CHECK ({_POLICY})'
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_memberships_organisation_id"), table_name="memberships")
    op.drop_index(op.f("ix_memberships_operator_id"), table_name="memberships")
    op.drop_table("memberships")
