"""store.db.insert_values: the writer's driver-level INSERT writes what the ORM reads back, on
SQLite and PostgreSQL (datetimes, booleans, bytes, NULLs, defaults), cleans strings as every
statement does, and reports database errors as SQLAlchemy's exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic_core import PydanticUndefined
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from mailgate.clock import as_utc
from mailgate.errors import TempFailure
from mailgate.store.db import Database, insert_values
from mailgate.store.models import Account, Message, Outbox, Ticket

NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


@pytest.fixture
def db(service_database_url: str) -> Iterator[Database]:
    database = Database(service_database_url)
    yield database
    database.dispose()


def test_a_row_reads_back_as_the_orm_wrote_it(db: Database) -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    with db.write() as session:
        row = insert_values(
            session,
            Outbox,
            kind="confirmation",
            to_addr="jean@client.example",
            message_id="mg.1@mg.test",
            raw=b"\x00\xffbytes",
            params='{"v": 1}',
            automatic=False,
            next_attempt_at=when,
            created_at=when,
            first_contact=True,
        )
        assert row.id is not None and row.status == "queued"  # a default, on the snapshot too
    with db.read() as session:
        found = session.exec(select(Outbox).where(Outbox.id == row.id)).one()
    assert as_utc(found.next_attempt_at) == when and as_utc(found.created_at) == when
    assert bytes(found.raw) == b"\x00\xffbytes" and found.params == '{"v": 1}'
    assert found.automatic is False and found.first_contact is True
    assert found.status == "queued" and found.attempts == 0 and found.claimed_until is None
    assert found.sent_at is None and found.ticket_id is None and found.reason == ""


def test_strings_are_cleaned_and_ids_follow_each_other(db: Database) -> None:
    with db.write() as session:
        first = insert_values(
            session, Account, email="a@client.example", name="Jo\x00e", created_at=datetime.now(UTC)
        )
        second = insert_values(
            session, Account, email="b@client.example", created_at=datetime.now(UTC)
        )
    assert first.id is not None and second.id is not None and second.id > first.id
    with db.read() as session:
        stored = session.get(Account, first.id)
    assert stored is not None and stored.name == "Jo\ufffde" and stored.locale == "fr"


def test_a_snapshot_cannot_be_changed_and_a_typo_is_refused(db: Database) -> None:
    with db.write() as session:
        account = insert_values(
            session, Account, email="c@client.example", created_at=datetime.now(UTC)
        )
        with pytest.raises(AttributeError):
            account.name = "lost"  # not in the session: would never be saved
        with pytest.raises(TypeError, match="no column emial"):
            insert_values(session, Account, emial="x@y", created_at=datetime.now(UTC))


def test_a_unique_conflict_is_sqlalchemys_integrity_error(db: Database) -> None:
    with db.write() as session:
        insert_values(session, Account, email="d@client.example", created_at=datetime.now(UTC))
    with pytest.raises(IntegrityError), db.write() as session:
        insert_values(session, Account, email="d@client.example", created_at=datetime.now(UTC))
    with db.read() as session:
        rows = session.exec(select(Account).where(Account.email == "d@client.example")).all()
    assert len(rows) == 1


ROWS: dict[type[SQLModel], dict[str, Any]] = {
    Account: {"email": "e@client.example", "name": "E", "created_at": NOW},
    Ticket: {"subject": "s", "status": "new", "created_at": NOW, "updated_at": NOW,
             "last_exchange_at": NOW, "category": None},
    Message: {"message_id": "m@x", "created_at": NOW, "body_text": "b", "internal": True},
    Outbox: {"kind": "confirmation", "to_addr": "a@x.example", "message_id": "mg.9@h", "raw": b"",
             "next_attempt_at": NOW, "created_at": NOW, "params": "{}"},
}  # fmt: skip


@pytest.mark.parametrize("model", list(ROWS), ids=lambda m: m.__name__)
def test_the_snapshot_is_what_model_construct_makes_of_the_row(
    db: Database, model: type[SQLModel]
) -> None:
    """insert_values' snapshot (the INSERT's row itself, laid out in the fields' order) is the
    object model_construct makes of the model's defaults, the values and the id."""
    with db.write() as session:
        account = insert_values(session, Account, email="f@client.example", created_at=NOW)
        ticket = insert_values(
            session, Ticket, subject="t", requester_id=account.id, created_at=NOW,
            updated_at=NOW, last_exchange_at=NOW,
        )  # fmt: skip
        links = {Ticket: {"requester_id": account.id}, Message: {"ticket_id": ticket.id}}
        values = {**ROWS[model], **links.get(model, {})}
        got = insert_values(session, model, **values)
    defaults = {
        name: f.default
        for name, f in model.model_fields.items()
        if f.default is not PydanticUndefined and name != "id"
    }
    expected = model.model_construct(**{**defaults, **values, "id": got.id})
    assert got.id is not None
    assert list(got.__dict__.items()) == list(expected.__dict__.items())
    assert got.__pydantic_fields_set__ == expected.__pydantic_fields_set__
    assert got.__pydantic_extra__ is None and got.__pydantic_private__ is None


def test_a_missing_column_is_refused_as_before(db: Database) -> None:
    """A column without a default left out: the INSERT is refused, nothing is written."""
    with pytest.raises((KeyError, TempFailure)), db.write() as session:  # PG: a DBAPIError
        insert_values(session, Account, name="no address", created_at=NOW)
    with db.read() as session:
        assert not session.exec(select(Account).where(Account.name == "no address")).all()


def test_the_id_given_back_is_the_rows_own(db: Database) -> None:
    """On SQLite the id is the INSERT's rowid (no RETURNING): the row's own, after inserts
    into other tables, a savepoint rolled back and a refused INSERT in between."""
    with db.write() as session:
        first = insert_values(session, Account, email="g@client.example", created_at=NOW)
        ticket = insert_values(
            session, Ticket, subject="t", requester_id=first.id, created_at=NOW,
            updated_at=NOW, last_exchange_at=NOW,
        )  # fmt: skip
        with pytest.raises(RuntimeError), session.begin_nested():
            insert_values(session, Account, email="undone@client.example", created_at=NOW)
            raise RuntimeError("undone")
        with pytest.raises(IntegrityError), session.begin_nested():
            insert_values(session, Account, email="g@client.example", created_at=NOW)
        second = insert_values(session, Account, email="h@client.example", created_at=NOW)
        message = insert_values(
            session, Message, ticket_id=ticket.id, message_id="m@x", created_at=NOW
        )
    with db.read() as session:
        ids = dict(session.exec(select(Account.email, Account.id)).all())  # type: ignore[call-overload]
        assert ids == {"g@client.example": first.id, "h@client.example": second.id}
        assert session.exec(select(Ticket.id)).all() == [ticket.id]
        assert session.exec(select(Message.id)).all() == [message.id]
