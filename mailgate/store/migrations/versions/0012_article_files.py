"""help-centre article images and files (issue 13): files attached to an article

Each file is a blob (by sha256, like mail attachments) with a name that is unique within its
article; the name is what the article's Markdown refers to (`![Screenshot](screenshot.png)`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "articlefile",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "article_id",
            sa.Integer(),
            sa.ForeignKey("article.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("article_id", "name", name="uq_articlefile_name"),
    )


def downgrade() -> None:
    op.drop_table("articlefile")
