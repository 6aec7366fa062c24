"""Fetch cache: image hashes by URL, conditional-request validators.

One row per image URL fetched with an ``ETag`` or ``Last-Modified``: the URL (and its SHA-256,
the unique key), the validators and the image row holding the hashes. Never image bytes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fetch_cache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_fetch_cache_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fetch_cache")),
        sa.UniqueConstraint("url_sha256", name=op.f("uq_fetch_cache_url_sha256")),
    )
    op.create_index(op.f("ix_fetch_cache_image_id"), "fetch_cache", ["image_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_fetch_cache_image_id"), table_name="fetch_cache")
    op.drop_table("fetch_cache")
