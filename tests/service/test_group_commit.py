"""The group commit's SAVEPOINT per job, on SQLite and PostgreSQL: a job that fails is rolled
back alone, the ORM state it left included (an object it added is never flushed by a later
job or by the commit; one it changed is read back as the database has it), and the other jobs
of the batch commit theirs. The savepoints are sent as text on the DBAPI cursor
(store.db.fast_savepoints), not as statements SQLAlchemy compiles and executes each time; an
error in one is still SQLAlchemy's exception."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from mailgate.services.commit import GroupCommitter, Job
from mailgate.store.db import Database, insert_values
from mailgate.store.models import Account

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def db(service_database_url: str) -> Iterator[Database]:
    database = Database(service_database_url)
    yield database
    database.dispose()


def _emails(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.exec(select(Account.email)).scalars())  # type: ignore[call-overload]


def _batch(db: Database, jobs: list[Job]) -> list[Future[Any]]:
    """The jobs as one batch of the writer thread: one transaction, a SAVEPOINT each."""
    futures: list[Future[Any]] = [Future() for _ in jobs]
    GroupCommitter(db)._commit(list(zip(jobs, futures, strict=True)))
    return futures


def test_a_failing_job_is_rolled_back_alone_orm_state_included(db: Database) -> None:
    def first(session: Session) -> int:
        insert_values(session, Account, email="core@x.example", created_at=WHEN)
        account = Account(email="orm@x.example", name="Before", created_at=WHEN)
        session.add(account)
        session.flush()
        return account.id or 0

    def failing(session: Session) -> None:
        insert_values(session, Account, email="gone-core@x.example", created_at=WHEN)
        session.add(Account(email="gone-flushed@x.example", created_at=WHEN))
        session.flush()
        loaded = session.exec(select(Account).where(Account.email == "orm@x.example")).one()
        loaded[0].name = "Changed by a job that fails"
        session.flush()
        session.add(Account(email="gone-pending@x.example", created_at=WHEN))  # never flushed
        raise RuntimeError("this job fails")

    def duplicate(session: Session) -> None:  # fails in the ORM's flush itself
        session.add(Account(email="core@x.example", created_at=WHEN))
        session.flush()

    def last(session: Session) -> str:
        account = session.exec(select(Account).where(Account.email == "orm@x.example")).one()[0]
        insert_values(session, Account, email="last@x.example", created_at=WHEN)
        return account.name

    futures = _batch(db, [first, failing, duplicate, last])

    assert isinstance(futures[0].result(), int)
    with pytest.raises(RuntimeError, match="this job fails"):
        futures[1].result()
    with pytest.raises(IntegrityError):
        futures[2].result()
    assert futures[3].result() == "Before"  # the failed job's change did not outlive it
    assert _emails(db) == ["core@x.example", "last@x.example", "orm@x.example"]
    with db.read() as session:
        name = session.exec(select(Account.name).where(Account.email == "orm@x.example")).one()
    assert name[0] == "Before"


def test_savepoints_are_sent_as_text_on_the_cursor(db: Database) -> None:
    """SQLAlchemy's own execution of a statement (what `before_cursor_execute` sees) no longer
    runs for SAVEPOINT, RELEASE and ROLLBACK TO; they still do their work."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.write_engine, "before_cursor_execute", record)
    try:
        with db.write() as session:
            with session.begin_nested():
                insert_values(session, Account, email="kept@x.example", created_at=WHEN)
            with pytest.raises(RuntimeError), session.begin_nested():
                insert_values(session, Account, email="undone@x.example", created_at=WHEN)
                raise RuntimeError("undo")
            session.connection().execute(select(Account.id))
    finally:
        event.remove(db.write_engine, "before_cursor_execute", record)
    assert seen and not [s for s in seen if "SAVEPOINT" in s.upper()]
    assert _emails(db) == ["kept@x.example"]


def test_a_savepoint_error_is_sqlalchemys(db: Database) -> None:
    """As SQLAlchemy raises it (db.write() would make it a TempFailure): a DBAPIError carrying
    the statement, not the driver's own exception."""
    with Session(db.write_engine) as session, session.begin():
        connection = session.connection()
        with pytest.raises(DBAPIError, match="RELEASE SAVEPOINT no_such_savepoint") as caught:
            connection.dialect.do_release_savepoint(connection, "no_such_savepoint")
    assert caught.value.statement == "RELEASE SAVEPOINT no_such_savepoint"
