"""small raw messages in the database (issue 11): table rawmail

A raw message up to services/ingest.py INLINE_RAW_BYTES (64 KiB) is written in the group-
committed transaction that records its receipt instead of a blob file with two fsyncs of its
own (one file create, fsync, rename and directory fsync per mail). Bigger ones stay blobs.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 14:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rawmail",
        sa.Column("sha256", sa.String(length=64), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rawmail")
