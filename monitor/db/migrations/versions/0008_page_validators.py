"""Stored validators and image candidates of fetched pages (conditional page requests).

One row per page URL fetched with an ``ETag``, a ``Last-Modified`` or a freshness lifetime
(``Cache-Control: max-age`` / ``Expires``): the URL (and its SHA-256, the unique key), where it
redirected to, the validators, until when it is fresh, and the image and video URLs extracted
from it (JSON). Never the page itself. A new table only (no table rebuild on SQLite, whose
rebuild would cascade deletes).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page_cache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("final_url", sa.Text(), nullable=True),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fresh_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("candidates", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_cache")),
        sa.UniqueConstraint("url_sha256", name=op.f("uq_page_cache_url_sha256")),
    )


def downgrade() -> None:
    op.drop_table("page_cache")
