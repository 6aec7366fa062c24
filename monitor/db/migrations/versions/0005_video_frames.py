"""Video and animation frames: where in a video a match was, and reference frame offsets.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frame_offset", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reference_offset", sa.Float(), nullable=True))
    with op.batch_alter_table("reference_hashes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frame_offset", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reference_hashes", schema=None) as batch_op:
        batch_op.drop_column("frame_offset")
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.drop_column("reference_offset")
        batch_op.drop_column("frame_offset")
