"""Search coverage: what each scan asked each backend and what came of it; monthly request
counts per backend; which backends found each hit.

``search_coverage`` holds one row per planned search of a scan (backend x query x kind x
results page): asked, answered, partial, result count, requests sent, and why not. Rows go
with their scan (``ON DELETE CASCADE``), so erasing a person erases them. ``search_usage``
counts requests per backend and calendar month (for monthly budgets): no person in it.
``hits.backends`` lists every backend that found a hit (hits are merged across backends).

CREATE TABLE and ADD COLUMN only (no table rebuild on SQLite).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_coverage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=100), nullable=False),
        sa.Column("query", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("asked", sa.Boolean(), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("partial", sa.Boolean(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["scan_id"],
            ["scans.id"],
            name=op.f("fk_search_coverage_scan_id_scans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_coverage")),
    )
    op.create_index(
        op.f("ix_search_coverage_scan_id"), "search_coverage", ["scan_id"], unique=False
    )
    op.create_table(
        "search_usage",
        sa.Column("backend", sa.String(length=100), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("backend", "month", name=op.f("pk_search_usage")),
    )
    op.add_column("hits", sa.Column("backends", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hits") as batch:
        batch.drop_column("backends")
    op.drop_table("search_usage")
    op.drop_index(op.f("ix_search_coverage_scan_id"), table_name="search_coverage")
    op.drop_table("search_coverage")
