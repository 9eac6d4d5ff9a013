"""Opt-outs and job control: the `suppressions` list (numbers that must not be texted: all texts, or
marketing only) and `jobs.control` (with `control_by`), what someone asked of a running job (pause or cancel) that the
sending replica obeys before its next request.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("e164", sa.Text, primary_key=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("added_by", sa.Text, nullable=False),
        sa.Column("added_at", sa.Double, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
    )
    op.create_index("suppressions_by_time", "suppressions", ["added_at"])
    op.add_column("jobs", sa.Column("control", sa.Text))
    op.add_column("jobs", sa.Column("control_by", sa.Text))
