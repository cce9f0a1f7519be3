"""receipt_step: which ingest step decided each delivery; agents found by an index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("receipt") as batch:
        batch.add_column(sa.Column("decided_by", sa.String(16), nullable=False, server_default=""))
    # Every new ticket looks up the agents to notify: without it, a scan of all customers.
    op.create_index("ix_account_role", "account", ["role"])


def downgrade() -> None:
    op.drop_index("ix_account_role", table_name="account")
    with op.batch_alter_table("receipt") as batch:
        batch.drop_column("decided_by")
