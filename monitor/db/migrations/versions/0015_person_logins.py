"""A monitored person's own read-only log-in (``person_logins``, monitor/orgs/person.py).

On PostgreSQL the table gets the same row-level security as the other tables holding a
person's data (migration 0012): only rows of people of the organisation in ``app.org_id``.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels = None
depends_on = None

_POLICY = 'EXISTS (SELECT 1 FROM subjects s WHERE s.id = "person_logins".subject_id)'


def upgrade() -> None:
    op.create_table(
        "person_logins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=320), nullable=False),
        sa.Column("passphrase_hash", sa.String(length=300), nullable=True),
        sa.Column("invite_sha256", sa.String(length=64), nullable=True),
        sa.Column("invite_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_person_logins_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person_logins")),
        sa.UniqueConstraint("subject_id", name=op.f("uq_person_logins_subject_id")),
    )
    op.create_index(
        op.f("ix_person_logins_invite_sha256"), "person_logins", ["invite_sha256"], unique=False
    )
    op.create_index(op.f("ix_person_logins_login"), "person_logins", ["login"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE "person_logins" ENABLE ROW LEVEL SECURITY')
        op.execute('ALTER TABLE "person_logins" FORCE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY org_scope ON "person_logins" USING ({_POLICY}) WITH CHECK ({_POLICY})'
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_person_logins_login"), table_name="person_logins")
    op.drop_index(op.f("ix_person_logins_invite_sha256"), table_name="person_logins")
    op.drop_table("person_logins")
