"""Alembic environment: run against the connection mailgate hands in (see Database.upgrade)."""

from alembic import context
from sqlmodel import SQLModel

from mailgate.store import models

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
