"""store.compiled.Binder: the parameters a compiled statement is run with on the DBAPI cursor
are the ones SQLAlchemy's own execution would bind (its construct_params and bind
processors, in the compiled order for a positional paramstyle, by name otherwise), their
strings cleaned; for SQLite's qmark and psycopg's named style."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Dialect, bindparam, create_engine, insert, select, update
from sqlalchemy.dialects import postgresql

from mailgate.store.clean import REPLACEMENT, clean_params
from mailgate.store.compiled import Binder, bind_converters
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


def _zone(**offset: float) -> timezone:
    return timezone(timedelta(**offset))


DATETIMES = [
    NOW,  # aware, UTC
    NOW.replace(tzinfo=None),  # naive
    NOW.replace(microsecond=0),  # isoformat alone would leave the microseconds out
    NOW.replace(microsecond=0, tzinfo=None),
    datetime(5, 1, 2, 3, 4, 5, 6),  # a year of one digit: still four
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_zone(hours=-11, minutes=-30)),
    datetime(2026, 3, 29, 2, 30, tzinfo=_zone(hours=5, minutes=45, seconds=30)),  # odd offset
    datetime(2026, 10, 25, 2, 30, fold=1),
]


@pytest.mark.parametrize("value", DATETIMES, ids=str)
def test_sqlite_datetimes_bind_as_sqlalchemy_writes_them(value: datetime) -> None:
    d = DIALECTS["sqlite"]
    compiled = insert(TICKET).compile(dialect=d, column_keys=["created_at", "solved_at"])
    convert = bind_converters(compiled, d)
    assert convert["created_at"] is not compiled._bind_processors["created_at"]  # the fast one
    assert convert["created_at"](value) == compiled._bind_processors["created_at"](value)
    assert len(convert["created_at"](value)) == 26


class _Stamp(datetime):
    """A subclass: not the fast path's, given to SQLAlchemy's converter."""


@pytest.mark.parametrize("value", [date(2026, 3, 4), _Stamp(2026, 3, 4, 5, 6, 7), None])
def test_other_values_go_to_sqlalchemys_datetime_converter(value: Any) -> None:
    d = DIALECTS["sqlite"]
    compiled = insert(TICKET).compile(dialect=d, column_keys=["created_at"])
    sa = compiled._bind_processors["created_at"]
    assert bind_converters(compiled, d)["created_at"](value) == sa(value)
    with pytest.raises(TypeError):
        bind_converters(compiled, d)["created_at"]("2026-03-04")  # refused as SQLAlchemy does
    with pytest.raises(TypeError):
        sa("2026-03-04")


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_booleans_bind_as_sqlalchemy_binds_them(dialect: str) -> None:
    d = DIALECTS[dialect]
    compiled = insert(OUTBOX).compile(dialect=d, column_keys=["automatic"])
    sa, fast = compiled._bind_processors.get("automatic"), bind_converters(compiled, d)
    if sa is None:  # a driver that takes Python's bools as they are
        assert "automatic" not in fast
        return
    for value in (True, False, None, 1, 0):
        assert fast["automatic"](value) == sa(value)
        assert type(fast["automatic"](value)) is type(sa(value))
    for refused in (2, "yes"):
        with pytest.raises((TypeError, ValueError)) as expected:
            sa(refused)
        with pytest.raises(expected.type):
            fast["automatic"](refused)


def test_a_statement_binds_one_value_or_none() -> None:
    one = Binder(("a",), {})
    assert one({"a": "x", "b": 1}) == ("x",)
    assert Binder((), {})({"a": 1}) == ()
    with pytest.raises(KeyError):
        one({})


def test_the_datetime_kept_gives_its_own_text_only() -> None:
    """The last datetime's text is kept for the next bind of that same object, in any column;
    another value, equal or not, is converted again."""
    d = DIALECTS["sqlite"]
    compiled = insert(TICKET).compile(dialect=d, column_keys=["created_at", "updated_at"])
    convert, sa = bind_converters(compiled, d), compiled._bind_processors["created_at"]
    values = [*DATETIMES, NOW, NOW, DATETIMES[4], NOW.replace(tzinfo=None), NOW]
    for value in values:
        for name in ("created_at", "updated_at"):
            assert convert[name](value) == sa(value)
    assert convert["created_at"](None) is None
