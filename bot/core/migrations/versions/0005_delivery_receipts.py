"""Delivery receipts: each recipient's delivery state (forward only: delivered, undelivered or expired,
never overwritten), when the provider is next asked about it (QueryMessage sweep), whether an "unknown"
was settled by the provider; an inbox of raw receipts, stored before a push is answered and matched
to recipients afterwards (a receipt can come before the send's answer is stored); the Slack layer's
outcome message of a single send, which it edits when the receipt comes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in (
        sa.Column("delivery", sa.Text),
        sa.Column("delivery_code", sa.Text),
        sa.Column("delivery_error", sa.Text),
        sa.Column("delivered_at", sa.Double),
        sa.Column("check_at", sa.Double),
        sa.Column("checks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reconciled", sa.Integer, nullable=False, server_default="0"),
    ):
        op.add_column("recipients", column)
    op.create_index("recipients_message_id", "recipients", ["message_id"])
    op.create_index("recipients_check_at", "recipients", ["check_at"])
    op.create_index("jobs_task_id", "jobs", ["task_id"])
    op.create_table(
        "receipts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.Text),
        sa.Column("task_id", sa.Text),
        sa.Column("to_number", sa.Text),
        sa.Column("delivery", sa.Text, nullable=False),
        sa.Column("code", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("done_at", sa.Double),
        sa.Column("segments", sa.Integer),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("received_at", sa.Double, nullable=False),
    )
    op.add_column("slack_posts", sa.Column("outcome_ts", sa.Text))
