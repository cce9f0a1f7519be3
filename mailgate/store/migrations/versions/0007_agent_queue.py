"""agent queue: the agents' list of every ticket, read by keyset pages

The agents' queue (/tickets for an agent) shows every ticket, latest exchange first, filtered
by status, by assignee ("mine", "unassigned") or by category. Each gets an index that starts
where the filter is and then runs in the queue's order, so a page is read straight off it
from where it starts, whatever the number of tickets. The other filters' columns ride at the
end of each, so a combination (mine and open) is checked, and counted, in the index alone.
The search finds a customer ID by its own index; its words are a bounded LIKE scan of the
latest messages (see docs/portal.md), not indexed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 12:00:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_ticket_exchange": ["last_exchange_at", "id"],
    "ix_ticket_status_exchange": ["status", "last_exchange_at", "id", "assignee_id", "category"],
    "ix_ticket_assignee_exchange": ["assignee_id", "last_exchange_at", "id", "status", "category"],
    "ix_ticket_category_exchange": ["category", "last_exchange_at", "id", "status", "assignee_id"],
    "ix_ticket_customer_ref": ["customer_ref"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "ticket", columns)


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="ticket")
