"""help centre: articles, their full-text index, the vocabulary, the counters (issue 13)

The index holds each article's words already stemmed by mailgate (Snowball, in the article's
language, accents removed), so SQLite and PostgreSQL find the same articles:
- SQLite: an FTS5 virtual table `article_fts(title, body)`, rowid = article.id, tokenizer
  unicode61 with remove_diacritics 2;
- PostgreSQL: a table `article_fts(article_id, doc tsvector)` with a GIN index, the title's
  words weighted A and the body's D (the 'simple' configuration: no second stemming).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "article",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slug", sa.String(length=200), nullable=False, unique=True),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("section", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("body_markdown", sa.Text(), nullable=False),
        sa.Column("views", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("author_id", sa.Integer(), sa.ForeignKey("account.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_article_listing", "article", ["status", "locale", "section", "title"])
    op.create_index("ix_article_views", "article", ["status", "locale", "views"])
    op.create_table(
        "articleword",
        sa.Column("word", sa.String(length=100), primary_key=True),
        sa.Column("locale", sa.String(length=8), primary_key=True),
        sa.Column("stem", sa.String(length=100), nullable=False),
        sa.Column("articles", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_articleword_stem", "articleword", ["locale", "stem"])
    op.create_table(
        "helpcount",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("detail", sa.String(length=200), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE article_fts USING fts5("
            "title, body, tokenize = 'unicode61 remove_diacritics 2')"
        )
    else:
        op.execute(
            "CREATE TABLE article_fts ("
            "article_id INTEGER PRIMARY KEY REFERENCES article(id) ON DELETE CASCADE, "
            "doc tsvector NOT NULL)"
        )
        op.execute("CREATE INDEX ix_article_fts_doc ON article_fts USING gin (doc)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS article_fts")
    op.drop_table("helpcount")
    op.drop_index("ix_articleword_stem", table_name="articleword")
    op.drop_table("articleword")
    op.drop_index("ix_article_views", table_name="article")
    op.drop_index("ix_article_listing", table_name="article")
    op.drop_table("article")
