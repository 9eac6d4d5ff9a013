"""The Slack layer's state in tables of its own: `threads` becomes `slack_threads`; the messages posted
for a job (`jobs.thread_ts`, `jobs.parent_ts`, and `post_error` / `thread_existing` kept in `jobs.meta`)
move to `slack_posts`. Core's `jobs` keeps no Slack timestamps.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "slack_threads",
        sa.Column("channel_id", sa.Text, primary_key=True),
        sa.Column("e164", sa.Text, primary_key=True),
        sa.Column("thread_ts", sa.Text, nullable=False),
    )
    op.execute(
        "INSERT INTO slack_threads (channel_id, e164, thread_ts) SELECT channel_id, e164, thread_ts FROM threads"
    )
    op.drop_table("threads")
    posts = op.create_table(
        "slack_posts",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("parent_ts", sa.Text),
        sa.Column("thread_ts", sa.Text),
        sa.Column("post_error", sa.Text),
        sa.Column("thread_existing", sa.Integer, nullable=False, server_default="0"),
    )
    rows = []
    for job_id, parent_ts, thread_ts, meta in bind.execute(
        sa.text("SELECT id, parent_ts, thread_ts, meta FROM jobs")
    ).fetchall():
        try:
            data = json.loads(meta or "{}")
        except ValueError:
            data = {}
        error, existing = data.pop("post_error", None), data.pop("thread_existing", False)
        if parent_ts or thread_ts or error or existing:
            rows.append(
                {"job_id": job_id, "parent_ts": parent_ts, "thread_ts": thread_ts, "post_error": error,
                 "thread_existing": int(bool(existing))}
            )  # fmt: skip
            bind.execute(
                sa.text("UPDATE jobs SET meta = :m WHERE id = :id"), {"m": json.dumps(data), "id": job_id}
            )
    if rows:
        op.bulk_insert(posts, rows)
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35, PostgreSQL): no table rebuild, which the
    # recipients' foreign key to jobs would refuse on SQLite.
    for column in ("thread_ts", "parent_ts"):
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
