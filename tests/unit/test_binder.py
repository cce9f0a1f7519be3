"""store.compiled.Binder: the parameters a compiled statement is run with on the DBAPI cursor
are the ones SQLAlchemy's own execution would bind (its construct_params and bind
processors, in the compiled order for a positional paramstyle, by name otherwise), their
strings cleaned; for SQLite's qmark and psycopg's named style."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Dialect, bindparam, create_engine, insert, select, update
from sqlalchemy.dialects import postgresql

from mailgate.store.clean import REPLACEMENT, clean_params
from mailgate.store.compiled import Binder
from mailgate.store.models import Message, Outbox, Ticket

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
DIALECTS = {
    "sqlite": create_engine("sqlite://").dialect,
    "postgresql": postgresql.psycopg.dialect(),
}
TICKET: Any = Ticket.__table__  # type: ignore[attr-defined]
OUTBOX: Any = Outbox.__table__  # type: ignore[attr-defined]
MESSAGE: Any = Message.__table__  # type: ignore[attr-defined]


def _as_sqlalchemy_binds(compiled: Any, values: dict[str, Any]) -> Any:
    params = compiled.construct_params(values)
    convert = compiled._bind_processors
    done = {k: (convert[k](v) if k in convert else v) for k, v in params.items()}
    if compiled.positional:
        return clean_params(tuple(done[k] for k in compiled.positiontup))
    return clean_params(done)


CASES: list[tuple[str, Any, dict[str, Any]]] = [
    (
        "ticket insert",
        insert(TICKET).returning(TICKET.c.id),
        {
            "subject": "nul\x00here", "status": "new", "requester_id": 3, "category": None,
            "locale": "fr", "channel": "smtp", "created_at": NOW, "updated_at": NOW,
            "last_exchange_at": NOW, "pending_since": None, "solved_at": None,
            "closed_at": None, "auto_resolve_paused": False, "customer_deleted_at": None,
        },
    ),
    (
        "outbox insert",
        insert(OUTBOX).returning(OUTBOX.c.id),
        {
            "kind": "confirmation", "to_addr": "a@x.example", "message_id": "mg.1@h",
            "envelope_from": "", "raw": b"\x00raw", "params": "{}", "automatic": True,
            "next_attempt_at": NOW, "created_at": NOW, "reason": "r\x00", "first_contact": True,
            "status": "queued", "attempts": 0, "subject": "été", "ticket_id": None,
        },
    ),
    (
        "message update",
        update(MESSAGE)
        .where(MESSAGE.c.id == bindparam("pk"))
        .values(created_at=bindparam("when"), internal=bindparam("flag"), subject=bindparam("s")),
        {"pk": 9, "when": NOW, "flag": True, "s": "\x00"},
    ),
    (
        "select",
        select(MESSAGE.c.id).where(
            MESSAGE.c.created_at > bindparam("after"), MESSAGE.c.subject == bindparam("s")
        ),
        {"after": NOW, "s": "lone \udc80 surrogate"},
    ),
]  # fmt: skip


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(("statement", "values"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_binds_what_sqlalchemy_binds(dialect: str, statement: Any, values: dict[str, Any]) -> None:
    d: Dialect = DIALECTS[dialect]
    keys = list(values) if statement.is_insert else None
    compiled = statement.compile(dialect=d, column_keys=keys)
    order = tuple(compiled.positiontup) if compiled.positional else None
    got = Binder(order, dict(compiled._bind_processors))(dict(values))
    assert got == _as_sqlalchemy_binds(compiled, values)
    assert type(got) is (tuple if compiled.positional else dict)
    text = [v for v in (got if compiled.positional else got.values()) if isinstance(v, str)]
    assert not [t for t in text if "\x00" in t] and any(REPLACEMENT in t for t in text)
