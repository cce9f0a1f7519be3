"""several instances: leases for jobs and mailboxes (issue 17)

A `lease` row names one thing only one instance may do at a time (a scheduled job, an IMAP
mailbox): who holds it and until when. `outbox.claimed_by` records which instance leased a
row before it sent it, so a row taken over after its lease ran out is known to be in doubt.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("name", sa.String(length=200), primary_key=True),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        # Raised each time the lease changes hands: a fencing token.
        sa.Column("generation", sa.Integer(), nullable=False, server_default="1"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("claimed_by", sa.String(length=200), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_by")
    op.drop_table("lease")
