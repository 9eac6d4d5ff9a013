"""Recipients by number and time: how many texts a number got today (the per-number daily cap,
SMS_PER_NUMBER_DAILY) is read at confirmation and when a job starts, for up to 10,000 numbers at once.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("recipients_by_number", "recipients", ["e164", "updated_at"])
