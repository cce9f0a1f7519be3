"""SQLite's BEGIN IMMEDIATE (writer) and BEGIN (reader), sent on the DBAPI cursor: the write
lock taken when the transaction begins, a busy database refused as SQLAlchemy's
OperationalError (a TempFailure from Database.write), and the connection fine afterwards."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from mailgate.errors import TempFailure
from mailgate.store.db import Database, insert_values
from mailgate.store.models import Account


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    file = tmp_path / "begin.db"
    db = Database(f"sqlite:///{file}")
    db.upgrade()
    db.dispose()
    yield file


def test_a_write_holds_the_lock_from_its_begin(path: Path) -> None:
    db = Database(f"sqlite:///{path}", busy_timeout_ms=50)
    try:
        with db.write() as session:
            session.connection()  # begun, nothing written yet
            with closing(sqlite3.connect(path, timeout=0.05, isolation_level=None)) as other:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                other.execute("BEGIN")  # a reader still reads
                other.execute("SELECT count(*) FROM account").fetchall()
                other.execute("COMMIT")
    finally:
        db.dispose()


def test_a_busy_database_is_refused_then_the_writer_goes_on(path: Path) -> None:
    db = Database(f"sqlite:///{path}", busy_timeout_ms=50)
    now = datetime.now(UTC)
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            with pytest.raises(TempFailure) as caught, db.write() as session:
                insert_values(session, Account, email="a@client.example", created_at=now)
            assert isinstance(caught.value.__cause__, OperationalError)
            with db.read() as session:  # BEGIN (deferred): reading is not blocked
                assert session.connection().exec_driver_sql("SELECT 1").scalar() == 1
            other.execute("ROLLBACK")
        for _ in range(5):  # every pooled connection works again
            with db.write() as session:
                insert_values(session, Account, email=f"{_}@client.example", created_at=now)
        with db.read() as session:
            count = session.connection().exec_driver_sql("SELECT count(*) FROM account").scalar()
        assert count == 5
    finally:
        db.dispose()
