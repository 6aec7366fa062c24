"""Organisations that monitor people on their consent (issue 13).

New tables: ``organisations``, ``operators`` (email, scrypt passphrase hash, encrypted TOTP
secret, role), ``consents`` (who, when, how, which names, which search backends, until when,
withdrawn) and ``audit_log`` (append-only: UPDATE and DELETE are refused by triggers).
``subjects`` get a nullable ``organisation_id`` (NULL: a person monitoring themselves),
``paused_reason`` and ``alert_to``; a name is unique per organisation (and among people without one) instead of overall.
``matches.assigned_to`` (the caseworker); ``notices`` get the dates the site acknowledged,
removed or refused.

On PostgreSQL, row-level security is a second wall behind the data layer's filters: the
tables holding a person's data only show rows of the organisation named by the session
setting ``app.org_id`` (``none``: only people without an organisation; unset or empty: every
row, for the scheduler and maintenance). ``FORCE`` makes it apply to the tables' owner too;
a superuser bypasses it, so run the monitor as an ordinary role.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None

# Tables scoped by row-level security on PostgreSQL, and how each reaches its subject.
RLS_BY_SUBJECT = (
    "aliases",
    "references",
    "scans",
    "sightings",
    "matches",
    "outbox",
    "subject_health",
    "consents",
)
RLS_BY_MATCH = ("case_events", "case_contacts", "notices")
_SETTING = "current_setting('app.org_id', true)"
SUBJECT_POLICY = (
    f"coalesce({_SETTING}, '') = '' "
    f"OR ({_SETTING} = 'none' AND organisation_id IS NULL) "
    f"OR organisation_id::text = {_SETTING}"
)


def _uq_col(table: str, col: str) -> str:
    return op.f(f"uq_{table}_{col}")


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("name", name=_uq_col("organisations", "name")),
    )
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("passphrase_hash", sa.String(length=300), nullable=False),
        sa.Column("totp_secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_operators_organisation_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("email", name=_uq_col("operators", "email")),
    )
    op.create_index(
        op.f("ix_operators_organisation_id"), "operators", ["organisation_id"], unique=False
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("given_by", sa.String(length=20), nullable=False),
        sa.Column("representative", sa.String(length=200), nullable=True),
        sa.Column("authority", sa.Text(), nullable=True),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("form_sha256", sa.String(length=64), nullable=True),
        sa.Column("link_token_sha256", sa.String(length=64), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("names", sa.Text(), nullable=False),
        sa.Column("backends", sa.Text(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_consents_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"],
            ["operators.id"],
            name=op.f("fk_consents_recorded_by_operators"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    op.create_index(op.f("ix_consents_subject_id"), "consents", ["subject_id"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("operator", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    for col in ("at", "organisation_id", "subject_id"):
        op.create_index(op.f(f"ix_audit_log_{col}"), "audit_log", [col], unique=False)

    # SQLite rebuilds these tables (foreign keys are off during migrations, see db.migrate).
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organisation_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("paused_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("alert_to", sa.String(length=20), server_default="person", nullable=False)
        )
        batch_op.drop_constraint("uq_subjects_name", type_="unique")
        batch_op.create_unique_constraint(
            "uq_subjects_organisation_id_name", ["organisation_id", "name"]
        )
        batch_op.create_foreign_key(
            op.f("fk_subjects_organisation_id_organisations"),
            "organisations",
            ["organisation_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch_op.create_index(
            op.f("ix_subjects_organisation_id"), ["organisation_id"], unique=False
        )
    op.create_index(  # people monitoring themselves: unique among themselves
        "uq_subjects_household_name",
        "subjects",
        ["name"],
        unique=True,
        sqlite_where=sa.text("organisation_id IS NULL"),
        postgresql_where=sa.text("organisation_id IS NULL"),
    )
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assigned_to", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_matches_assigned_to_operators"),
            "operators",
            ["assigned_to"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(op.f("ix_matches_assigned_to"), ["assigned_to"], unique=False)
    with op.batch_alter_table("notices", schema=None) as batch_op:
        for col in ("acknowledged_at", "removed_at", "refused_at"):
            batch_op.add_column(sa.Column(col, sa.DateTime(timezone=True), nullable=True))

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
        _enable_rls("subjects", SUBJECT_POLICY)
        for table in RLS_BY_SUBJECT:
            _enable_rls(
                table, f'EXISTS (SELECT 1 FROM subjects s WHERE s.id = "{table}".subject_id)'
            )
        for table in RLS_BY_MATCH:
            _enable_rls(table, f'EXISTS (SELECT 1 FROM matches m WHERE m.id = "{table}".match_id)')
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
            )


def _enable_rls(table: str, condition: str) -> None:
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY org_scope ON "{table}" USING ({condition}) WITH CHECK ({condition})')


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in ("subjects", *RLS_BY_SUBJECT, *RLS_BY_MATCH):
            op.execute(f'DROP POLICY IF EXISTS org_scope ON "{table}"')
            op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
            op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        for col in ("acknowledged_at", "removed_at", "refused_at"):
            batch_op.drop_column(col)
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.drop_index(op.f("ix_matches_assigned_to"))
        batch_op.drop_constraint(op.f("fk_matches_assigned_to_operators"), type_="foreignkey")
        batch_op.drop_column("assigned_to")
    op.drop_index("uq_subjects_household_name", table_name="subjects")
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_index(op.f("ix_subjects_organisation_id"))
        batch_op.drop_constraint(
            op.f("fk_subjects_organisation_id_organisations"), type_="foreignkey"
        )
        batch_op.drop_constraint("uq_subjects_organisation_id_name", type_="unique")
        batch_op.drop_column("alert_to")
        batch_op.drop_column("paused_reason")
        batch_op.drop_column("organisation_id")
        batch_op.create_unique_constraint("uq_subjects_name", ["name"])
    op.drop_table("audit_log")
    op.drop_table("consents")
    op.drop_table("operators")
    op.drop_table("organisations")
