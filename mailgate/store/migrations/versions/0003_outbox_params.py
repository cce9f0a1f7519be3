"""outbox params: mail queued as kind + parameters, rendered and assembled by the sender

Rows queued before this revision keep their bytes in `raw` and get `params = ''`; the sender
sends those bytes as they are. The index serves the first-contact window's one query.
Downgrading drops `params`: rows still queued with params and no bytes can then never be sent
(send the outbox empty first).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("params", sa.Text(), nullable=False, server_default=""))
        # Covers first_contact_slot's query: it walks the window without reading rows.
        batch.create_index(
            "ix_outbox_first_contact_due",
            ["first_contact", "next_attempt_at", "status", "attempts"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_first_contact_due")
        batch.drop_column("params")
