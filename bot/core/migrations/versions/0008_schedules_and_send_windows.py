"""Scheduled sends and send windows: `jobs.run_at`, the moment before which nobody claims the job (a
send scheduled for later, or one whose remaining recipients wait for their send window), and
`recipients.not_before`, the moment a marketing text's window opens in its recipient's time zone.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("run_at", sa.Double))
    op.add_column("recipients", sa.Column("not_before", sa.Double))
