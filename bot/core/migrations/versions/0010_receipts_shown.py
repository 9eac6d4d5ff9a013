"""Receipt edits survive a restart: a job whose receipts changed what Slack should show keeps
`jobs.receipts_unshown` (when the first change not yet shown was matched) until the observer has shown
it; `jobs.receipts_changed` counts the changes, so that a change matched while an edit was being made
is not taken for shown. The sending replica offers such jobs to the observer again
(bot/core/deliveries.py). Receipts matched before this revision count as shown.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("receipts_changed", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("receipts_unshown", sa.Double))
    op.create_index("jobs_receipts_unshown", "jobs", ["receipts_unshown"])
