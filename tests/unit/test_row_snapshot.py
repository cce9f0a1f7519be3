"""store.db.insert_values' snapshot: the object model_construct made from the same row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from mailgate.store.db import _RowInsert
from mailgate.store.models import Account, Attachment, Message, Outbox, Ticket

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
ROWS: dict[type[SQLModel], dict[str, Any]] = {
    Account: {"email": "a@x.example", "name": "A", "created_at": NOW},
    Ticket: {"subject": "s", "requester_id": 1, "created_at": NOW, "updated_at": NOW,
             "last_exchange_at": NOW},
    Message: {"ticket_id": 1, "message_id": "m@x", "created_at": NOW, "body_text": "b"},
    Outbox: {"kind": "confirmation", "to_addr": "a@x.example", "message_id": "mg.1@h", "raw": b"",
             "next_attempt_at": NOW, "created_at": NOW, "params": "{}"},
    Attachment: {"message_pk": 1, "sha256": "a" * 64, "filename": "f.txt"},
}  # fmt: skip


@pytest.mark.parametrize("model", list(ROWS), ids=lambda m: m.__name__)
def test_the_snapshot_is_what_model_construct_makes(model: type[SQLModel]) -> None:
    spec = _RowInsert(model, create_engine("sqlite://").dialect)
    assert spec.fields is not None  # the fast path is taken for every model the writer adds
    row = {**spec.defaults, **ROWS[model], "id": 7}
    got, expected = spec.snapshot(model, dict(row)), model.model_construct(**row)
    assert type(got) is model
    assert list(got.__dict__.items()) == list(expected.__dict__.items())
    assert got.__pydantic_fields_set__ == expected.__pydantic_fields_set__
    assert got.__pydantic_extra__ is None and got.__pydantic_private__ is None
    assert got == expected and got.id == 7
    with pytest.raises(AttributeError):
        got.id = 8  # not in a session: a change would be lost
