"""security: sender verdicts on messages, reasons on outbox rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("sender_auth", sa.String(16), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("unverified_sender", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("first_contact", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("first_contact")
        batch.drop_column("reason")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("unverified_sender")
        batch.drop_column("sender_auth")
