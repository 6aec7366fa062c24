"""Reference hashes encrypted at rest; monitoring health per subject; outbox message kinds.

Encrypts ``reference_hashes.value`` and ``references.content_sha256`` of existing rows with the
reference key (monitor/secrets.py; created here if the database has none yet), widens both
columns to text (the encrypted form is longer), adds ``outbox.kind`` and ``subject_health``.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from monitor.secrets import (
    PREFIX,
    REFERENCE_HASH,
    REFERENCE_SHA256,
    KeyStore,
    default_key_path,
)

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

# (table, column, purpose, old type)
_COLUMNS = (
    ("reference_hashes", "value", REFERENCE_HASH, sa.String(length=128)),
    ("references", "content_sha256", REFERENCE_SHA256, sa.String(length=64)),
)


def _keystore(bind: sa.Connection) -> KeyStore:
    ks = context.config.attributes.get("keystore")
    if ks is None:  # the `alembic` command line: the default key file for this database
        ks = KeyStore(default_key_path(bind.engine.url.render_as_string(hide_password=False)))
    return ks


def _convert(bind: sa.Connection, encrypt: bool) -> None:
    ks: KeyStore | None = None
    for table, column, purpose, _old in _COLUMNS:
        t = sa.table(table, sa.column("id", sa.Integer), sa.column(column, sa.Text))
        col = t.c[column]
        pick = ~col.like(f"{PREFIX}%") if encrypt else col.like(f"{PREFIX}%")
        rows = bind.execute(sa.select(t.c.id, col).where(col.is_not(None), pick)).all()
        if not rows:
            continue
        ks = ks or _keystore(bind)
        convert = ks.encrypt if encrypt else ks.decrypt
        bind.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("row_id"))
            .values({column: sa.bindparam("v")}),
            [{"row_id": row_id, "v": convert(value, purpose)} for row_id, value in rows],
        )


def upgrade() -> None:
    bind = op.get_bind()
    # On SQLite the column types need no change (both are TEXT there), and a batch rebuild of
    # "references" would drop the table, cascading to every reference hash.
    if bind.dialect.name != "sqlite":
        for table, column, _purpose, old in _COLUMNS:
            op.alter_column(table, column, existing_type=old, type_=sa.Text())
    _convert(bind, encrypt=True)

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=20), server_default="matches", nullable=False)
        )
    op.create_table(
        "subject_health",
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("search_failures", sa.Integer(), nullable=False),
        sa.Column("last_failure", sa.Text(), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("degraded_since", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_subject_health_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_subject_health")),
    )


def downgrade() -> None:
    op.drop_table("subject_health")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("kind")
    bind = op.get_bind()
    _convert(bind, encrypt=False)
    if bind.dialect.name != "sqlite":
        for table, column, _purpose, old in _COLUMNS:
            op.alter_column(table, column, existing_type=sa.Text(), type_=old)
