"""store.compiled.Statement: the writer's statements compiled once and run on the session's DBAPI
connection read and write what SQLAlchemy's execution does, on SQLite and PostgreSQL
(datetimes, NULLs, values the statement carries), clean bound strings as every statement does,
and report database errors as SQLAlchemy's exceptions. Accounts.find (an id, then the session's
row) answers as the ORM query it replaced."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, PendingRollbackError
from sqlmodel import Session

from mailgate.clock import FixedClock, as_utc
from mailgate.core.enums import Outcome, Role, Step
from mailgate.core.tokens import LinkTokens
from mailgate.services.accounts import Accounts
from mailgate.services.receipts import claim_receipt, record_decision
from mailgate.store.compiled import Statement, session_connection
from mailgate.store.db import Database, insert_values
from mailgate.store.models import Account, Receipt

ACCOUNT: Any = Account.__table__  # type: ignore[attr-defined]
WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


@pytest.fixture
def db(service_database_url: str) -> Iterator[Database]:
    database = Database(service_database_url)
    database.upgrade()
    yield database
    database.dispose()


def _account(session: Session, email: str, role: str = Role.CUSTOMER, **more: Any) -> None:
    session.connection().execute(
        insert(ACCOUNT).values(
            email=email, name="", role=role, security_stamp="s", locale="fr",
            locale_source="default", timezone="", created_at=WHEN, **more,
        )
    )  # fmt: skip


def test_rows_read_as_sqlalchemy_reads_them(db: Database) -> None:
    query = select(*ACCOUNT.columns).where(ACCOUNT.c.role == Role.AGENT).order_by(ACCOUNT.c.id)
    with db.write() as session:
        _account(session, "a@x.example", Role.AGENT, activated_at=WHEN)
        _account(session, "b@x.example")
        _account(session, "c@x.example", Role.AGENT)
        expected = [dict(r._mapping) for r in session.connection().execute(query)]
        got = Statement(query).mappings(session)
    assert got == expected and [r["email"] for r in got] == ["a@x.example", "c@x.example"]
    assert as_utc(got[0]["activated_at"]) == WHEN and got[1]["activated_at"] is None


def test_writes_clean_strings_and_raise_sqlalchemys_errors(db: Database) -> None:
    rename = Statement(
        update(ACCOUNT).where(ACCOUNT.c.email == bindparam("old")).values(name=bindparam("new"))
    )
    add = Statement(insert(ACCOUNT).returning(ACCOUNT.c.id), column_keys=(
        "email", "name", "role", "security_stamp", "locale", "locale_source", "timezone",
        "created_at",
    ))  # fmt: skip
    row = {"name": "", "role": Role.CUSTOMER, "security_stamp": "s", "locale": "fr",
           "locale_source": "default", "timezone": "", "created_at": WHEN}  # fmt: skip
    with db.write() as session:
        first = add.scalar(session, {"email": "d@x.example", **row})
        assert rename.rows(session, {"old": "d@x.example", "new": "Jo\x00e\udcff"}) == []
        stored = session.get(Account, first)
        assert stored is not None and stored.name == "Jo\ufffde\ufffd"
        assert as_utc(stored.created_at) == WHEN
        with pytest.raises(IntegrityError), session.begin_nested():
            add.scalar(session, {"email": "d@x.example", **row})


def test_a_receipt_is_claimed_once_and_decided(db: Database) -> None:
    claim = {"message_id": "m@x", "recipient": "support@example.com", "envelope_from": "",
             "channel": "smtp", "sha": "a" * 64, "now": WHEN}  # fmt: skip
    with db.write() as session:
        rid = claim_receipt(session, key="r:1", **claim)
        assert rid is not None
        assert claim_receipt(session, key="r:1", **claim) is None
        record_decision(session, rid, Outcome.TICKETED, None, Step.DISPATCH)
    with db.read() as session:
        receipt = session.get(Receipt, rid)
    assert receipt is not None and receipt.outcome == Outcome.TICKETED.value
    assert receipt.decided_by == Step.DISPATCH.value and as_utc(receipt.received_at) == WHEN


def test_find_answers_as_the_orm_query(db: Database) -> None:
    clock = FixedClock(WHEN)
    accounts = Accounts(None, LinkTokens(b"k" * 32, clock.now), clock, "fr")  # type: ignore[arg-type]
    with db.write() as session:
        assert accounts.find(session, "nobody@x.example") is None
        _account(session, "e@x.example")
        found = accounts.find(session, " E@X.example ")
        assert found is not None and found.email == "e@x.example"
        assert accounts.find(session, "e@x.example") is found  # the session's own row
        found.name = "Eve"  # the caller may change it: it is the session's
        # An account added to the session and not yet flushed is found, as by an ORM query.
        session.add(Account(email="f@x.example", security_stamp="s", created_at=WHEN))
        pending = accounts.find(session, "f@x.example")
        assert pending is not None and pending.id is not None
    with db.read() as session:
        assert accounts.find(session, "e@x.example").name == "Eve"  # type: ignore[union-attr]


def test_one_cursor_per_connection_and_a_new_one_after_an_error(db: Database) -> None:
    """The statements run on one cursor kept per DBAPI connection (store.compiled.dbapi_cursor):
    an INSERT ... RETURNING leaves nothing in progress on it (the commit goes through), and
    after an error the next statement gets a new cursor on the same transaction."""
    made: list[Any] = []
    ids = Statement(select(ACCOUNT.c.id).order_by(ACCOUNT.c.id))
    with db.write() as session:
        fairy = session.connection().connection
        real = fairy.dbapi_connection

        class Counting:  # the DBAPI connection, counting the cursors it makes
            def cursor(self) -> Any:
                made.append(real.cursor())
                return made[-1]

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        fairy.info.pop("mailgate.cursor", None)
        fairy.dbapi_connection = Counting()
        try:
            first = insert_values(session, Account, email="g@x.example", created_at=WHEN)
            second = insert_values(session, Account, email="h@x.example", created_at=WHEN)
            assert ids.rows(session) == [(first.id,), (second.id,)] and len(made) == 1
            with pytest.raises(IntegrityError), session.begin_nested():
                insert_values(session, Account, email="g@x.example", created_at=WHEN)
            third = insert_values(session, Account, email="i@x.example", created_at=WHEN)
            assert len(made) == 2 and third.id is not None
        finally:
            fairy.dbapi_connection = real
            fairy.info.pop("mailgate.cursor", None)
    with db.read() as session:
        assert [r[0] for r in ids.rows(session)] == [first.id, second.id, third.id]


def test_session_connection_answers_as_session_connection(db: Database) -> None:
    """store.compiled.session_connection: the connection session.connection() returns, a
    savepoint begun on first use in it, and the same refusal once a failed flush has
    deactivated the savepoint."""
    with Session(db.write_engine) as session, session.begin():
        root = session_connection(session)
        assert root is session.connection()
        with session.begin_nested():
            assert not root.in_nested_transaction()
            assert session_connection(session) is root and root.in_nested_transaction()
        savepoint = session.begin_nested()
        _account(session, "j@x.example")
        session.add(Account(email="j@x.example", security_stamp="s", created_at=WHEN))
        with pytest.raises(IntegrityError):
            session.flush()
        with pytest.raises(PendingRollbackError) as ours:
            session_connection(session)
        with pytest.raises(PendingRollbackError) as theirs:
            session.connection()
        assert str(ours.value) == str(theirs.value)
        savepoint.rollback()
        assert session_connection(session) is root
