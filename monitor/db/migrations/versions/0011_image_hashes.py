"""Every hash of a found image as a row of its own; how each match matched.

``image_hashes(image_id, algorithm, role, value, quality)`` replaces the ``pdq``,
``pdq_quality`` and ``phash`` columns of ``images``: a found image kept only those two hashes,
so a letterboxed, bordered or screenshot copy found once was matched again (by a later scan,
another person's scan, a later enrolment) without the region hashes it had matched on. The
existing values are copied into rows (role ``whole``), then the columns are dropped (on SQLite
by rebuilding ``images``; migrations run with foreign keys off, see ``db.migrate``). Images
stored before are marked ``rehash``: hashed again when next fetched, so their content-box
hashes are stored too (meanwhile retro-matching uses the whole-image rows).

``matches.how`` (JSON): which hashes matched, at what distance, in which stage.

Revision ID: 0011
Revises: 0009 (re-chained to 0010 when merged with the search coverage branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_hashes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=20), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_hashes_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_hashes")),
        sa.UniqueConstraint("image_id", "algorithm", "role", name=op.f("uq_image_hashes_image_id")),
    )
    op.execute(
        "INSERT INTO image_hashes (image_id, algorithm, role, value, quality) "
        "SELECT id, 'pdq', 'whole', pdq, pdq_quality FROM images WHERE pdq IS NOT NULL"
    )
    op.execute(
        "INSERT INTO image_hashes (image_id, algorithm, role, value, quality) "
        "SELECT id, 'phash', 'whole', phash, NULL FROM images WHERE phash IS NOT NULL"
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("pdq")
        batch_op.drop_column("pdq_quality")
        batch_op.drop_column("phash")
        batch_op.add_column(
            sa.Column("rehash", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Their content-box hashes were never stored: hash them again when next fetched.
    images = sa.table("images", sa.column("rehash", sa.Boolean()))
    op.execute(images.update().values(rehash=True))
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("how", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.drop_column("how")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("rehash")
        batch_op.add_column(sa.Column("pdq", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pdq_quality", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("phash", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE images SET pdq = (SELECT value FROM image_hashes h WHERE h.image_id = images.id "
        "AND h.algorithm = 'pdq' AND h.role = 'whole'), pdq_quality = (SELECT quality FROM "
        "image_hashes h WHERE h.image_id = images.id AND h.algorithm = 'pdq' AND h.role = "
        "'whole'), phash = (SELECT value FROM image_hashes h WHERE h.image_id = images.id AND "
        "h.algorithm = 'phash' AND h.role = 'whole')"
    )
    op.drop_table("image_hashes")
