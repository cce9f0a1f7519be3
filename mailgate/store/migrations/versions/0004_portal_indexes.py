"""portal indexes: "My activities" and the ticket page read by keyset pages

A customer's visible tickets, newest exchange first (with or without a status filter), come
straight off an index from where the page starts; the partial indexes hold only tickets the
customer has not deleted, so counting them reads the index alone. A ticket's messages in
conversation order likewise.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VISIBLE = "customer_deleted_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_ticket_requester_exchange",
        "ticket",
        ["requester_id", "last_exchange_at", "id"],
        sqlite_where=sa.text(VISIBLE),
        postgresql_where=sa.text(VISIBLE),
    )
    op.create_index(
        "ix_ticket_requester_status_exchange",
        "ticket",
        ["requester_id", "status", "last_exchange_at", "id"],
        sqlite_where=sa.text(VISIBLE),
        postgresql_where=sa.text(VISIBLE),
    )
    op.create_index("ix_message_ticket_created", "message", ["ticket_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_message_ticket_created", table_name="message")
    op.drop_index("ix_ticket_requester_status_exchange", table_name="ticket")
    op.drop_index("ix_ticket_requester_exchange", table_name="ticket")
