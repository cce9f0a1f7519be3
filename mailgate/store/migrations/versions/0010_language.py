"""languages and time zones (issue 15)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Accounts made before this got their language from a header or the default, which cannot
    # be told apart now: "default", so the next evidence (a header, their text) decides.
    with op.batch_alter_table("account") as batch:
        batch.add_column(
            sa.Column(
                "locale_source", sa.String(length=16), nullable=False, server_default="default"
            )
        )
        batch.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("timezone")
        batch.drop_column("locale_source")
