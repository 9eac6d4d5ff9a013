"""Baseline: the schema the bot had before migrations (it ran CREATE TABLE IF NOT EXISTS at start).

Safe on a database made by any earlier version: tables that exist are left as they are, and the one
column added since the first release (`recipients.est_segments`) is added where it is missing.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables(meta: sa.MetaData) -> None:
    sa.Table(
        "jobs",
        meta,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("source_key", sa.Text, unique=True),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Text),
        sa.Column("response_url", sa.Text),
        sa.Column("sender_id", sa.Text),
        sa.Column("type", sa.Text),
        sa.Column("task_id", sa.Text),
        sa.Column("validity", sa.Integer),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("thread_ts", sa.Text),
        sa.Column("parent_ts", sa.Text),
        sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Index("jobs_by_user", "created_by", "created_at"),
    )
    sa.Table(
        "recipients",
        meta,
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("e164", sa.Text, nullable=False),
        sa.Column("country_code", sa.Integer, nullable=False),
        sa.Column("national", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("segments", sa.Integer),
        sa.Column("code", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("request_id", sa.Text),
        sa.Column("country", sa.Text),
        sa.Column("carrier", sa.Text),
        sa.Column("retryable", sa.Integer, nullable=False, server_default="0"),
        sa.Column("est_segments", sa.Integer),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Index("recipients_state", "job_id", "state"),
    )
    sa.Table(
        "threads",
        meta,
        sa.Column("channel_id", sa.Text, primary_key=True),
        sa.Column("e164", sa.Text, primary_key=True),
        sa.Column("thread_ts", sa.Text, nullable=False),
    )
    sa.Table(
        "drafts",
        meta,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    sa.Table(
        "draft_recipients",
        meta,
        sa.Column("draft_id", sa.Text, sa.ForeignKey("drafts.id"), primary_key=True),
        sa.Column("recipients", sa.Text, nullable=False),
    )
    sa.Table(
        "job_sources",
        meta,
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("draft_id", sa.Text, nullable=False),
        sa.Column("stored", sa.Integer, nullable=False),
        sa.Column("unstored_segments", sa.Integer, nullable=False),
    )


def upgrade() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    _tables(meta)
    meta.create_all(bind, checkfirst=True)  # existing tables (and their indexes) are left alone
    columns = {c["name"] for c in sa.inspect(bind).get_columns("recipients")}
    if "est_segments" not in columns:  # databases made before bulk sends
        op.add_column("recipients", sa.Column("est_segments", sa.Integer))
    indexes = {i["name"] for i in sa.inspect(bind).get_indexes("recipients")}
    if "recipients_state" not in indexes:
        op.create_index("recipients_state", "recipients", ["job_id", "state"])
