"""Cached frame hashes of found videos and animations.

``media_frames`` holds, per image row of a video or an animated image, the time offset and
hashes of every frame the scan sampled (JSON), never pixels or bytes. With the fetch cache's
validators (``fetch_cache``), an unchanged video URL is matched again frame by frame without
being downloaded or decoded. Rows go with their image (``ON DELETE CASCADE``), so erasure
removes them as it removes the image and its cache entries.

CREATE TABLE only (no table rebuild on SQLite).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media_frames",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("frames", sa.Text(), nullable=False),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_media_frames_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_media_frames")),
    )


def downgrade() -> None:
    op.drop_table("media_frames")
