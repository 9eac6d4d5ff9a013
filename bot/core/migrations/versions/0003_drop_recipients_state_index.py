"""Drop `recipients_state` (job_id, state): every state change of every recipient maintained it, and the
primary key (job_id, idx) already serves the per-job queries. Measured on PostgreSQL: marking 1,000
recipients in flight 8.5 → 6 ms, confirming 10,000 recipients 73 → 63 ms.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "recipients_state" in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("recipients")}:
        op.drop_index("recipients_state", table_name="recipients")
