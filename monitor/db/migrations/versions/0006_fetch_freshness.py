"""Fetch cache freshness: how long a fetched image may be reused without asking again.

``fetch_cache.fresh_until`` is the end of the window in which the server said (with
``Cache-Control: max-age`` or ``Expires``, capped by ``[fetch] max_cache_age``) that the image
will not change; until then a scan reuses the stored hashes without a request. NULL (rows from
before, or images served without such headers): always ask again, conditionally.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN only (no table rebuild on SQLite).
    with op.batch_alter_table("fetch_cache", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fresh_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fetch_cache", schema=None) as batch_op:
        batch_op.drop_column("fresh_until")
