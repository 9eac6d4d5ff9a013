"""A job's finish is reported until someone has been told: `jobs.reported_at` is set once the observer
(Slack) has told the sender or the channel. A finished job without it (the process stopped, Slack or the
database could not be reached at that moment) is reported again by the sending replica
(bot/core/worker.py). Jobs finished before this revision were reported as they finished.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("reported_at", sa.Double))
    op.execute("UPDATE jobs SET reported_at = finished_at WHERE state = 'done'")
    op.create_index("jobs_unreported", "jobs", ["reported_at"])
