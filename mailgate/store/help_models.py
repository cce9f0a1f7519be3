"""The help centre's tables (issue 13, migration 0008): articles, the vocabulary of indexed
words (typo tolerance), and the help centre's counters.

The full-text index itself is not a model: an FTS5 virtual table on SQLite, a tsvector table
with a GIN index on PostgreSQL (store/article_index.py), both created by the migration.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from mailgate.store import models  # noqa: F401  (the account table Article.author_id names)


def _ts(nullable: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable)


class Article(SQLModel, table=True):
    __table_args__ = (
        # The home page's sections and "most read", per language, published ones only.
        Index("ix_article_listing", "status", "locale", "section", "title"),
        Index("ix_article_views", "status", "locale", "views"),
    )
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=200)
    title: str = Field(max_length=300)
    section: str = Field(default="", max_length=200)
    locale: str = Field(default="fr", max_length=8)  # fr | en
    visibility: str = Field(default="public", max_length=16)  # public | customers
    status: str = Field(default="draft", max_length=16)  # draft | published
    body_markdown: str = Field(default="", sa_column=Column(Text, nullable=False))
    views: int = Field(default=0)  # "most read"
    author_id: int | None = Field(default=None, foreign_key="account.id")
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())


class ArticleFile(SQLModel, table=True):
    """An image or file attached to an article (migration 0012): a blob, by sha256, under a
    name unique within the article, which the article's Markdown refers to."""

    __table_args__ = (UniqueConstraint("article_id", "name", name="uq_articlefile_name"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(
        sa_column=Column(Integer, ForeignKey("article.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=120)
    content_type: str = Field(max_length=100)
    size: int
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts())


class ArticleWord(SQLModel, table=True):
    """Every word (lowercase, without accents, not stemmed) of the published and draft
    articles, with its stem and in how many articles it appears: a query word found nowhere
    is corrected to a word one edit away (see services/helpcentre_search.py)."""

    __table_args__ = (Index("ix_articleword_stem", "locale", "stem"),)

    word: str = Field(primary_key=True, max_length=100)
    locale: str = Field(primary_key=True, max_length=8)
    stem: str = Field(max_length=100)
    articles: int = Field(default=0)


class HelpCount(SQLModel, table=True):
    """Counters kept in the database (they survive restarts and add up across instances):
    `name` is search, search_empty, suggestion_shown, suggestion_clicked, solved_by_article,
    solved_by_customer; for search_empty, `detail` holds the words searched (what to write)."""

    name: str = Field(primary_key=True, max_length=32)
    detail: str = Field(default="", primary_key=True, max_length=200)
    count: int = Field(default=0)
    last_at: datetime = Field(sa_column=_ts())
